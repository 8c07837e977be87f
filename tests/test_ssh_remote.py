"""A team's DVC remote over SSH: a real OpenSSH server on 127.0.0.1, a key made here, dvc-ssh.

The module starts Debian's ``sshd`` (``make sshd`` installs it; the tests skip and say so when
it is missing) on a free port, with its own host key, config and authorized key in a tmp
folder, and puts a TCP relay between DVC and sshd, which can drop every connection after a
given number of bytes: a link that dies mid-transfer.

Repo A reproduces the word model (shrunk) and pushes; the first push is cut mid-transfer and
fails, the next completes, and every object on the remote is checked against its md5 (DVC names
objects by their hash). A retraining run then promotes the model and pushes the registry over
SSH. Repo B, a clone, pulls: ``dvc repro`` has nothing to redo, ``dvc status`` is clean, the
outputs and the registry are A's byte for byte, and ``rnnlab sample`` uses the pulled model without
retraining. No dvc or stage process outlives the test. This is the project's one round trip
through a remote (a local folder remote is the same DVC code under another filesystem: the
scheduled retraining of tests/test_schedule_server.py pushes to one).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness import GIT, VENV_BIN, copy_repo, processes_under, run, site_cache_inside, tool_env, write_params
from models import registry
from models.registry import read_promoted
from ops.server import STOP_GRACE, free_port
from pipeline.io import sha256_file
from pipeline.procs import stop, wait_until
from tests.conftest import LM_PARAMS

PY = str(VENV_BIN / "python")
TARGET = "lm@word"
SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if os.access(p, os.X_OK)), None)
SSH_KEYGEN = shutil.which("ssh-keygen")
NO_SSHD = (
    "OpenSSH's server is not installed: `make sshd` installs Debian's package "
    "(apt-get install openssh-server); the SSH remote tests need sshd and ssh-keygen"
)
START_DEADLINE = 60.0  # seconds for sshd to answer; well under one here
CUT_SHARE = 0.4  # the first push is cut after this share of the bytes it has to send


# --- an SSH server and a relay that can drop the link ------------------------------------------


class CuttingRelay:
    """A TCP relay from a free port of 127.0.0.1 to ``target_port``, counting bytes each way.

    ``cut_after(n)``: once ``n`` more bytes have gone from client to server, every connection is
    dropped (both sockets shut) and new ones are closed at once, until ``heal()``.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = 0  # bytes client -> server
        self.down = 0
        self.budget: int | None = None  # the count of bytes up at which the link drops; None: no cut planned
        self.cut = False
        self.closed = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def reset_counts(self) -> None:
        with self._lock:
            self.up = self.down = 0

    def cut_after(self, n: int) -> None:
        with self._lock:
            self.budget, self.cut = self.up + n, False

    def heal(self) -> None:
        with self._lock:
            self.budget, self.cut = None, False

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below; close() alone would not
        self.listener.close()
        self._drop()
        for t in self._threads:
            t.join(timeout=10)

    def _drop(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            if self.cut:
                client.close()  # the link is down
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:  # sshd is gone: so is the link
                client.close()
                continue
            for s in (client, server):  # as ssh itself does: else each small packet waits for a delayed ACK
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._socks += [client, server]
            for src, dst, up in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, up), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            with self._lock:
                if up and self.budget is not None:
                    allowed = max(0, self.budget - self.up)
                    if len(data) >= allowed:  # this chunk crosses the line: send up to it, then drop the link
                        data, self.cut = data[:allowed], True
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                cut = self.cut
            try:
                dst.sendall(data)
            except OSError:
                return
            if cut:
                self._drop()
                return


@dataclass(frozen=True)
class Sshd:
    user: str
    port: int  # sshd's own
    keyfile: Path  # the client's private key, authorized by sshd
    relay: CuttingRelay

    def url(self, path: Path) -> str:
        """The remote's URL, through the relay."""
        return f"ssh://{self.user}@127.0.0.1:{self.relay.port}{path}"


