"""Taskar's OCR letters (``letter.data``): handwritten words as image sequences.

    corpus:
      source: ocr
      ocr:
        url: https://ai.stanford.edu/~btaskar/ocr/letter.data.gz
        valid_folds: [8]
        test_folds: [9]

Input: gzip or plain TSV (sniffed from the first bytes), one letter per line::

    id  letter  next_id  word_id  position  fold  p_0 … p_127

``next_id`` is the id of the word's next letter (-1 at its end), ``fold`` 0-9 the
cross-validation fold, and the 128 pixels (0 or 1) a 16×8 image, row-major. A
trailing tab, as in the real file, is allowed. Lines are sorted by id and
chained through ``next_id`` into words (the real set: 52,152 letters, 6,877
words, at most 14 letters long).

Every malformed line fails with its line number and what to do: a wrong field
count, a non-integer field or one beyond int64, a letter that is not one
character, a pixel that is not 0 or 1, a duplicate id, a ``next_id`` that names no
letter or a letter already claimed, a cycle, a word whose letters disagree on
word_id or fold, a line longer than ``max_line_mb``, a damaged or truncated gzip
stream. There is no skip policy: a damaged file is not this dataset.

Memory is bounded by the data: the letters are kept as flat arrays (~170 bytes
each, 128 of them pixels), and the padded rows are built one batch at a time, each
holding at most ``BATCH_BYTES`` of pixels. A word longer than ``max_length`` is an
error naming it; with ``max_length: null`` (pad to the longest word) a word longer
than ``length_cap`` (64; Taskar's longest has 14 letters) is one too. Before these
caps, one 1,000-letter word among 1,000 short ones padded every row to 1,000
letters and took 1.5 GB.

Output: still a document table (so ``corpus.source: ocr`` runs through the
corpus stage and the tokenizers read ``text``), one row per word, with the
image sequence beside it. ``L`` is ``max_length``, or the longest word:

============ ============================= ===========================================
column       type                          meaning
============ ============================= ===========================================
split        string                        by fold: ``valid_folds``, ``test_folds``, else train
text         string                        the word's letters, e.g. ``ommanding``
source_id    string                        the word_id
fold         int8                          0-9
length       int16                         letters in the word (≤ L)
letters      fixed_size_list<string, L>    one per position, padded with ""
pixels       fixed_size_list<uint8, L*128> L images of 16×8, row-major, zero-padded
mask         fixed_size_list<bool, L>      true at the word's real positions
============ ============================= ===========================================

To get arrays: ``np.asarray(t["pixels"].combine_chunks().values).reshape(-1, L, 16, 8)``,
``np.asarray(t["mask"].combine_chunks().values).reshape(-1, L)``.

The dataset and its sequence-labelling task are those of Abrahams, Hafner,
Erwitt & Scarpinelli, *TensorFlow for Machine Intelligence* (Bleeding Edge
Press, 2016), chapter 6.
"""

from __future__ import annotations

import gzip
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.download import damaged_fix, fetch_source
from pipeline.errors import DataError, ParamsError, shown
from pipeline.params import OcrParams

PIXELS = 128
HEIGHT, WIDTH = 16, 8
FIELDS = 6 + PIXELS
BATCH = 5000  # words per document-table batch at most ...
# ... and at most this many bytes of padded pixels (words x length x 128): those of the real
# file's batches (5,000 x 14 x 128 = 8.96 MB), so no padded length makes a batch heavier than
# the real data's. Writing nested pixel lists to Parquet takes ~30x this in RSS (~300 MB).
BATCH_BYTES = 9 << 20
INT64 = (-(2**63), 2**63 - 1)
# The fix for a damaged file when the caller does not say where it came from (read() does).
REPLACE = "replace it with an intact copy of letter.data"


