"""The OCR document table (``data/ocr/docs``, written by the ``ocr_data`` stage) as the labeller's arrays.

    letters = alphabet(docs_dir)                     # the train split's letters, sorted
    split = load_split(docs_dir, "test", letters)    # OcrSplit: pixels, labels, lengths, words

Not a stage: models/ocr.py reads the table through here, so that models/ never imports a stage module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import docs
from pipeline.errors import DataError
from pipeline.sources import ocr

COLUMNS = ("doc_id", "split", "text", "length", "letters", "pixels")


@dataclass(frozen=True)
class OcrSplit:
    """One split's words as arrays; L = the table's padded length."""

    pixels: np.ndarray  # (N, L, 128) uint8, zero past each word's end
    labels: np.ndarray  # (N, L) int64: index into the alphabet, -1 past each word's end
    lengths: np.ndarray  # (N,) int64
    words: list[str]

    def __len__(self) -> int:
        return len(self.lengths)


def read_table(docs_dir: Path, split: str | None) -> pa.Table:
    """The columns the labeller reads, of one split (None: every split)."""
    batches = list(docs.iter_docs(docs_dir, COLUMNS, batch_rows=8192))
    table = pa.Table.from_batches(batches) if batches else None
    if table is None or "pixels" not in table.column_names:
        raise DataError(f"{docs_dir}: not an OCR document table (no pixels column); run the ocr_data stage")
    return table if split is None else table.filter(pc.equal(table["split"], split))


def alphabet(docs_dir: Path) -> list[str]:
    """The letters of the train split, sorted: the labeller's classes."""
    table = read_table(docs_dir, "train")
    if table.num_rows == 0:
        raise DataError(f"{docs_dir}: no train words; check ocr_data.source's folds")
    letters = pc.unique(pc.list_flatten(table["letters"])).to_pylist()
    return sorted(x for x in letters if x)


def load_split(docs_dir: Path, split: str, letters: Sequence[str]) -> OcrSplit:
    """``split``'s words as arrays, letters as indices into ``letters`` (a letter outside it is an error)."""
    table = read_table(docs_dir, split)
    if table.num_rows == 0:
        raise DataError(f"{docs_dir}: no {split} words; check ocr_data.source's folds")
    L = table.schema.field("letters").type.list_size
    grid = pc.list_flatten(table["letters"].combine_chunks())  # (N * L,) strings, "" past the end
    ids = pc.index_in(grid, value_set=pa.array(list(letters), pa.string()))
    known = pc.or_(pc.is_valid(ids), pc.equal(grid, ""))
    if not pc.all(known).as_py():
        bad = sorted(set(pc.filter(grid, pc.invert(known)).to_pylist()))
        raise DataError(
            f"{docs_dir}: {split} has letters {bad} that the train split never shows; "
            "the labeller cannot predict them: move folds so train covers every letter"
        )
    labels = pc.fill_null(ids, -1).to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, L)
    pixels = pc.list_flatten(table["pixels"].combine_chunks()).to_numpy(zero_copy_only=False)
    return OcrSplit(
        pixels=pixels.astype(np.uint8).reshape(-1, L, ocr.PIXELS),
        labels=labels,
        lengths=table["length"].to_numpy().astype(np.int64),
        words=table["text"].to_pylist(),
    )