def banner(port: int) -> bool:
    """Whether an SSH server answers on ``port`` with its version line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """Debian's sshd on a free port of 127.0.0.1: key login only, SFTP, its files in a tmp folder."""
    if SSHD is None or SSH_KEYGEN is None:
        pytest.skip(NO_SSHD)
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host_ed25519", "id_ed25519"):
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_bytes((folder / "id_ed25519.pub").read_bytes())
    (folder / "authorized_keys").chmod(0o600)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {folder / 'host_ed25519'}\nPidFile none\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "AuthenticationMethods publickey\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\n"
        # The key lives under /tmp, whose world-writable mode StrictModes would refuse.
        "StrictModes no\n"
        "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n",
        encoding="utf-8",
    )
    if os.geteuid() == 0:
        # sshd started by root checks for its privilege-separation folder, which Debian's service
        # makes at boot (RuntimeDirectory=sshd); a container that never ran the service lacks it.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, f"sshd refused its config: {check.stderr}"
    log = folder / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    relay = None
    try:
        wait_until(
            f"sshd on 127.0.0.1:{port}",
            lambda: banner(port),
            START_DEADLINE,
            alive=lambda: None if proc.poll() is None else f"sshd exited ({proc.returncode}): {log.read_text()}",
        )
        relay = CuttingRelay(port)
        yield Sshd(getpass.getuser(), port, folder / "id_ed25519", relay)
    finally:
        if relay is not None:
            relay.close()
        stop(proc, STOP_GRACE)  # SIGTERM to its group: the listener and any session it forked


# --- the round trip -----------------------------------------------------------------------------


def commit(repo: Path, message: str, env: dict[str, str]) -> None:
    run(repo, "git", "add", "-A", env=env)
    run(repo, *GIT, "commit", "-qm", message, env=env)


def cache_objects(repo: Path) -> dict[str, Path]:
    """DVC's cache of ``repo``: object name (md5, ``.dir`` for a folder's listing) -> file."""
    root = repo / ".dvc/cache/files/md5"
    return {p.parent.name + p.name: p for p in root.rglob("*") if p.is_file()}