@dataclass
class Letters:
    """All n letters of a file, in file order: parallel arrays.

    ``chars`` and ``pixels`` have one more row, at index -1: the padding ("" and a blank
    image), so that a gather with -1 for "past the word's end" needs no mask.
    """

    ids: np.ndarray  # (n,) int64
    chars: np.ndarray  # (n + 1,) object: one-character str, then ""
    next_ids: np.ndarray  # (n,) int64
    word_ids: np.ndarray  # (n,) int64
    folds: np.ndarray  # (n,) int8
    pixels: np.ndarray  # (n + 1, 128) uint8, the last row zeros
    lines: np.ndarray  # (n,) int64, 1-based line numbers


@dataclass
class Word:
    word_id: int
    fold: int
    rows: list[int]  # indices into Letters, in reading order


def _lines(path: Path, max_bytes: int, key: str, fix: str) -> Iterator[bytes]:
    """The lines of a gzip or plain file, each at most ``max_bytes`` (newline aside) in memory."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            # readline with a limit (+2 for "\r\n"): a line without a newline never fills memory.
            while line := f.readline(max_bytes + 2):
                lineno += 1
                if len(line.rstrip(b"\r\n")) > max_bytes:
                    raise DataError(
                        f"{path}:{lineno}: a line of over {max_bytes} bytes (a real one has ~270); "
                        f"this is not Taskar's letter.data, or {key}.max_line_mb is too small: raise it, or {fix}"
                    )
                yield line
    except (EOFError, OSError, zlib.error) as e:  # truncated stream, bad header or CRC, damaged deflate data
        reason = str(e) or type(e).__name__
        reason = reason if len(reason) <= 160 else reason[:159] + "…"
        raise DataError(
            f"{path}:{lineno + 1}: gzip decompression failed ({reason}); the file is damaged or truncated: {fix}"
        ) from None


def _ints(fields: list[bytes], where: str, lineno: int, fix: str) -> tuple[int, int, int, int]:
    """id, next_id, word_id and fold of a line; position is checked for form only (the chain gives the order)."""
    try:
        values = int(fields[0]), int(fields[2]), int(fields[3]), int(fields[4]), int(fields[5])
    except ValueError:
        values = None
    if values is not None and all(INT64[0] <= v <= INT64[1] for v in values):
        return values[0], values[1], values[2], values[4]
    for i, name in ((0, "id"), (2, "next_id"), (3, "word_id"), (4, "position"), (5, "fold")):
        raw = fields[i].strip()
        digits = raw[1:] if raw[:1] in (b"-", b"+") else raw
        if digits.isdigit() and (len(digits) > 19 or not INT64[0] <= int(raw) <= INT64[1]):
            raise DataError(
                f"{where}:{lineno}: {name} {shown(raw.decode('ascii'), 60)} does not fit a 64-bit integer; "
                f"this is not Taskar's letter.data, or it is damaged: {fix}"
            )
    raise DataError(
        f"{where}:{lineno}: id, next_id, word_id, position and fold must be integers; "
        f"this is not Taskar's letter.data, or it is damaged: {fix}"
    )


def parse(lines: Iterable[bytes], where: str, fix: str = REPLACE) -> Letters:
    """Parse letter lines (bytes, with or without newlines); fail at the first bad one."""
    # Typed arrays, not lists of Python ints and bytes: parsing peaks at ~310 bytes per letter
    # instead of ~580 (tracemalloc, 52,152 letters); ~170 are kept, 128 of them pixels.
    ids, nxt, words, linenos = array("q"), array("q"), array("q"), array("q")
    folds = bytearray()
    pix = bytearray()
    chars: list[str] = []
    damaged = f"this is not Taskar's letter.data, or it is damaged: {fix}"
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        if line.endswith(b"\t"):  # the real file ends every line with a tab
            line = line[:-1]
        fields = line.split(b"\t")
        if len(fields) != FIELDS:
            raise DataError(
                f"{where}:{lineno}: expected {FIELDS} tab-separated fields (6 + {PIXELS} pixels), got "
                f"{len(fields)}; {damaged}"
            )
        lid, next_id, word_id, fold = _ints(fields, where, lineno, fix)
        char = fields[1].decode("utf-8", "replace")
        if len(char) != 1 or char.isspace():
            raise DataError(f"{where}:{lineno}: the letter must be one character, got {shown(char, 40)}; {damaged}")
        if not 0 <= fold <= 9:
            raise DataError(f"{where}:{lineno}: fold must be 0-9, got {fold}; {damaged}")
        packed = b"".join(fields[6:])
        # 128 one-character fields of 0/1: the joined length and the shortest field pin each to one byte.
        if len(packed) != PIXELS or packed.strip(b"01") or min(map(len, fields[6:])) != 1:
            bad = next(i for i, f in enumerate(fields[6:]) if f not in (b"0", b"1"))
            got = fields[6 + bad].decode(errors="replace")
            raise DataError(f"{where}:{lineno}: pixel {bad} must be 0 or 1, got {shown(got, 40)}; {damaged}")
        ids.append(lid)
        chars.append(char)
        nxt.append(next_id)
        words.append(word_id)
        folds.append(fold)
        pix += packed
        linenos.append(lineno)
    if not ids:
        raise DataError(f"{where}: no letters; is this Taskar's letter.data? {fix}")
    n = len(ids)
    pixels = np.zeros((n + 1, PIXELS), dtype=np.uint8)
    np.subtract(np.frombuffer(pix, dtype=np.uint8).reshape(n, PIXELS), np.uint8(ord("0")), out=pixels[:n])
    del pix
    grid_chars = np.empty(n + 1, dtype=object)
    grid_chars[:n] = chars
    grid_chars[n] = ""
    return Letters(
        ids=np.frombuffer(ids, dtype=np.int64).copy(),
        chars=grid_chars,
        next_ids=np.frombuffer(nxt, dtype=np.int64).copy(),
        word_ids=np.frombuffer(words, dtype=np.int64).copy(),
        folds=np.frombuffer(folds, dtype=np.int8).copy(),
        pixels=pixels,
        lines=np.frombuffer(linenos, dtype=np.int64).copy(),
    )


def chain(letters: Letters, where: str, fix: str = REPLACE) -> list[Word]:
    """Follow next_id from every first letter; words in order of their first letter's id."""
    damaged = f"this is not Taskar's letter.data, or it is damaged: {fix}"
    order = np.argsort(letters.ids, kind="stable")
    index: dict[int, int] = {}
    for row in order.tolist():
        lid = int(letters.ids[row])
        if lid in index:
            raise DataError(
                f"{where}:{letters.lines[row]}: id {lid} already used on line {letters.lines[index[lid]]}; {damaged}"
            )
        index[lid] = row
    claimed: dict[int, int] = {}  # letter id -> the row whose next_id names it
    for row in order.tolist():
        target = int(letters.next_ids[row])
        if target == -1:
            continue
        if target not in index:
            raise DataError(f"{where}:{letters.lines[row]}: broken chain: next_id {target} names no letter; {damaged}")
        if target in claimed:
            raise DataError(
                f"{where}:{letters.lines[row]}: broken chain: letter {target} is already the next letter of "
                f"line {letters.lines[claimed[target]]}; {damaged}"
            )
        claimed[target] = row
    words: list[Word] = []
    seen = np.zeros(len(letters.ids), dtype=bool)
    for row in order.tolist():
        if int(letters.ids[row]) in claimed:
            continue  # not the first letter of a word
        rows = [row]
        seen[row] = True
        while (target := int(letters.next_ids[rows[-1]])) != -1:
            nxt = index[target]
            if letters.word_ids[nxt] != letters.word_ids[row] or letters.folds[nxt] != letters.folds[row]:
                raise DataError(
                    f"{where}:{letters.lines[nxt]}: broken chain: this letter continues the word of line "
                    f"{letters.lines[row]} but has another word_id or fold; {damaged}"
                )
            rows.append(nxt)
            seen[nxt] = True
        words.append(Word(int(letters.word_ids[row]), int(letters.folds[row]), rows))
    if not seen.all():
        row = int(order[~seen[order]][0])
        raise DataError(f"{where}:{letters.lines[row]}: broken chain: this letter is on a cycle of next_ids; {damaged}")
    return words


