"""Local plain-text corpora: a file or a folder of files, one document per line or per file.

Text must be UTF-8 (a leading byte-order mark is dropped). By default an invalid
byte is an error that names the file and the byte offset; ``errors: replace``
substitutes U+FFFD instead. Blank lines are not documents.

When ``valid`` or ``test`` is not given, a ``holdout`` fraction of the train
documents is moved there. The choice hashes (seed, document number), so it is
the same on every machine and does not depend on how the files are batched.
When that draw leaves train or such a split without a document (a book on one
line, a five-line file), they are held out by characters instead: the tail of the
train text, ``holdout`` of its characters per split, cut at whitespace when
there is some near the cut.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.errors import DataError
from pipeline.params import TextParams
from pipeline.progress import Progress, file_bytes

logger = logging.getLogger(f"rnnlab.{__name__}")
Advance = Callable[[int], object] | None  # told how many more bytes of the files were read

BOM = "\ufeff"  # a byte-order mark some editors put first in a UTF-8 file: not text, so dropped
CHUNK_BYTES = 8 << 20  # read files in slices of this size: memory stays bounded
DECIDE_BATCH = 1000  # documents per hash draw while deciding how to hold out
CUT_WINDOW = 200  # a cut by characters moves at most this far forward to the next whitespace
_SPACE = re.compile(r"\s")
_SPACES = re.compile(r"\s+")


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


def iter_lines(path: Path, errors: str = "strict", advance: Advance = None) -> Iterator[tuple[int, str]]:
    """(line number, line) for each non-blank line of a file, decoded in bounded slices (each told to ``advance``)."""
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
                if advance is not None:
                    advance(len(data))
                text = decode_utf8(data, path, offset, errors)
                if offset == 0:
                    text = text.removeprefix(BOM)
                for line in text.split("\n"):
                    lineno += 1
                    line = line.rstrip("\r")
                    if line.strip():
                        yield lineno, line
                lineno -= 1  # split() yields one extra (empty) piece after the last newline
                offset += len(data)
            if not chunk:
                return


def iter_documents(path: Path, params: TextParams, advance: Advance = None) -> Iterator[tuple[str, str]]:
    """(source id, text) for every document under ``path``; ``advance`` is told the bytes read."""
    for file in files_of(path, params.glob):
        if params.unit == "file":
            data = file.read_bytes()
            if advance is not None:
                advance(len(data))
            text = decode_utf8(data, file, 0, params.errors).removeprefix(BOM)
            if text.strip():
                yield str(file), text
        else:
            for lineno, line in iter_lines(file, params.errors, advance):
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


def holdout_mode(params: TextParams, carve: Sequence[str]) -> tuple[str, int]:
    """How the carved splits are held out, and the train characters when that is by characters.

    "documents" when the hash draw leaves at least one document in train and in every carved
    split (it reads only until it has), else "characters" after counting every train character.
    With nothing to carve, a zero holdout or no documents it stays "documents", so that the
    corpus stage's split check names what is missing; too few characters are a DataError.
    """
    if not carve or params.holdout == 0:
        return "documents", 0
    wanted = {"train", *carve}
    seen = chars = 0
    for _, texts in _batches(iter_documents(Path(params.train), params), DECIDE_BATCH):
        split = holdout_splits(params.seed, np.arange(seen, seen + len(texts)), params.holdout, carve)
        wanted.difference_update(split.tolist())
        if not wanted:
            return "documents", 0
        seen += len(texts)
        chars += sum(map(len, texts))
    if seen == 0:
        return "documents", 0
    if chars - len(carve) * _held_chars(chars, params.holdout) < 1:
        raise DataError(
            f"{params.train}: {chars} characters in {seen} document{'s' if seen != 1 else ''} are too few to hold "
            f"out {' and '.join(carve)} (corpus.text.holdout {params.holdout} of the characters each, at least "
            "one) and keep some for train; give a longer text, or the held-out splits their own files "
            "(rnnlab recipe --valid/--test, or corpus.text.valid/test)"
        )
    return "characters", chars


def _held_chars(chars: int, holdout: float) -> int:
    """Characters in each split held out by characters: ``holdout`` of them, at least one."""
    return max(1, round(chars * holdout))


def word_cut(text: str, pos: int, limit: int) -> int:
    """Where to cut ``text`` at or after ``pos`` (0 < pos < len(text), pos <= limit) so that no word is split.

    The cut moves forward past the next run of whitespace when that run starts within
    CUT_WINDOW characters and ends by ``limit``; else it is ``pos`` exactly (Chinese and
    Japanese put no spaces between words, and a long token has no better place).
    """
    if text[pos - 1].isspace() and (pos == len(text) or not text[pos].isspace()):
        return pos  # already at the start of a word
    m = _SPACE.search(text, pos, min(len(text), pos + CUT_WINDOW + 1))
    if m is None:
        return pos
    end = _SPACES.match(text, m.start()).end()  # the whole run, however far it goes
    return end if end <= limit else pos


def character_pieces(
    params: TextParams, carve: Sequence[str], chars: int, advance: Advance = None
) -> Iterator[tuple[str, str, str]]:
    """(split, source id, text) of the train documents cut by characters.

    The first ``chars - k * held`` characters stay train and the tail is cut into the
    ``k`` carved splits in order, ``held`` characters each (nanoGPT's prepare.py splits
    a text this way). A document that straddles a cut becomes two, each with its
    character range in the source id, e.g. ``file.txt:12[0:9000]``. Whitespace-only
    pieces are dropped, as blank lines are.
    """
    held = _held_chars(chars, params.holdout)
    names = ["train", *carve]
    cuts = [chars - (len(carve) - i) * held for i in range(len(carve))]  # where split i + 1 starts
    ends = [*cuts[1:], chars]  # the cut after each cut: a cut stops before it, leaving one character
    s = 0  # the split of the characters being read
    offset = 0  # characters of the documents before this one
    for source_id, text in iter_documents(Path(params.train), params, advance):
        n = len(text)
        pieces: list[tuple[int, int, int]] = []  # (split, start, end)
        start = 0
        while s < len(cuts) and cuts[s] < offset + n:
            pos = cuts[s] - offset
            if pos > start:
                cut = word_cut(text, pos, min(n, ends[s] - offset - 1))
                pieces.append((s, start, cut))
                start = cut
            s += 1
        if start < n:
            pieces.append((s, start, n))
        offset += n
        for k, a, b in pieces:
            piece = text[a:b]
            if piece.strip():
                yield names[k], (source_id if (a, b) == (0, n) else f"{source_id}[{a}:{b}]"), piece


def read(params: TextParams, batch: int = 10_000) -> Iterator[pa.Table]:
    """The corpus as document-table batches: train (minus holdouts), then valid, then test.

    Held-out splits go by documents (a hash draw per document); when that leaves train or a
    carved split without a document, by characters instead (``character_pieces``), and then
    every table says so in its schema metadata: ``holdout_by: characters``.
    """
    carve = [s for s in ("valid", "test") if getattr(params, s) is None]
    mode, chars = holdout_mode(params, carve)
    given = [Path(p) for p in (params.train, params.valid, params.test) if p is not None]
    total = file_bytes(f for path in given for f in files_of(path, params.glob))
    with Progress("corpus text", total, unit="B", logger=logger) as progress:
        if mode == "documents":
            yield from _document_tables(params, carve, batch, progress.update)  # the rule every source shares
            return
        for table in _character_tables(params, carve, chars, batch, progress.update):
            yield table.replace_schema_metadata({"holdout_by": mode})


def _document_tables(params: TextParams, carve: Sequence[str], batch: int, advance: Advance) -> Iterator[pa.Table]:
    seen = 0
    for ids, texts in _batches(iter_documents(Path(params.train), params, advance), batch):
        split = holdout_splits(params.seed, np.arange(seen, seen + len(texts)), params.holdout, carve)
        seen += len(texts)
        yield text_table(split, ids, texts)
    yield from _given_tables(params, batch, advance)


def _character_tables(
    params: TextParams, carve: Sequence[str], chars: int, batch: int, advance: Advance
) -> Iterator[pa.Table]:
    rows: tuple[list[str], list[str], list[str]] = ([], [], [])
    for row in character_pieces(params, carve, chars, advance):
        for column, value in zip(rows, row):
            column.append(value)
        if len(rows[0]) == batch:
            yield text_table(*rows)
            rows = ([], [], [])
    if rows[0]:
        yield text_table(*rows)
    yield from _given_tables(params, batch, advance)


def _given_tables(params: TextParams, batch: int, advance: Advance) -> Iterator[pa.Table]:
    """The documents of the valid and test files that are given."""
    for name in ("valid", "test"):
        path = getattr(params, name)
        if path is not None:
            for ids, texts in _batches(iter_documents(Path(path), params, advance), batch):
                yield text_table([name] * len(texts), ids, texts)
