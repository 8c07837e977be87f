"""One downloader for every source: resumable, verified, atomic, polite.

    path = fetch("https://dumps.wikimedia.org/.../simplewiki-latest-pages-articles.xml.bz2",
                 "data/cache", sha256="…", size=…)

- ``http(s)://`` URLs stream into ``<cache>/<name>.part``; ``file://`` URLs and
  plain paths are used in place (verified when a hash or size is given, never copied).
- **Resume:** a ``.part`` left by an interrupted run is continued with an HTTP
  ``Range`` request. A server that ignores Range (200 instead of 206) gets a
  clean restart from byte 0.
- **Retries:** connection errors, timeouts, truncated bodies, 429 and 5xx are
  retried with exponential backoff (``backoff * 2**k`` seconds). The attempt
  counter resets whenever an attempt made progress, so a flaky link on a
  20 GB dump never runs out of retries while bytes keep arriving. 401, 403,
  404 and 410 fail at once, naming the URL: retrying cannot fix them.
- **Verification:** sha256 (hashed while streaming, no second pass) and size,
  when known. On a mismatch the partial file is deleted and the error shows
  both hashes.
- **Finish:** ``os.replace`` into the cache, so a file under its final name is
  always complete; a verified cached file is never downloaded again.
- Progress (pipeline/progress.py): a bar when stderr is a terminal, else a line every
  ``RNNLAB_PROGRESS_SECONDS``, in bytes of the Content-Length, with rate and ETA.

Bytes are fetched with ``Accept-Encoding: identity``: a server must not
gzip-encode a ``.gz`` on the wire (requests would silently decode it, and the
Range offsets would refer to the encoded stream).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import requests
from urllib3.exceptions import HTTPError as Urllib3Error

from pipeline.errors import DataError
from pipeline.io import atomic_open, fsync_dir, sha256_file
from pipeline.params import DownloadParams, sha256_hex
from pipeline.progress import Progress

logger = logging.getLogger(f"rnnlab.{__name__}")

USER_AGENT = "rnnlab/0.1 (research data pipeline; python-requests)"
CHUNK = 1 << 20
FATAL_STATUS = frozenset({401, 403, 404, 410})


def is_remote(url: str) -> bool:
    """True for http(s) URLs; False for ``file://`` URLs and plain paths."""
    return urlsplit(str(url)).scheme.lower() in ("http", "https")


def local_path(url: str) -> Path:
    """The path named by a ``file://`` URL or a plain path."""
    parts = urlsplit(str(url))
    if parts.scheme.lower() == "file":
        return Path(url2pathname(unquote(parts.path)))
    return Path(url)


def damaged_fix(url: str, path: str | Path, key: str) -> str:
    """What to do about a damaged or malformed input file, for the end of an error message.

    A downloaded copy can be fetched again; a local file cannot, and advising a download
    for it would send the user in circles. ``key``: the params key of the url.
    """
    if is_remote(url):
        return f"delete {path} and rerun to download it again, or check that {key} serves this dataset"
    return f"{path} is a local file: replace it with an intact copy of the dataset, or point {key} at one"


def cache_name(url: str, filename: str | None = None) -> str:
    """The file name a URL gets in the cache: ``filename``, or the URL's last path segment."""
    name = filename or unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        short = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
        if filename:
            raise DataError(f"{url}: cannot cache it as {filename!r}; give a plain file name")
        name = f"download-{short}"
    return name