def words_table(letters: Letters, words: list[Word], params: OcrParams, length: int) -> pa.Table:
    """The document-table batch for ``words``, padded to ``length`` letters."""
    n = len(words)
    lengths = np.array([len(w.rows) for w in words], dtype=np.int16)
    mask = np.arange(length)[None, :] < lengths[:, None]
    # Gather every word's letter rows into a padded (n, length) index; -1 (past the end) picks
    # the padding row of Letters: "" and a blank image. One allocation per column, no masking.
    gather = np.full((n, length), -1, dtype=np.int64)
    for i, w in enumerate(words):
        gather[i, : len(w.rows)] = w.rows
    pixels = letters.pixels[gather]  # (n, length, 128) uint8
    letter_grid = letters.chars[gather]  # (n, length) str
    folds = np.array([w.fold for w in words], dtype=np.int8)
    split = np.full(n, "train", dtype=object)
    split[np.isin(folds, params.valid_folds)] = "valid"
    split[np.isin(folds, params.test_folds)] = "test"
    return pa.table(
        {
            "split": pa.array(split, pa.string()),
            "text": pa.array(["".join(row[:k]) for row, k in zip(letter_grid.tolist(), lengths.tolist())], pa.string()),
            "source_id": pa.array([str(w.word_id) for w in words], pa.string()),
            "fold": pa.array(folds, pa.int8()),
            "length": pa.array(lengths, pa.int16()),
            "letters": pa.FixedSizeListArray.from_arrays(pa.array(letter_grid.ravel(), pa.string()), length),
            "pixels": pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel(), pa.uint8()), length * PIXELS),
            "mask": pa.FixedSizeListArray.from_arrays(pa.array(mask.ravel(), pa.bool_()), length),
        }
    )


