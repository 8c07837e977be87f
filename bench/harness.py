"""What the benchmarks and the tests share: a throwaway copy of the repository, real params, real data,
real servers.

    repo = copy_repo(tmp / "repo")                        # a fresh git + DVC repo holding the project's files
    write_params(repo / "params.yaml", SMALL_CORPUS)      # the real params.yaml, shrunk
    run(repo, "dvc", "repro")                             # in it, with this venv's tools first on PATH
    with prefect_server(tmp / "srv") as api: ...          # a real Prefect server (PostgreSQL: postgres_cluster)

Nothing here writes into the repository: every command runs in a copy, under a temporary folder.
Benchmarks import this module, and so do the tests (tests/support.py keeps what only tests use);
bench/ never imports tests/.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import functools
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ops.server import free_port, local_server
from pipeline.procs import wait_until

# --- the repository, copied, and its tools ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=rnnlab test", "-c", "user.email=test@rnnlab.invalid"]  # no identity needed
SHARED_DATA = ROOT.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent


# The pipeline's state from the developer's own runs: a lock file names outputs that a copy does
# not have (data/ and artifacts/ are ignored), so `dvc push` could never send them and
# `dvc status --cloud` would report them missing from any remote. A test repo starts clean.
RUN_STATE = ("dvc.lock", "tasks/dvc.lock", "registry.dvc")


def project_files() -> list[str]:
    """Tracked files plus untracked ones git does not ignore (work in progress counts), without RUN_STATE."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    return [f for f in out.decode().split("\0") if f and f not in RUN_STATE and (ROOT / f).is_file()]


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for dvc and stage commands: this venv first, analytics off."""
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def copy_repo(dest: Path) -> Path:
    """Copy the project into ``dest`` as a new git + DVC repo with its caches inside ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    # The sandbox keeps DVC's site cache and Prefect's home inside the repo: not for git.
    with open(dest / ".git/info/exclude", "a", encoding="utf-8") as f:
        f.write("/.dvc-site/\n/.prefect/\n")
    env = tool_env(PREFECT_HOME=str(dest / ".prefect"))
    site_cache_inside(dest)
    # One commit, as a clone has: DVCLive reads the baseline commit, `dvc exp run` needs one.
    run(dest, "git", "add", "-A", env=env)
    run(dest, *GIT, "commit", "-qm", "a copy of the project", env=env)
    return dest


def site_cache_inside(repo: Path) -> None:
    """DVC keeps a per-repo site cache outside the repo by default: keep it in the sandbox,
    ``repo/.dvc-site`` (what ``dvc config --local core.site_cache_dir`` writes, without a dvc process)."""
    from dvc.config import Config

    with Config(dvc_dir=str(repo / ".dvc")).edit("local") as conf:
        conf["core"]["site_cache_dir"] = str(repo / ".dvc-site")


