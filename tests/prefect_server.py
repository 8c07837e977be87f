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

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from flows.server import local_server
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
def prefect_server(folder: Path) -> Iterator[str]:
    """Start a server, wait for ``/api/health``, yield its API URL, then stop it."""
    folder.mkdir(parents=True, exist_ok=True)
    with local_server(log=folder / "server.log", env=server_env(folder / "home")) as api:
        yield api
