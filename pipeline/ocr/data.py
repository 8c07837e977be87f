"""Stage ``ocr_data`` (tasks/dvc.yaml): Taskar's OCR letters as a document table of image sequences.

    python -m pipeline.ocr.data             # reads ocr_data.source

Runs the OCR source (pipeline/sources/ocr.py) through the corpus stage's writer
into ``data/ocr/docs`` (one row per word: ``pixels``, ``mask``, ``letters``,
``length``) and writes ``data/ocr/metrics.json`` (words and letters per split,
the alphabet). ``pipeline.ocr.table.load_split`` turns one split into the arrays the labeller reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from pipeline import stage
from pipeline.codedeps import code_deps
from pipeline.corpus import write_documents
from pipeline.io import write_json
from pipeline.ocr.table import alphabet, read_table
from pipeline.params import load_params
from pipeline.paths import OCR_DOCS as DOCS
from pipeline.paths import OCR_METRICS as METRICS
from pipeline.sources import ocr


def stats(docs_dir: Path) -> dict[str, Any]:
    table = read_table(docs_dir, None)
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
        deps=(*code_deps("pipeline.ocr.data"),),
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
