"""Wikipedia dump files: decompression (bz2, gzip or plain) and the byte ranges of multistream dumps.

Reading. ``open_dump`` sniffs the format from the file's first bytes, not its
name. bz2 is decompressed in a separate ``bzip2 -dc`` process when that program
exists (else in a Python thread: ``bz2`` releases the GIL), so it overlaps with
parsing and markup stripping on the other core. ``open_dump_at`` also tells how far
into the (compressed) file the decompressor has read: every decoder reads one file
object this process opened (the bzip2 process as its stdin, sharing its offset), so
its position is the progress through the dump.

Multistream dumps (``…-multistream.xml.bz2`` with ``…-multistream-index.txt.bz2``)
are independent bz2 streams of ~100 pages each. ``stream_ranges`` yields their
byte ranges from the index, and ``decompress_streams`` turns one range back into
XML (``pipeline.sources.wikipedia.pages_in_range`` parses it).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import os
import queue
import shutil
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from pipeline.errors import DataError, shown

READ_CHUNK = 1 << 20
INDEX_LINE_BYTES = 1 << 16  # a multistream index line is offset:id:title, and a title is at most 255 bytes
# The fix for a damaged dump when the caller does not say where it came from (read() does).
REPLACE = "replace it with an intact copy of the dump"
# Raised by the bz2/gzip decompressors: a truncated stream (EOFError), a bad header or CRC
# (OSError, gzip.BadGzipFile), damaged deflate data (zlib.error, not an OSError).
DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error)


def reason(e: BaseException) -> str:
    """An exception's message for an error line, cut to 200 characters."""
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