def read(params: OcrParams, key: str = "corpus.ocr") -> Iterator[pa.Table]:
    """The words as document-table batches (schema in the module docstring).

    ``key``: where ``params`` sit in params.yaml (``corpus.ocr`` or ``ocr_data.source``), for messages.
    """
    overlap = set(params.valid_folds) & set(params.test_folds)
    if overlap:
        raise ParamsError(f"{key}: folds {sorted(overlap)} are in both valid_folds and test_folds")
    path = fetch_source(params)
    fix = damaged_fix(params.url, path, f"{key}.url")
    letters = parse(_lines(path, int(params.max_line_mb * 1e6), key, fix), str(path), fix)
    words = chain(letters, str(path), fix)
    longest = max(len(w.rows) for w in words)
    if params.max_length is not None:
        length, limit = params.max_length, f"{key}.max_length"
    else:
        length, limit = min(longest, params.length_cap), f"{key}.length_cap"
    if longest > length:
        word = next(w for w in words if len(w.rows) > length)
        why = ", the limit while max_length is null (padding to the longest word)" if params.max_length is None else ""
        raise DataError(
            f"{path}:{letters.lines[word.rows[0]]}: a word of {len(word.rows)} letters is longer than {limit} "
            f"({length}){why}: word_id {word.word_id} starts on this line; raise {limit} if the file really holds "
            "such words"
        )
    # Rows are padded to `length`: at most BATCH_BYTES of pixels per batch, whatever the length.
    rows = max(1, min(BATCH, BATCH_BYTES // (length * PIXELS)))
    for start in range(0, len(words), rows):
        yield words_table(letters, words[start : start + rows], params, length)
