"""A real ``prefect server`` on 127.0.0.1 for tests where the server is the point.

    with prefect_server(tmp_path) as api_url:   # "http://127.0.0.1:<port>/api"
        ...                                     # point PREFECT_API_URL at it

The project's own server code (flows/server.py: a free port, the UI pointed at its API, a
polled start-up with a deadline, the process group stopped on exit), with the server's own
PREFECT_HOME (database included) under the given folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from flows.server import local_server
from tests.support import tool_env


def server_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment for a server or its clients: an isolated Prefect home, and the API when given."""
    env = tool_env(PREFECT_HOME=str(home))
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextlib.contextmanager
def prefect_server(folder: Path) -> Iterator[str]:
    """Start a server, wait for ``/api/health``, yield its API URL, then stop it."""
    folder.mkdir(parents=True, exist_ok=True)
    with local_server(log=folder / "server.log", env=server_env(folder / "home")) as api:
        yield api
