"""Taskar's OCR letters (``letter.data``, seed 001): handwritten words as image sequences.

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

Every malformed line fails with its line number: a wrong field count, a
non-integer field, a letter that is not one character, a pixel that is not 0 or
1, a duplicate id, a ``next_id`` that names no letter or a letter already
claimed, a cycle, or a word whose letters disagree on word_id or fold. There is
no skip policy: a damaged file is not this dataset.

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
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.download import fetch
from pipeline.errors import DataError, ParamsError
from pipeline.params import OcrParams

PIXELS = 128
HEIGHT, WIDTH = 16, 8
FIELDS = 6 + PIXELS
BATCH = 5000


@dataclass
class Letters:
    """All letters of a file, in file order: parallel arrays."""

    ids: np.ndarray  # int64
    chars: list[str]
    next_ids: np.ndarray  # int64
    word_ids: np.ndarray  # int64
    folds: np.ndarray  # int8
    pixels: np.ndarray  # (n, 128) uint8
    lines: np.ndarray  # int64, 1-based line numbers


@dataclass
class Word:
    word_id: int
    fold: int
    rows: list[int]  # indices into Letters, in reading order


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        yield from f


def parse(lines: Iterable[bytes], where: str) -> Letters:
    """Parse letter lines (bytes, with or without newlines); fail at the first bad one."""
    ids: list[int] = []
    chars: list[str] = []
    nxt: list[int] = []
    words: list[int] = []
    folds: list[int] = []
    pix: list[bytes] = []
    linenos: list[int] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        if line.endswith(b"\t"):  # the real file ends every line with a tab
            line = line[:-1]
        fields = line.split(b"\t")
        if len(fields) != FIELDS:
            raise DataError(
                f"{where}:{lineno}: expected {FIELDS} tab-separated fields (6 + {PIXELS} pixels), got {len(fields)}"
            )
        try:
            lid, next_id, word_id, fold = int(fields[0]), int(fields[2]), int(fields[3]), int(fields[5])
            int(fields[4])  # position: checked for form, not used (the chain gives the order)
        except ValueError:
            raise DataError(f"{where}:{lineno}: id, next_id, word_id, position and fold must be integers") from None
        char = fields[1].decode("utf-8", "replace")
        if len(char) != 1 or char.isspace():
            raise DataError(f"{where}:{lineno}: the letter must be one character, got {char!r}")
        if not 0 <= fold <= 9:
            raise DataError(f"{where}:{lineno}: fold must be 0-9, got {fold}")
        packed = b"".join(fields[6:])
        # 128 one-character fields of 0/1: the joined length and the shortest field pin each to one byte.
        if len(packed) != PIXELS or packed.strip(b"01") or min(map(len, fields[6:])) != 1:
            bad = next(i for i, f in enumerate(fields[6:]) if f not in (b"0", b"1"))
            got = fields[6 + bad].decode(errors="replace")
            raise DataError(f"{where}:{lineno}: pixel {bad} must be 0 or 1, got {got!r}")
        ids.append(lid)
        chars.append(char)
        nxt.append(next_id)
        words.append(word_id)
        folds.append(fold)
        pix.append(packed)
        linenos.append(lineno)
    if not ids:
        raise DataError(f"{where}: no letters; is this Taskar's letter.data?")
    pixels = (np.frombuffer(b"".join(pix), dtype=np.uint8) - ord("0")).reshape(-1, PIXELS)
    return Letters(
        np.array(ids, np.int64), chars, np.array(nxt, np.int64), np.array(words, np.int64),
        np.array(folds, np.int8), pixels, np.array(linenos, np.int64),
    )  # fmt: skip


def chain(letters: Letters, where: str) -> list[Word]:
    """Follow next_id from every first letter; words in order of their first letter's id."""
    order = np.argsort(letters.ids, kind="stable")
    index: dict[int, int] = {}
    for row in order.tolist():
        lid = int(letters.ids[row])
        if lid in index:
            raise DataError(f"{where}:{letters.lines[row]}: id {lid} already used on line {letters.lines[index[lid]]}")
        index[lid] = row
    claimed: dict[int, int] = {}  # letter id -> the row whose next_id names it
    for row in order.tolist():
        target = int(letters.next_ids[row])
        if target == -1:
            continue
        if target not in index:
            raise DataError(f"{where}:{letters.lines[row]}: broken chain: next_id {target} names no letter")
        if target in claimed:
            raise DataError(
                f"{where}:{letters.lines[row]}: broken chain: letter {target} is already the next letter of "
                f"line {letters.lines[claimed[target]]}"
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
                    f"{letters.lines[row]} but has another word_id or fold"
                )
            rows.append(nxt)
            seen[nxt] = True
        words.append(Word(int(letters.word_ids[row]), int(letters.folds[row]), rows))
    if not seen.all():
        row = int(order[~seen[order]][0])
        raise DataError(f"{where}:{letters.lines[row]}: broken chain: this letter is on a cycle of next_ids")
    return words


def words_table(letters: Letters, words: list[Word], params: OcrParams, length: int) -> pa.Table:
    """The document-table batch for ``words``, padded to ``length`` letters."""
    n = len(words)
    lengths = np.array([len(w.rows) for w in words], dtype=np.int16)
    mask = np.arange(length)[None, :] < lengths[:, None]
    # Gather every word's letter rows into a padded (n, length) index, -1 where padding.
    gather = np.full((n, length), -1, dtype=np.int64)
    for i, w in enumerate(words):
        gather[i, : len(w.rows)] = w.rows
    pixels = np.where(mask[:, :, None], letters.pixels[np.maximum(gather, 0)], 0).astype(np.uint8)
    chars = np.array(letters.chars + [""], dtype=object)  # index -1 -> ""
    letter_grid = chars[gather]
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


def read(params: OcrParams) -> Iterator[pa.Table]:
    """The words as document-table batches (schema in the module docstring)."""
    overlap = set(params.valid_folds) & set(params.test_folds)
    if overlap:
        raise ParamsError(f"corpus.ocr: folds {sorted(overlap)} are in both valid_folds and test_folds")
    path = fetch(params.url, params.cache_dir, sha256=params.sha256, size=params.size,
                 retries=params.retries, timeout=params.timeout)  # fmt: skip
    letters = parse(_lines(path), str(path))
    words = chain(letters, str(path))
    longest = max(len(w.rows) for w in words)
    length = params.max_length if params.max_length is not None else longest
    if longest > length:
        word = next(w for w in words if len(w.rows) > length)
        raise DataError(
            f"{path}:{letters.lines[word.rows[0]]}: a word of {len(word.rows)} letters is longer than "
            f"corpus.ocr.max_length ({length}); raise it or set it to null"
        )
    for start in range(0, len(words), BATCH):
        yield words_table(letters, words[start : start + BATCH], params, length)
