"""A real ``prefect server`` on 127.0.0.1 for tests where the server is the point, on SQLite or PostgreSQL.

    with prefect_server(tmp_path) as api_url:   # "http://127.0.0.1:<port>/api"
        ...                                     # point PREFECT_API_URL at it

    with postgres_cluster(tmp_path / "pg") as db, prefect_server(tmp_path / "srv", database_url=db) as api:
        ...                                     # the same server, its database in PostgreSQL

The project's own server code (ops/server.py: a free port, the UI pointed at its API, a
polled start-up with a deadline, the process group stopped on exit), with the server's own
PREFECT_HOME (database included, unless it is PostgreSQL's) under the given folder.

``postgres_cluster`` is a throwaway PostgreSQL: Debian's server programs (``make postgres``
installs them), ``initdb`` in the given folder, ``postgres`` on a free port of 127.0.0.1 with
password authentication, one database for Prefect, and a fast shutdown on exit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ops.server import free_port, local_server
from pipeline.procs import wait_until
from tests.support import tool_env


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