def remote_objects(store: Path) -> tuple[dict[str, Path], list[Path]]:
    """The objects on the remote, and the partial uploads a dropped link left (``*.tmp``)."""
    files = [p for p in (store / "files/md5").rglob("*") if p.is_file()] if (store / "files").is_dir() else []
    partial = [p for p in files if p.name.endswith(".tmp")]
    return {p.parent.name + p.name: p for p in files if p not in partial}, partial


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_md5s(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert files, f"{folder} is empty"
    return {p.relative_to(folder).as_posix(): md5(p) for p in files}


def timed(relay: CuttingRelay, repo: Path, *cmd: str, env: dict[str, str]) -> tuple[float, int, int]:
    """Run ``cmd`` in ``repo``; the seconds it took and the bytes it sent and received over SSH."""
    relay.reset_counts()
    start = time.perf_counter()
    run(repo, *cmd, env=env)
    return time.perf_counter() - start, relay.up, relay.down


def in_sync(repo: Path, env: dict[str, str]) -> str:
    return run(repo, "dvc", "status", "--cloud", env=env).stdout


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH's client (ssh) is not installed")
def test_the_relay_carries_a_key_login_and_drops_it_when_cut(sshd: Sshd, tmp_path: Path) -> None:
    ssh = [
        *("ssh", "-F", "/dev/null", "-i", str(sshd.keyfile), "-p", str(sshd.relay.port)),
        *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"),
        *("-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}"),
        f"{sshd.user}@127.0.0.1",
        *("echo", "over ssh"),
    ]
    ok = subprocess.run(ssh, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and ok.stdout == "over ssh\n", ok.stderr
    sshd.relay.cut_after(100)  # within the key exchange
    try:
        cut = subprocess.run(ssh, capture_output=True, text=True, timeout=60, check=False)
        assert sshd.relay.cut and cut.returncode == 255, cut.stderr
    finally:
        sshd.relay.heal()


@pytest.mark.slow
def test_push_cut_mid_transfer_then_pull_repro_and_registry_over_ssh(
    sshd: Sshd, prefect_api: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"  # no ~/.ssh/config or DVC user config of the machine's
    home.mkdir()
    env = tool_env(HOME=str(home), PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=prefect_api)
    store = tmp_path / "store"  # the remote's folder on the "other machine"
    a = copy_repo(tmp_path / "a")
    write_params(a / "params.yaml", {**LM_PARAMS, "retrain": {"levels": ["word"]}})
    # As a team sets it up: the URL committed in .dvc/config, each member's key in config.local.
    run(a, "dvc", "remote", "add", "--default", "team", sshd.url(store), env=env)
    run(a, "dvc", "remote", "modify", "--local", "team", "keyfile", str(sshd.keyfile), env=env)
    run(a, "dvc", "repro", TARGET, env=env)
    objects = cache_objects(a)
    total = sum(p.stat().st_size for p in objects.values())

    # 1. The link dies mid-transfer: the push fails, saying so, and the remote is incomplete.
    sshd.relay.reset_counts()
    sshd.relay.cut_after(int(total * CUT_SHARE))
    cut = run(a, PY, "-m", "ops.remote", "push", env=env, check=False)
    sent_before_cut = sshd.relay.up
    assert sshd.relay.cut, f"the push sent only {sent_before_cut} bytes of {total}: the link was never cut"
    assert cut.returncode == 2 and "error: `dvc push -r team` failed" in cut.stderr, cut.stdout + cut.stderr
    assert "Traceback" not in cut.stderr
    # Incomplete: how many objects landed before the cut (none, under load) depends on the timing.
    assert len(remote_objects(store)[0]) < len(objects)

    # 2. The link is back: DVC sees what is missing, the next push completes, and every object
    # on the remote is whole.
    sshd.relay.heal()
    assert "Cache and remote 'team' are in sync" not in in_sync(a, env)
    push_s, push_up, push_down = timed(sshd.relay, a, PY, "-m", "ops.remote", "push", env=env)
    assert "Cache and remote 'team' are in sync" in in_sync(a, env)
    on_remote, partial = remote_objects(store)
    assert set(on_remote) == set(objects)
    bad = [name for name, p in on_remote.items() if md5(p) != name.removesuffix(".dir")]
    assert not bad, f"objects whose bytes do not match their md5: {bad}"

    # 3. Retraining promotes the model and pushes the registry over SSH.
    run(a, PY, "-m", "flows.retrain", "--level", "word", env=env)
    record = read_promoted(a, "word")
    assert record is not None and record["decision"] == "nothing was promoted yet"
    assert "Cache and remote 'team' are in sync" in in_sync(a, env)
    commit(a, "pipeline, registry and the team's SSH remote", env)

    # 4. A teammate's clone pulls instead of retraining.
    b = tmp_path / "b"
    run(tmp_path, "git", "clone", "-q", str(a), str(b), env=env)
    site_cache_inside(b)
    run(b, "dvc", "remote", "modify", "--local", "team", "keyfile", str(sshd.keyfile), env=env)
    pull_s, pull_up, pull_down = timed(sshd.relay, b, PY, "-m", "ops.remote", "pull", env=env)
    repro = run(b, "dvc", "repro", TARGET, env=env)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert run(b, "dvc", "status", TARGET, env=env).stdout.strip() == "Data and pipelines are up to date."
    # What both members train on and with is the same, byte for byte; the registry came along too.
    for folder in ("data/vocab", "data/windows/word", "artifacts/word/checkpoints", "registry"):
        assert tree_md5s(a / folder) == tree_md5s(b / folder), folder
    assert read_promoted(b, "word") == record
    assert sha256_file(b / record["model"] / registry.CHECKPOINT) == record["checkpoint_sha256"]
    # B samples from the pulled model: used, not retrained.
    before = {p.name: p.stat().st_mtime_ns for p in (b / "artifacts/word/checkpoints").iterdir()}
    out = run(b, str(VENV_BIN / "rnnlab"), "sample", "--prime", "the", "--count", "2", "--json", env=env).stdout
    samples = json.loads(out)["samples"]
    assert len(samples) == 2 and all(s["text"].startswith("the") for s in samples)
    assert {p.name: p.stat().st_mtime_ns for p in (b / "artifacts/word/checkpoints").iterdir()} == before

    assert not processes_under(a) and not processes_under(b), "a dvc or stage process outlived its command"
    print(
        f"\nSSH remote: {len(objects)} objects, {total / 1e6:.2f} MB in A's cache; "
        f"the first push cut after {sent_before_cut / 1e6:.2f} MB sent, leaving {len(partial)} partial upload(s); "
        f"the completing push {push_s:.1f} s ({push_up / 1e6:.2f} MB up, {push_down / 1e6:.2f} MB down); "
        f"pull {pull_s:.1f} s ({pull_down / 1e6:.2f} MB down, {pull_up / 1e6:.2f} MB up)"
    )
