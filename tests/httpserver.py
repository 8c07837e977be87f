"""A real threaded HTTP server on 127.0.0.1 for offline tests, with switchable faults.

Serves files from a directory (with HTTP Range support) and replays recorded
responses (status, body, headers), chosen by path and optionally by query
parameters. Faults are plain attributes, changed between requests:

    with HTTPTestServer(root=tmp_path) as srv:
        srv.fail_times = 2                  # the next 2 requests answer 500
        srv.drop_after = 1000               # the next file response closes after 1000 body bytes
        srv.ignore_range = True             # answer 200 with the whole file even to a Range request
        srv.corrupt = True                  # serve the file with its bytes changed
        srv.status_override = 404           # answer every request with 404
        fetch(srv.url("big.bin"), ...)
        assert srv.requests[-1].headers["Range"] == "bytes=1000-"

Recorded responses (the arXiv fixtures keep URL, status and body)::

    srv.route("/api/query", body, status=400, query={"start": "0"})
    srv.replay_json(Path(".../id_abc_s0_m100_b79c8dcf6bc3.json"))  # path and query from its "url"

Nothing here touches the network beyond the loopback interface.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Route:
    """A recorded response, served when the path and every given query parameter match."""

    path: str
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


class HTTPTestServer:
    """Threaded HTTP/1.1 server on an ephemeral loopback port. Use as a context manager."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.routes: list[Route] = []
        self.requests: list[Request] = []
        # Faults (see the module docstring). Counters count down per request.
        self.fail_times = 0
        self.fail_status = 500
        self.status_override: int | None = None
        self.ignore_range = False
        self.drop_after: int | None = None
        self.drop_times = 1
        self.corrupt = False
        self.chunk = 16 << 10
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up ------------------------------------------------------------------------------

    def route(
        self,
        path: str,
        body: bytes | str,
        status: int = 200,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Serve ``body`` with ``status`` for ``path`` (and these query values, if given).

        Later routes win over earlier ones, so a test can override a page.
        """
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes.append(Route(path, data, status, dict(headers or {}), dict(query or {})))

    def replay_json(self, fixture: Path, *, match: tuple[str, ...] = ("start",)) -> str:
        """Serve a recorded ``{url, status_code, body}`` response; return its path and query.

        The route matches on the recorded URL's path and on the query keys in ``match``.
        """
        rec = json.loads(Path(fixture).read_text(encoding="utf-8"))
        parts = urlsplit(rec["url"])
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.route(
            parts.path,
            rec["body"],
            rec["status_code"],
            query={k: query[k] for k in match if k in query},
            headers={"Content-Type": "application/atom+xml; charset=utf-8"},
        )
        return parts.path + ("?" + parts.query if parts.query else "")

    def url(self, path: str = "") -> str:
        assert self._httpd is not None, "start the server first (use it as a context manager)"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/{path.lstrip('/')}"

    def count(self, path: str, **query: str) -> int:
        """How many requests asked for ``path`` (with these query values)."""
        return sum(1 for r in self.requests if r.path == path and all(r.query.get(k) == v for k, v in query.items()))

    # --- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> HTTPTestServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="HTTPTestServer", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- used by the handler -----------------------------------------------------------------

    def _take(self, name: str) -> bool:
        """Decrement a fault counter; True when the fault applies to this request."""
        with self._lock:
            if name == "fail":
                if self.fail_times > 0:
                    self.fail_times -= 1
                    return True
                return False
            if name == "drop":
                if self.drop_after is not None and self.drop_times > 0:
                    self.drop_times -= 1
                    return True
                return False
        raise ValueError(name)


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    owner: HTTPTestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        srv = self.owner
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with srv._lock:
            srv.requests.append(Request(self.command, path, query, dict(self.headers.items())))
        if srv.status_override is not None:
            return self._send(srv.status_override, b"forced status\n", {}, head)
        if srv._take("fail"):
            return self._send(srv.fail_status, b"injected failure\n", {}, head)
        for route in reversed(srv.routes):
            if route.path == path and all(query.get(k) == v for k, v in route.query.items()):
                return self._send(route.status, route.body, route.headers, head)
        file = self._file(path)
        if file is None:
            return self._send(404, b"not found\n", {}, head)
        self._send_file(file, head)

    def _file(self, path: str) -> Path | None:
        root = self.owner.root
        if root is None:
            return None
        candidate = (root / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(root.resolve()) or not candidate.is_file():
            return None
        return candidate

    def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_file(self, file: Path, head: bool) -> None:
        srv = self.owner
        data = file.read_bytes()
        if srv.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        size = len(data)
        start, end = 0, size - 1
        m = _RANGE.match(self.headers.get("Range", ""))
        partial = m is not None and not srv.ignore_range
        if partial:
            assert m is not None
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start : end + 1]
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "none" if srv.ignore_range else "bytes")
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        limit = len(body)
        drop = srv._take("drop")
        if drop:
            assert srv.drop_after is not None
            limit = min(limit, srv.drop_after)
        for i in range(0, limit, srv.chunk):
            self.wfile.write(body[i : min(i + srv.chunk, limit)])
        if drop:
            # Promised Content-Length bytes but sent fewer: close, as a dropped connection would.
            self.close_connection = True
            try:
                self.wfile.flush()
                self.connection.shutdown(2)
            except OSError:  # the client may already have gone
                pass
