"""Local plain-text corpora: a file or a folder of files, one document per line or per file.

Text must be UTF-8. By default an invalid byte is an error that names the
file and the byte offset; ``errors: replace`` substitutes U+FFFD instead.
Blank lines are not documents.

When ``valid`` or ``test`` is not given, a ``holdout`` fraction of the train
documents is moved there. The choice hashes (seed, document number), so it is
the same on every machine and does not depend on how the files are batched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.errors import DataError
from pipeline.params import TextParams

CHUNK_BYTES = 8 << 20  # read files in slices of this size: memory stays bounded


def files_of(path: Path, glob: str) -> list[Path]:
    """``path`` itself, or the files under it matching ``glob``, sorted."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob(glob) if p.is_file())
        if not files:
            raise DataError(f"{path}: no files match {glob!r}; set corpus.text.glob")
        return files
    raise DataError(f"{path}: no such file or directory; set corpus.text paths to your corpus")


def decode_utf8(data: bytes, path: Path, offset: int, errors: str) -> str:
    """``data`` as UTF-8; invalid bytes are a DataError naming ``path`` and the byte offset (``errors="strict"``)."""
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: invalid UTF-8 at byte offset {offset + e.start} ({data[e.start : e.start + 4]!r}); "
            "fix the file, or set corpus.text.errors: replace"
        ) from None


def iter_lines(path: Path, errors: str = "strict") -> Iterator[tuple[int, str]]:
    """(line number, line) for each non-blank line of a file, decoded in bounded slices."""
    lineno = 0
    offset = 0
    # The unfinished last line, in pieces: joined once its newline comes. Re-joining and
    # re-searching it on every slice was quadratic in the length of a line without newlines.
    tail: list[bytes] = []
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK_BYTES)
            if chunk:
                cut = chunk.rfind(b"\n") + 1  # decode whole lines only, so a character never splits
                if not cut:
                    tail.append(chunk)
                    continue
                data = b"".join([*tail, chunk[:cut]])
                tail = [chunk[cut:]]
            else:
                data = b"".join(tail)
                tail = []
            if data:
                for line in decode_utf8(data, path, offset, errors).split("\n"):
                    lineno += 1
                    line = line.rstrip("\r")
                    if line.strip():
                        yield lineno, line
                lineno -= 1  # split() yields one extra (empty) piece after the last newline
                offset += len(data)
            if not chunk:
                return


def iter_documents(path: Path, params: TextParams) -> Iterator[tuple[str, str]]:
    """(source id, text) for every document under ``path``."""
    for file in files_of(path, params.glob):
        if params.unit == "file":
            text = decode_utf8(file.read_bytes(), file, 0, params.errors)
            if text.strip():
                yield str(file), text
        else:
            for lineno, line in iter_lines(file, params.errors):
                yield f"{file}:{lineno}", line


def holdout_draw(seed: int, index: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) number per document index, from a fixed hash (splitmix64)."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def holdout_splits(
    seed: int, index: np.ndarray, holdout: float, names: Sequence[str] = ("valid", "test")
) -> np.ndarray:
    """The split of each document: ``names[k]`` where its draw falls in [k * holdout, (k + 1) * holdout),
    else "train". Every source carves its held-out splits with this one rule."""
    u = holdout_draw(seed, index)
    split = np.full(len(u), "train", dtype=object)
    for k, name in enumerate(names):
        split[(u >= k * holdout) & (u < (k + 1) * holdout)] = name
    return split


def text_table(split: np.ndarray | list[str], ids: list[str], texts: list[str]) -> pa.Table:
    """One batch of this source's documents: split, text and source_id columns."""
    return pa.table(
        {
            "split": pa.array(split, pa.string()),
            "text": pa.array(texts, pa.string()),
            "source_id": pa.array(ids, pa.string()),
        }
    )


def _batches(docs: Iterator[tuple[str, str]], size: int) -> Iterator[tuple[list[str], list[str]]]:
    ids: list[str] = []
    texts: list[str] = []
    for source_id, text in docs:
        ids.append(source_id)
        texts.append(text)
        if len(texts) == size:
            yield ids, texts
            ids, texts = [], []
    if texts:
        yield ids, texts


def read(params: TextParams, batch: int = 10_000) -> Iterator[pa.Table]:
    """The corpus as document-table batches: train (minus holdouts), then valid, then test."""
    carve = [s for s in ("valid", "test") if getattr(params, s) is None]
    seen = 0
    for ids, texts in _batches(iter_documents(Path(params.train), params), batch):
        split = holdout_splits(params.seed, np.arange(seen, seen + len(texts)), params.holdout, carve)
        seen += len(texts)
        yield text_table(split, ids, texts)
    for name in ("valid", "test"):
        path = getattr(params, name)
        if path is not None:
            for ids, texts in _batches(iter_documents(Path(path), params), batch):
                yield text_table([name] * len(texts), ids, texts)