def _verify(path: Path, url: str, sha256: str | None, size: int | None, *, digest: str | None = None) -> None:
    """Raise DataError unless ``path`` has the expected size and sha256 (those given)."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise DataError(
            f"{url}: expected {size} bytes, got {actual_size} ({path}); the file on the server changed "
            "or the transfer was corrupted: check `size` in params.yaml, then rerun"
        )
    if sha256 is not None:
        got = digest or sha256_file(path)
        if got != sha256:
            raise DataError(
                f"{url}: sha256 mismatch ({path}):\n  expected {sha256}\n  got      {got}\n"
                "the file on the server changed or the transfer was corrupted: check `sha256` in "
                "params.yaml (or the mirror), then rerun"
            )


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two processes never write the same ``.part``."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking, as before this existed
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class _Retry(Exception):
    """An attempt failed in a way that a later attempt may fix."""


def _sleep_for(attempt: int, backoff: float, response: requests.Response | None = None) -> float:
    delay = backoff * (2 ** (attempt - 1))
    if response is not None:  # honour Retry-After (seconds) when the server sends it, capped
        with contextlib.suppress(TypeError, ValueError):
            delay = max(delay, min(float(response.headers.get("Retry-After", "")), 60.0))
    return delay


class _Attempts:
    """The retry rule both GETs share: count failed attempts, give up past ``retries``, back off between."""

    def __init__(self, retries: int, backoff: float, sleep: Callable[[float], None]) -> None:
        self.retries, self.backoff, self.sleep = retries, backoff, sleep
        self.count = 0

    def failed(self, response: requests.Response | None, give_up: str, *, progressed: bool = False) -> None:
        """One more failure (a failure after progress counts as the first): sleep, or raise DataError(give_up)."""
        self.count = 1 if progressed else self.count + 1
        if self.count > self.retries:
            raise DataError(give_up) from None
        self.sleep(_sleep_for(self.count, self.backoff, response))


def request(
    url: str,
    *,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    retries: int = 5,
    timeout: float = 30.0,
    backoff: float = 1.0,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> requests.Response:
    """GET a small resource, retrying connection errors, timeouts, 429 and 5xx.

    Returns the final response whatever its status (the caller interprets 4xx,
    e.g. arXiv's 400 error feed); raises DataError when retries run out.
    """
    s = session or requests.Session()
    hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
    attempts = _Attempts(retries, backoff, sleep)
    while True:
        response: requests.Response | None = None
        try:
            response = s.get(url, params=params, headers=hdrs, timeout=timeout)
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retry(f"HTTP {response.status_code}")
            return response
        except (requests.ConnectionError, requests.Timeout, _Retry) as e:
            shown = response.url if response is not None else url
            give_up = f"{shown}: failed after {retries} retries ({_reason(e)}); check the address and your connection"
            attempts.failed(response, give_up + ", then rerun")


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 300 else text[:300] + "…"


def fetch(
    url: str,
    cache_dir: str | Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    filename: str | None = None,
    retries: int = 5,
    timeout: float = 30.0,
    backoff: float = 1.0,
    progress: bool | None = None,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Return a local, verified copy of ``url``, downloading (or resuming) only if needed.

    Args:
        url: ``http(s)://`` URL, ``file://`` URL or local path. Local files are
            returned in place after verification.
        cache_dir: where downloads live (``pipeline.paths.DOWNLOADS`` by default in
            the sources). Not a DVC output, so reruns never download again.
        sha256, size: expected content, when known. Checked on every download and
            whenever a cached file is used; a ``<name>.verified`` note (sha256, size,
            mtime) spares re-hashing a large file that has not changed since.
        filename: name in the cache; default, the URL's last path segment.
        retries: attempts without progress before giving up.
        timeout: seconds to connect, and to wait for each read.
        backoff: first retry delay in seconds; doubles each time (0 in tests).
        progress: True draws a bar, False shows nothing; default, a bar when stderr is a
            terminal, else a line every few seconds (pipeline/progress.py).
    """
    try:
        sha256 = sha256_hex(sha256.strip() if sha256 is not None else None)
    except ValueError as e:
        raise DataError(f"sha256 {e}") from None
    if not is_remote(url):
        path = local_path(url)
        if not path.is_file():
            raise DataError(f"{path}: no such file; set the source's url to a file, or to an http(s) URL")
        _verify(path, str(path), sha256, size)
        return path

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / cache_name(url, filename)
    part = dest.with_name(dest.name + ".part")
    with _lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file():
            try:
                if not _noted(dest, sha256):
                    _verify(dest, url, sha256, size)
                    _note(dest, sha256)
                elif size is not None:
                    _verify(dest, url, None, size)
                return dest
            except DataError:
                # A cached file that no longer matches (params changed, or it was damaged):
                # fetch it again rather than fail; the new download is verified in turn.
                dest.unlink()
        digest = _download(
            url,
            part,
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            sha256=sha256,
            progress=progress,
            session=session,
            sleep=sleep,
        )
        try:
            _verify(part, url, sha256, size, digest=digest)
        except DataError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        fsync_dir(dest.parent)
        _note(dest, sha256)
    return dest


def fetch_source(params: DownloadParams) -> Path:
    """``fetch`` of a source's download section (its url, cache_dir, sha256, size, retries, timeout)."""
    return fetch(
        params.url,
        params.cache_dir,
        sha256=params.sha256,
        size=params.size,
        retries=params.retries,
        timeout=params.timeout,
    )


def _note_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _note(dest: Path, sha256: str | None) -> None:
    """Record that ``dest``, as it is now (size, mtime), has this sha256."""
    if sha256 is None:
        return
    st = dest.stat()
    with atomic_open(_note_path(dest), "w", encoding="utf-8") as f:
        json.dump({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}, f)


def _noted(dest: Path, sha256: str | None) -> bool:
    """True when a note says ``dest``, unchanged since, has ``sha256`` (or none is expected)."""
    if sha256 is None:
        return True
    try:
        note = json.loads(_note_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    st = dest.stat()
    return note == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _download(
    url: str,
    part: Path,
    *,
    retries: int,
    timeout: float,
    backoff: float,
    sha256: str | None,
    progress: bool | None,
    session: requests.Session | None,
    sleep: Callable[[float], None],
) -> str | None:
    """Stream ``url`` into ``part`` (resuming it), and return its sha256 when one is expected."""
    s = session or requests.Session()
    attempts = _Attempts(retries, backoff, sleep)
    mode = None if progress is None else ("bar" if progress else "off")
    while True:
        have = part.stat().st_size if part.exists() else 0
        before = have
        response: requests.Response | None = None
        try:
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            if have:
                headers["Range"] = f"bytes={have}-"
            with s.get(url, headers=headers, stream=True, timeout=timeout) as response:
                status = response.status_code
                if status in FATAL_STATUS:
                    raise DataError(
                        f"{url}: HTTP {status} {response.reason}; the address is wrong or the file was "
                        "removed: fix the url in params.yaml"
                    )
                if status == 416 and have:
                    # Our partial is not a prefix the server can continue (the file shrank
                    # or changed): start over.
                    part.unlink()
                    raise _Retry("HTTP 416: the partial download does not fit the file; restarting")
                if status == 429 or status >= 500:
                    raise _Retry(f"HTTP {status} {response.reason}")
                if status not in (200, 206):
                    raise DataError(f"{url}: unexpected HTTP {status} {response.reason}")
                if status == 206:
                    start = _content_range_start(response)
                    if start != have:
                        part.unlink()
                        raise _Retry(f"server resumed at byte {start}, not {have}; restarting")
                    write = "ab"
                else:  # 200: a fresh download, or a server that ignored our Range
                    have = 0
                    write = "wb"
                length = response.headers.get("Content-Length")
                expected = have + int(length) if length and length.isdigit() else None
                hasher = _hasher(part, have) if sha256 is not None else None
                desc = f"download {cache_name(url)}"
                with (
                    Progress(desc, expected, unit="B", initial=have, logger=logger, mode=mode, leave=False) as shown,
                    open(part, write) as f,
                ):
                    for block in response.raw.stream(CHUNK, decode_content=False):
                        f.write(block)
                        if hasher is not None:
                            hasher.update(block)
                        have += len(block)
                        shown.update(len(block))
                    f.flush()
                    os.fsync(f.fileno())
                if expected is not None and have != expected:
                    raise _Retry(f"connection closed after {have} of {expected} bytes")
                return hasher.hexdigest() if hasher is not None else None
        except (requests.ConnectionError, requests.Timeout, _Retry, Urllib3Error) as e:
            # Urllib3Error: a body cut short surfaces as urllib3's ProtocolError (IncompleteRead)
            # when read through response.raw; requests only wraps it for iter_content.
            now = part.stat().st_size if part.exists() else 0
            give_up = (
                f"{url}: download failed after {retries} retries without progress ({_reason(e)}); "
                f"{now} bytes are kept in {part}: rerun to resume"
            )
            attempts.failed(response, give_up, progressed=now > before)  # progress resets the count


def _content_range_start(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Range", "")  # "bytes 100-199/200"
    with contextlib.suppress(ValueError, IndexError):
        return int(value.split()[1].split("-")[0])
    return None


def _hasher(part: Path, have: int) -> Any:
    """A sha256 already fed with the first ``have`` bytes of the partial file."""
    h = hashlib.sha256()
    if have:
        with open(part, "rb") as f:
            remaining = have
            while remaining:
                block = f.read(min(CHUNK, remaining))
                if not block:
                    break
                h.update(block)
                remaining -= len(block)
    return h
