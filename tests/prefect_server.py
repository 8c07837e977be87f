"""A real ``prefect server`` on 127.0.0.1 for tests where the server is the point.

    with prefect_server(tmp_path) as api_url:   # "http://127.0.0.1:<port>/api"
        ...                                     # point PREFECT_API_URL at it

The server gets its own PREFECT_HOME (database included) under the given
folder, and its whole process group is stopped on exit, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from tests.support import VENV_BIN, tool_env

STARTUP_TIMEOUT = 120.0  # seconds; ~5-15 s here, more when the machine is busy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment for the server and its clients: isolated home, offline-safe settings."""
    env = tool_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def stop_group(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def prefect_server(folder: Path) -> Iterator[str]:
    """Start a server, wait for ``/api/health``, yield its API URL, then stop it."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(folder / "server.log", "wb")
    api = f"http://127.0.0.1:{port}/api"
    env = server_env(folder / "home")
    env["PREFECT_UI_API_URL"] = api  # the UI's pages call the API here, not at the default :4200
    env["PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT"] = "false"
    proc = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({proc.returncode}):\n{(folder / 'server.log').read_text()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{api}/health", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after {STARTUP_TIMEOUT} s; log in {folder}")
            time.sleep(0.5)
        yield api
    finally:
        stop_group(proc)
        log.close()