def run(
    cwd: Path, *cmd: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run a command in ``cwd``; on failure, raise with its output shown."""
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=env or tool_env(PREFECT_HOME=str(cwd / ".prefect")),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_params(path: Path = ROOT / "params.yaml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@functools.cache
def _repo_params() -> Any:
    from pipeline.params import read_params

    return read_params(ROOT / "params.yaml")


def section(key: str, **update: Any) -> Any:
    """The repository's params.yaml section at dotted ``key`` (its own model type, e.g. TrainParams
    for "train.word"), with ``update``'s keys changed and validated as params.yaml would be::

        p = section("train.word", hidden=16, epochs=1, device="cpu")

    A bad value or an unknown key raises pydantic's ValidationError. The file is read once.
    """
    from pipeline.params import lookup

    base = lookup(_repo_params(), key)
    return type(base).model_validate({**base.model_dump(), **update})


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_params(path: Path, overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the real params.yaml, shrunk by ``overrides``, to ``path``."""
    params = merge(base if base is not None else load_params(), overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return params


# A small grammar corpus: the real defaults with fewer documents.
SMALL_CORPUS = {"corpus": {"source": "grammar", "grammar": {"train_docs": 400, "valid_docs": 60, "test_docs": 60}}}


def run_data_stages(root: Path, *, windows: bool = True) -> Path:
    """Run the spine's stages in ``root`` (its params.yaml), in process: corpus, then per level
    tokenize (one thread), vocab and, with ``windows``, windows. Returns ``root``."""
    from pipeline import corpus, tokenize, vocab
    from pipeline import windows as windows_stage

    with contextlib.chdir(root):
        corpus.run("params.yaml")
        for level in ("word", "char"):
            tokenize.run(level, "params.yaml", 1)
            vocab.run(level, "params.yaml")
            if windows:
                windows_stage.run(level, "params.yaml")
    return root


def reference_pairs(tokens: list[int], lo: list[int], hi: list[int]) -> list[tuple[int, int]]:
    """Plain Python over the same windows, center by center in stream order.

    The reference that tests/test_skipgram.py and bench/skipgram.py hold pipeline.skipgram.pairs to.
    """
    out = []
    for c in range(len(tokens)):
        for j in range(lo[c], hi[c]):
            if j != c:
                out.append((tokens[c], tokens[j]))
    return out


# --- corpora built for a run: a multistream Wikipedia dump, hostile wikitext ----------------------
#
# A multistream dump is what dumps.wikimedia.org publishes as ``…-multistream.xml.bz2``: the
# ``<siteinfo>`` header as one bz2 stream, the pages in groups (100 there) compressed as one
# stream each, and ``</mediawiki>`` as a last stream, concatenated; its index
# ``…-multistream-index.txt.bz2`` has one line ``offset:page_id:title`` per page, the offset
# being where its stream starts. Used by tests/test_dask_preprocess.py and bench/preprocess.py.

_PAGE = re.compile(rb"  <page>")
_ID = re.compile(rb"<id>(\d+)</id>")
_TITLE = re.compile(rb"<title>(.*?)</title>")


def build_multistream(
    src: Path, dest: Path, per_stream: int = 10, copies: int = 1, name: str = "enwiki-multistream"
) -> tuple[Path, Path, int]:
    """Write ``dest/<name>.xml.bz2`` and ``dest/<name>-index.txt.bz2`` from the pages of ``src``.

    ``copies`` > 1 repeats the pages with page ids shifted by 10**7 per copy (a larger
    dump with distinct ids, hence its own holdout draws). Returns the two paths and the
    decompressed XML size in bytes.
    """
    xml = bz2.decompress(src.read_bytes())
    first = xml.index(b"  <page>")
    footer = xml.rindex(b"</mediawiki>")
    starts = [m.start() for m in _PAGE.finditer(xml)]
    pages = [xml[a:b] for a, b in zip(starts, starts[1:] + [footer])]
    if copies > 1:
        pages = [
            _ID.sub(lambda m, k=k: b"<id>%d</id>" % (int(m.group(1)) + k * 10_000_000), page, count=1)
            for k in range(copies)
            for page in pages
        ]
    dest.mkdir(parents=True, exist_ok=True)
    out = bytearray(bz2.compress(xml[:first]))
    lines = []
    size = first + len(xml) - footer
    for i in range(0, len(pages), per_stream):
        group = pages[i : i + per_stream]
        for page in group:
            pid = _ID.search(page).group(1).decode()  # the page's own id: the first <id> in it
            title = _TITLE.search(page).group(1).decode("utf-8")
            lines.append(f"{len(out)}:{pid}:{title}\n")
        body = b"".join(group)
        size += len(body)
        out += bz2.compress(body, 9)
    out += bz2.compress(xml[footer:])
    dump, index = dest / f"{name}.xml.bz2", dest / f"{name}-index.txt.bz2"
    dump.write_bytes(bytes(out))
    index.write_bytes(bz2.compress("".join(lines).encode("utf-8")))
    return dump, index, size


# Pathological wikitext pages for the markup stripper: what a hostile or broken dump can hold. Each
# kind once took the stripper super-linear time (or is a shape the stripper's passes handle
# differently); together they are the inputs the linear-time claim is about. Used by
# tests/test_wikipedia_strip_property.py (a loose linear bound) and ``bench/wikipedia.py --hostile``
# (throughput against the real enwiki fragment).

DEPTH = 10_000  # "10,000-deep nesting"


def _repeat(unit: str, size: int) -> str:
    return unit * max(1, size // len(unit))


def _nested(opener: str, middle: str, closer: str, size: int) -> str:
    """Blocks of DEPTH-deep nesting, as many as fit in ``size`` (at least one)."""
    block = opener * DEPTH + middle + closer * DEPTH
    return block * max(1, size // len(block))


# name -> page of about `size` characters (ASCII, so characters are bytes)
KINDS: dict[str, Callable[[int], str]] = {
    "unclosed <ref>": lambda size: _repeat("<ref>x ", size),
    "<ref without '>'": lambda size: _repeat("<ref name=x ", size),
    "unclosed {{template": lambda size: _repeat("{{cite x ", size),
    "unclosed [[File: link": lambda size: _repeat("[[File:x.jpg|thumb|a [[b]]\n", size),
    "unclosed [http link": lambda size: _repeat("[//e.org ", size),
    "pipe trick, many (": lambda size: "[[" + _repeat("( ", size) + "x|]]",
    "10,000-deep {{ }}": lambda size: _nested("{{", "x", "}}", size),
    "10,000-deep [[ ]]": lambda size: _nested("[[", "x", "]]", size),
    "10,000-deep <ref>": lambda size: _nested("<ref>", "x", "</ref>", size),
    "mixed, all unclosed": lambda size: _repeat("<ref>{{x [[File:y [//z <!-- c --> '' {| \n", size),
}


def hostile_pages(size: int) -> dict[str, str]:
    """One page of each kind, of about ``size`` characters."""
    return {name: make(size) for name, make in KINDS.items()}


# --- a real Prefect server on 127.0.0.1, on SQLite or PostgreSQL ------------------------------------
#
#     with prefect_server(tmp_path) as api_url:   # "http://127.0.0.1:<port>/api"
#         ...                                     # point PREFECT_API_URL at it
#     with postgres_cluster(tmp_path / "pg") as db, prefect_server(tmp_path / "srv", database_url=db) as api:
#         ...                                     # the same server, its database in PostgreSQL
#
# The project's own server code (ops/server.py: a free port, the UI pointed at its API, a polled
# start-up with a deadline, the process group stopped on exit), with the server's own PREFECT_HOME
# (database included, unless it is PostgreSQL's) under the given folder. ``postgres_cluster`` is a
# throwaway PostgreSQL: Debian's server programs (``make postgres`` installs them), ``initdb`` in the
# given folder, ``postgres`` on a free port of 127.0.0.1 with password authentication, one database
# for Prefect, and a fast shutdown on exit.


def api_session() -> requests.Session:
    """HTTP to a Prefect server on a busy machine. A server whose database is locked answers 503
    (429 and 502 likewise pass): retried with backoff for about two minutes, as Prefect's own
    client does, before the answer counts. Every method is retried: the calls tests make
    (filters, creating a limit by tag, pausing a deployment) can be repeated safely."""
    retry = Retry(total=8, backoff_factor=0.5, status_forcelist=(429, 502, 503), allowed_methods=None)
    retry.raise_on_status = False  # the last answer is returned, for the caller to check
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


# One session for every test's calls to a Prefect API.
PREFECT_HTTP = api_session()


def server_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment for a server or its clients: an isolated Prefect home, and the API when given."""
    env = tool_env(PREFECT_HOME=str(home))
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextlib.contextmanager
def prefect_server(folder: Path, database_url: str | None = None) -> Iterator[str]:
    """Start a server, wait for ``/api/health``, yield its API URL, then stop it.

    Its database is SQLite in its own home, or the one ``database_url`` names
    (``postgresql+asyncpg://user:password@127.0.0.1:port/db``, e.g. from ``postgres_cluster``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    env = server_env(folder / "home")
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    with local_server(log=folder / "server.log", env=env) as api:
        yield api


def processes_under(folder: Path) -> list[str]:
    """Live processes (but this one) whose command line names ``folder`` or whose working directory
    is inside it: what a test or a benchmark started there and should have stopped."""
    root = os.path.realpath(folder)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        if cmd and (root in cmd or cwd == root or cwd.startswith(root + os.sep)):
            found.append(f"{pid} (in {cwd}): {cmd}")
    return found


# --- PostgreSQL ---------------------------------------------------------------------------------

NO_POSTGRES = (
    "PostgreSQL's server programs (initdb, postgres) are not installed: `make postgres` installs "
    "Debian's package (apt-get install postgresql)"
)
PG_USER = "rnnlab"
PG_PASSWORD = "rnnlab-test"  # a throwaway cluster on 127.0.0.1, gone with the test's folder
PG_DATABASE = "prefect"
PG_START_DEADLINE = 120.0  # seconds; about one here
PG_STOP_GRACE = 60.0


def postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: the one on PATH, else Debian's newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian keeps the server programs off PATH)."""
    found = shutil.which("initdb")
    if found:
        folder = Path(found).resolve().parent
        if (folder / "postgres").is_file():
            return folder
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def unprivileged() -> list[str]:
    """The prefix that runs a PostgreSQL program as an ordinary user.

    PostgreSQL refuses to run as root, and CI runs as root. Rather than hand the cluster's folder
    (and every folder above it, pytest's private ones included) to another user, root runs the
    server in a user namespace where it is the ``postgres`` user (else ``nobody``): the files it
    writes stay root's, where the test put them. Any other user runs the programs as they are.
    """
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        user = pwd.getpwnam("nobody")
    return ["unshare", "--user", f"--map-user={user.pw_uid}", f"--map-group={user.pw_gid}"]


def _pg_env() -> dict[str, str]:
    env = tool_env(PGPASSWORD=PG_PASSWORD, PGCONNECT_TIMEOUT="10")
    for key in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGDATA"):  # a developer's own settings
        env.pop(key, None)
    return env


def _run_pg(cmd: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=_pg_env(), timeout=300, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); {log}:\n{tail}")


@contextlib.contextmanager
def postgres_cluster(folder: Path, bin_dir: Path | None = None) -> Iterator[str]:
    """A new PostgreSQL cluster in ``folder``, serving on a free port of 127.0.0.1.

    Yields the SQLAlchemy URL of its database for Prefect
    (``postgresql+asyncpg://rnnlab:...@127.0.0.1:<port>/prefect``); on the way out, whatever
    happened, the server gets a fast shutdown (SIGINT), then SIGKILL after a minute.
    """
    bin_dir = bin_dir or postgres_bin()
    if bin_dir is None:
        raise RuntimeError(NO_POSTGRES)
    folder.mkdir(parents=True, exist_ok=True)
    data, log, pwfile = folder / "data", folder / "postgres.log", folder / "pwfile"
    pwfile.write_text(PG_PASSWORD + "\n", encoding="utf-8")
    prefix = unprivileged()
    _run_pg(
        [
            *prefix,
            str(bin_dir / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            PG_USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",  # as a team's server would: a password over TCP
            "--encoding=UTF8",
            "--no-sync",  # a throwaway cluster: no need to wait for the disk at creation
        ],
        log,
    )
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*prefix, str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port)]
            # Its Unix socket beside the data, not in /var/run/postgresql (which may not exist).
            + ["-k", str(folder)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_pg_env(),
            start_new_session=True,
        )
    try:
        ready = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER]
        wait_until(
            f"PostgreSQL on 127.0.0.1:{port}",
            lambda: subprocess.run(ready, env=_pg_env(), check=False).returncode == 0,
            PG_START_DEADLINE,
            alive=lambda: None if proc.poll() is None else f"postgres exited with code {proc.returncode}; see {log}",
        )
        _run_pg([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, PG_DATABASE], log)
        yield f"postgresql+asyncpg://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/{PG_DATABASE}"
    finally:
        stop_postgres(proc)


def stop_postgres(proc: subprocess.Popen[bytes], grace: float = PG_STOP_GRACE) -> None:
    """SIGINT: PostgreSQL's fast shutdown (clients are disconnected; the server exits after its
    backends). What is left after ``grace`` seconds is killed, the whole process group."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
