"""Stage ``ocr_data`` (tasks/dvc.yaml): Taskar's OCR letters as a document table of image sequences.

    python -m pipeline.ocr_data             # reads ocr_data.source

Runs the OCR source (pipeline/sources/ocr.py) through the corpus stage's writer
into ``data/ocr/docs`` (one row per word: ``pixels``, ``mask``, ``letters``,
``length``) and writes ``data/ocr/metrics.json`` (words and letters per split,
the alphabet). ``load_split`` turns one split into the arrays the labeller reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import docs, stage
from pipeline.corpus import write_documents
from pipeline.errors import DataError
from pipeline.io import write_json
from pipeline.params import load_params
from pipeline.sources import ocr
from pipeline.taskpaths import OCR_DOCS as DOCS
from pipeline.taskpaths import OCR_METRICS as METRICS

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


def _table(docs_dir: Path, split: str | None) -> pa.Table:
    batches = list(docs.iter_docs(docs_dir, COLUMNS, batch_rows=8192))
    table = pa.Table.from_batches(batches) if batches else None
    if table is None or "pixels" not in table.column_names:
        raise DataError(f"{docs_dir}: not an OCR document table (no pixels column); run the ocr_data stage")
    return table if split is None else table.filter(pc.equal(table["split"], split))


def alphabet(docs_dir: Path) -> list[str]:
    """The letters of the train split, sorted: the labeller's classes."""
    table = _table(docs_dir, "train")
    if table.num_rows == 0:
        raise DataError(f"{docs_dir}: no train words; check ocr_data.source's folds")
    letters = pc.unique(pc.list_flatten(table["letters"])).to_pylist()
    return sorted(x for x in letters if x)


def load_split(docs_dir: Path, split: str, letters: Sequence[str]) -> OcrSplit:
    """``split``'s words as arrays, letters as indices into ``letters`` (a letter outside it is an error)."""
    table = _table(docs_dir, split)
    if table.num_rows == 0:
        raise DataError(f"{docs_dir}: no {split} words; check ocr_data.source's folds")
    L = table.schema.field("letters").type.list_size
    grid = pc.list_flatten(table["letters"].combine_chunks())  # (N * L,) strings, "" past the end
    ids = pc.index_in(grid, value_set=pa.array(list(letters), pa.string()))
    known = pc.or_(pc.is_valid(ids), pc.equal(grid, ""))
    if not pc.all(known).as_py():
        bad = sorted(set(pc.filter(grid, pc.invert(known)).to_pylist()))
        raise DataError(f"{docs_dir}: {split} has letters {bad} that the train split never shows; "
                        "the labeller cannot predict them: move folds so train covers every letter")  # fmt: skip
    labels = pc.fill_null(ids, -1).to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, L)
    pixels = pc.list_flatten(table["pixels"].combine_chunks()).to_numpy(zero_copy_only=False)
    return OcrSplit(
        pixels=pixels.astype(np.uint8).reshape(-1, L, ocr.PIXELS),
        labels=labels,
        lengths=table["length"].to_numpy().astype(np.int64),
        words=table["text"].to_pylist(),
    )


def stats(docs_dir: Path) -> dict[str, Any]:
    table = _table(docs_dir, None)
    out: dict[str, Any] = {
        "alphabet": "".join(alphabet(docs_dir)),
        "max_length": table.schema.field("letters").type.list_size,
        "splits": {},
    }
    for split in sorted(set(table["split"].to_pylist())):
        part = table.filter(pc.equal(table["split"], split))
        out["splits"][split] = {"words": part.num_rows, "letters": int(pc.sum(part["length"]).as_py() or 0)}
    return out


def spec() -> stage.StageSpec:
    return stage.StageSpec(
        params=("ocr_data",),
        deps=(
            "pipeline/ocr_data.py",
            "pipeline/taskpaths.py",
            "pipeline/corpus.py",
            "pipeline/docs.py",
            "pipeline/download.py",
            "pipeline/io.py",
            "pipeline/params.py",
            "pipeline/shards.py",
            "pipeline/sources/__init__.py",
            "pipeline/sources/ocr.py",
        ),
        outs=(str(DOCS), str(METRICS)),
    )


def run(params_file: str, docs_dir: Path = DOCS, metrics: Path = METRICS) -> dict[str, Any]:
    cfg = load_params(spec().params, params_file)["ocr_data"]
    write_documents(ocr.read(cfg.source, key="ocr_data.source"), docs_dir, "OCR letters (ocr_data.source)")
    out = stats(docs_dir)
    write_json(metrics, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = stage.parser(__doc__).parse_args(argv)
    return stage.run(lambda: run(args.params))


if __name__ == "__main__":
    raise SystemExit(main())
