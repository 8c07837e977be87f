"""Atomic file output and small binary formats shared by every stage.

Every writer here produces either the complete file or nothing: data goes to
a temporary sibling first and is renamed into place only once it is whole, so
an interrupted stage never leaves a half-written output for DVC to hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in bounded chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which would race
# with files being created by other threads.
_UMASK = _read_umask()


def _publish_mode(path: str | Path, directory: bool = False) -> None:
    # mkstemp/mkdtemp create private (0600/0700) entries; outputs should carry the
    # usual permissions, as if created with open() under the user's umask.
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


def fsync_dir(path: Path) -> None:
    # A rename is durable only once its directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path``; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    _publish_mode(tmp)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as stable, human-readable JSON (sorted keys), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``path`` on success.

    The previous contents of ``path`` (if any) survive an exception untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    _publish_mode(tmp, directory=True)
    try:
        yield tmp
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, trash / path.name)
            os.replace(tmp, path)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class NpyAppender:
    """Stream rows into a ``.npy`` file whose length is unknown up front.

    The header is written with room to spare and rewritten with the final
    shape on ``close``, so the result is a plain ``.npy`` that ``np.load``
    (and ``mmap_mode="r"``) reads, built in bounded memory.

    >>> with NpyAppender(path, np.uint16, row_shape=(36,)) as out:
    ...     out.append(block)          # block: (n, 36) uint16
    """

    _HEADER_LEN = 128  # bytes; multiple of 64 as the format asks, room for any shape

    def __init__(self, path: str | Path, dtype: np.dtype | type, row_shape: tuple[int, ...] = ()):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(tmp)
        _publish_mode(tmp)
        self._f = os.fdopen(fd, "wb")
        self._f.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        desc = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (rows, *self.row_shape),
        }
        body = repr(desc).encode("latin1")
        pad = self._HEADER_LEN - 10 - len(body) - 1
        assert pad >= 0, f"npy header for shape {desc['shape']} does not fit"
        header = body + b" " * pad + b"\n"
        return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: row shape {block.shape[1:]} != {self.row_shape}")
        self._f.write(block.tobytes())
        self.rows += block.shape[0] if block.ndim else 1

    def close(self) -> None:
        """Finish the header and move the file into place."""
        self._f.seek(0)
        self._f.write(self._header(self.rows))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> NpyAppender:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