class _Bzip2Process(io.RawIOBase):
    """The output of ``bzip2 -dc < path``: decompression on another core, in another process.

    ``source`` is ``path`` opened by the caller: bzip2 reads it as its stdin, which shares the
    file offset with this process, where ``os.lseek`` reads it as the progress.
    """

    def __init__(self, path: Path, binary: str, source: IO[bytes], fix: str = REPLACE) -> None:
        self.path = path
        self.fix = fix
        self._proc = subprocess.Popen(
            [binary, "-dc"], stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        assert self._proc.stdout is not None
        self._out = self._proc.stdout
        # A 1 MB pipe (Linux; default 64 KB) means fewer wake-ups between the two processes.
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            fcntl.fcntl(self._out.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._out.readinto(buffer)
        if not n:
            self.check()
        return n or 0

    def check(self) -> None:
        """Raise DataError if bzip2 failed (a damaged file); call at the end of the data."""
        code = self._proc.wait()
        if code != 0:
            err = self._proc.stderr.read().decode("utf-8", "replace") if self._proc.stderr else ""
            err = reason(RuntimeError(err.strip().split("\n")[0]))  # bzip2's first line says what is wrong
            raise DataError(
                f"{self.path}: bzip2 failed (exit {code}: {err}); the file is damaged or truncated: {self.fix}"
            )

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()  # stopped early (max_articles, or an error): no need to finish
        self._proc.wait()
        self._out.close()
        if self._proc.stderr:
            self._proc.stderr.close()
        super().close()


class _Bz2Thread(io.RawIOBase):
    """Python's bz2 in a background thread (it releases the GIL), when there is no bzip2 program."""

    def __init__(self, path: Path, source: IO[bytes], fix: str = REPLACE) -> None:
        self.path = path
        self.source = source  # path, opened by the caller
        self.fix = fix
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._pending = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._run, name="bz2-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with bz2.open(self.source, "rb") as f:
                while not self._stop.is_set():
                    block = f.read(READ_CHUNK)
                    if not block:
                        break
                    self._put(block)
        except (*DECOMPRESSION_ERRORS, ValueError) as e:  # a damaged stream: reported by readinto
            self._error = e
        finally:
            self._put(None)

    def _put(self, item: bytes | None) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.1)
                return

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            if self._done:
                return 0
            block = self._queue.get()
            if block is None:
                self._done = True
                if self._error is not None:
                    raise DataError(
                        f"{self.path}: bz2 decompression failed ({reason(self._error)}); the file is damaged or "
                        f"truncated: {self.fix}"
                    )
                return 0
            self._pending = memoryview(block)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        super().close()


@contextlib.contextmanager
def open_dump(path: str | Path, *, decoder: str = "auto", fix: str = REPLACE) -> Iterator[IO[bytes]]:
    """The decompressed bytes of a dump: bz2, gzip or plain XML, sniffed from the first bytes.

    Args:
        decoder: for bz2, ``"bzip2"`` (a ``bzip2 -dc`` process), ``"thread"``
            (Python's bz2 in a thread), ``"inline"`` (Python's bz2 in this thread),
            or ``"auto"``: bzip2 when the program is installed, else thread.
        fix: what to do about a damaged file, for error messages.
    """
    with open_dump_at(path, decoder=decoder, fix=fix) as (stream, _position):
        yield stream


@contextlib.contextmanager
def open_dump_at(
    path: str | Path, *, decoder: str = "auto", fix: str = REPLACE
) -> Iterator[tuple[IO[bytes], Callable[[], int]]]:
    """``open_dump``, and a function that says how many bytes of the file itself (compressed) the
    decompressor has read so far: the progress through the dump."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; set corpus.wikipedia.url to a dump")
    magic = _magic(path)
    source = open(path, "rb")  # noqa: SIM115 (closed in the finally below)
    raw: io.RawIOBase | IO[bytes]
    try:
        if magic.startswith(b"BZh"):
            binary = shutil.which("bzip2") if decoder in ("auto", "bzip2") else None
            if decoder == "bzip2" and binary is None:
                raise DataError("the bzip2 program is not installed; use another decoder")
            if binary is not None:
                raw = _Bzip2Process(path, binary, source, fix)
            elif decoder == "inline":
                raw = bz2.open(source, "rb")  # noqa: SIM115 (closed in the finally below)
            else:
                raw = _Bz2Thread(path, source, fix)
        elif magic.startswith(b"\x1f\x8b"):
            raw = gzip.open(source, "rb")  # noqa: SIM115 (closed in the finally below)
        else:
            raw = source
    except BaseException:
        source.close()
        raise

    def position() -> int:
        # The file offset, which the bzip2 process moves too (its stdin); a closed file read it all.
        return path.stat().st_size if source.closed else os.lseek(source.fileno(), 0, os.SEEK_CUR)

    try:
        yield (io.BufferedReader(raw, READ_CHUNK) if isinstance(raw, io.RawIOBase) else raw), position
    finally:
        raw.close()
        source.close()


# --- multistream -------------------------------------------------------------------------


def stream_ranges(index: str | Path, dump: str | Path, fix: str = REPLACE) -> Iterator[tuple[int, int]]:
    """Byte ranges ``(start, end)`` of the page streams of a multistream dump, in order.

    ``index`` holds lines ``offset:page_id:title`` (bz2-compressed or plain), one per page;
    the pages of one bz2 stream share its offset. The last range ends at the end of
    the dump (its trailing ``</mediawiki>`` stream is harmless to ``pages_in_range``).
    ``fix``: what to do about a damaged index, for error messages.
    """
    index, dump = Path(index), Path(dump)
    size = dump.stat().st_size
    prev: int | None = None
    opener = bz2.open if _magic(index).startswith(b"BZh") else open
    lineno = 0
    try:
        with opener(index, "rb") as f:
            # readline with a limit: a line never holds more than INDEX_LINE_BYTES in memory.
            while raw := f.readline(INDEX_LINE_BYTES):
                lineno += 1
                line = raw.rstrip(b"\r\n")
                if len(raw) == INDEX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise DataError(
                        f"{index}:{lineno}: a line of over {INDEX_LINE_BYTES} bytes; a multistream index has "
                        f"offset:page_id:title per line: {fix}"
                    )
                if not line:
                    continue
                offset, _, rest = line.partition(b":")
                page_id, sep, _ = rest.partition(b":")
                # bytes.isdigit is ASCII-only; at most 19 digits, so int() stays cheap and fits int64.
                if not (offset.isdigit() and page_id.isdigit() and sep) or max(len(offset), len(page_id)) > 19:
                    raise DataError(f"{index}:{lineno}: expected offset:page_id:title, got {shown(line[:80])}; {fix}")
                start = int(offset)
                if prev is not None and start == prev:
                    continue
                if (prev is not None and start < prev) or start >= size:
                    raise DataError(
                        f"{index}:{lineno}: stream offset {start} is out of order or past the end of {dump} "
                        f"({size} bytes); the index does not belong to this dump"
                    )
                if prev is not None:
                    yield prev, start
                prev = start
    except DECOMPRESSION_ERRORS as e:
        raise DataError(
            f"{index}:{lineno + 1}: decompression failed ({reason(e)}); the index is damaged or truncated: {fix}"
        ) from None
    if prev is None:
        raise DataError(f"{index}: no index lines; is it the …-multistream-index.txt.bz2 of {dump.name}?")
    yield prev, size


def decompress_streams(data: bytes, where: str) -> bytes:
    """Decompress one or more whole bz2 streams laid end to end."""
    out = []
    while data:
        d = bz2.BZ2Decompressor()
        try:
            out.append(d.decompress(data))
        except OSError as e:
            raise DataError(f"{where}: not a bz2 stream ({e}); the range or the index is wrong") from None
        if not d.eof:
            raise DataError(f"{where}: the bz2 stream is cut short; the range or the index is wrong")
        data = d.unused_data
    return b"".join(out)
