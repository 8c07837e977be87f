"""One local Prefect server: started, waited for, pointed at, and stopped; the same code for every caller.

    with local_server(port=None) as api:    # "http://127.0.0.1:<free port>/api", state in Prefect's home
        ...                                 # children get PREFECT_API_URL=api

``rnnlab repro`` runs a whole ``dvc repro`` against one such server (ops/repro.py),
``rnnlab server`` keeps one in the foreground for the UI (``make server``), and the tests
start theirs through it too. Every wait polls its condition against a deadline and says what
it is waiting for (pipeline/procs.py ``wait_until``); nothing sleeps a fixed time and hopes.

Two settings matter beyond the port:

* ``PREFECT_UI_API_URL`` is set to the server's own API. Without it a server started with
  ``--port N`` still tells its UI (``GET /api/ui-settings``) that the API is at :4200, and every
  page says "Can't connect to Server API".
* The state folder is Prefect's home, from the project's prefect.toml (``.prefect/``) unless
  ``PREFECT_HOME`` says otherwise, so the runs persist: a later ``make server`` shows them.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pipeline import procs
from pipeline.errors import RnnlabError

VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
STOP_GRACE = 30.0  # seconds a stopped server may take to exit before it is killed


class ServerError(RnnlabError):
    """The Prefect server could not be started, or died under the run (a wait past its deadline is
    pipeline.procs.WaitError)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def configured_api() -> str | None:
    """PREFECT_API_URL as Prefect resolves it: the environment, the active profile, prefect.toml."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def prefect_home() -> Path:
    """Prefect's home (``.prefect/`` by the project's prefect.toml): a started server keeps its runs there."""
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home)


def startup_deadline() -> float:
    """How long to wait for a server to answer: Prefect's own ``server.ephemeral.startup_timeout_seconds``,
    raised in prefect.toml so that a busy machine cannot exceed it (Prefect's default is 20 s)."""
    from prefect.settings import get_current_settings

    return float(get_current_settings().server.ephemeral.startup_timeout_seconds)


def server_env(port: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: its UI pointed at its own API, no analytics, no promotions."""
    env = dict(os.environ if base is None else base)
    env.pop("PREFECT_API_URL", None)  # a server is not a client of another
    env["PREFECT_UI_API_URL"] = api_url(port)
    env["PREFECT_SERVER_API_HOST"] = HOST
    env["PREFECT_SERVER_API_PORT"] = str(port)
    return env


def command(port: int) -> list[str]:
    return [str(VENV_BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port)]


def check_port(port: int) -> None:
    if port_taken(port):
        raise ServerError(
            f"port {port} on {HOST} is taken (another Prefect server? `make server` may be running: "
            f"then point this command at it with PREFECT_API_URL={api_url(port)}); "
            "or choose another port (PREFECT_PORT=... for make, --port for rnnlab)"
        )


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")
# What a server prints at every start: its banner, and where its API, docs and UI are. None of it
# says why it ended, so none of it is quoted.
BOILERPLATE = re.compile(
    r"^([\s_|/\\()]*|Configure Prefect to communicate with the server.*|prefect config set .*"
    r"|View the API reference documentation at .*|Check out the dashboard at .*)$"
)
FRAME_LINE = re.compile(r"^(File \"|Traceback \(most recent call last\)|During handling of|The above exception)")


def log_tail(path: Path, limit: int = 300) -> str:
    """The last meaningful words of a server log, cut to about ``limit`` characters: its last
    exception line when it ends in a traceback, else its last two lines that are not start-up
    boilerplate; "" when there are none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))  # the end is enough, however long the log
            raw = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    lines = [x.strip() for x in raw if x.strip() and not BOILERPLATE.match(x.strip())]
    errors = [x for x in lines if EXCEPTION_LINE.match(x)]
    if errors:
        return errors[-1][:limit]
    told = [x for x in lines if not FRAME_LINE.match(x) and not x.startswith("^")]
    return " | ".join(told[-2:])[:limit]


class Server:
    """A ``prefect server start`` subprocess in its own process group, logging to ``log``."""

    def __init__(self, port: int | None = None, log: Path | None = None, env: Mapping[str, str] | None = None):
        if port is not None:
            check_port(port)
        self.port = port if port is not None else free_port()
        self.api = api_url(self.port)
        self.log = log
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed in stop)
        self._out = out
        # Its own process group (Ctrl-C in the terminal reaches the work, not the server under
        # it), with SIGTERM at its default action whatever the caller inherited, so stop() works.
        self.proc = procs.start(
            command(self.port), env=server_env(self.port, env), stdout=out, stderr=subprocess.STDOUT
        )

    def exited(self) -> str | None:
        """How the server ended and what its log says last, or None while it runs."""
        if self.proc.poll() is None:
            return None
        how = f"the Prefect server {procs.ended(self.proc.returncode)}"
        if not self.log:
            return how
        last = log_tail(self.log)
        said = f'its log ends "{last}"' if last else "its log says nothing after its start-up banner"
        return f"{how} ({said}; the whole log: {self.log})"

    def wait(self, say: Callable[[str], object] = print, deadline_s: float | None = None) -> float:
        """Block until ``/health`` answers; the seconds it took."""
        return procs.wait_until(
            f"the Prefect server at {self.api}",
            lambda: procs.healthy(self.api),
            startup_deadline() if deadline_s is None else deadline_s,
            say=say,
            alive=self.exited,
            hint="is the machine very busy? raise server.ephemeral.startup_timeout_seconds in prefect.toml"
            + (f"; the server's log: {self.log}" if self.log else ""),
        )

    def stop(self) -> None:
        procs.stop(self.proc, STOP_GRACE)
        if self._out is not subprocess.DEVNULL:
            self._out.close()


@contextlib.contextmanager
def local_server(
    port: int | None = None,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], object] = print,
) -> Iterator[str]:
    """Start a server, wait until it answers, yield its API URL; stop it on the way out, whatever happened."""
    server = Server(port, log, env)
    try:
        server.wait(say)
        yield server.api
    finally:
        server.stop()
