"""Shared by the task flows (skipgram, sentiment, lmclass, ocr, ngram): fingerprints, CSV, stage plumbing.

Caching rule, as for the language models (flows/train.py): DVC decides whether a
stage runs; the Trainer's checkpoint (``persist: true`` in dvc.yaml) decides
whether training runs. A checkpoint records its fingerprint (data hashes, params,
code hashes); a rerun with the same fingerprint finds it finished and trains
nothing, a killed run resumes from it, one of another fingerprint is ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flows.common import ROOT
from models.device import set_threads
from pipeline import stage
from pipeline.io import atomic_open, read_json, sha256_file


def fingerprint(task: str, params: BaseModel | Mapping[str, Any], data: Mapping[str, Any], code: Iterable[str]) -> str:
    """sha256 over the data's file hashes, the params and the code files' hashes (no tensor is hashed)."""
    dumped = params.model_dump(mode="json") if isinstance(params, BaseModel) else dict(params)
    parts = {"task": task, "data": data, "params": dumped, "code": {f: sha256_file(ROOT / f) for f in sorted(code)}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def windows_data(folder: Path) -> dict[str, Any]:
    """What identifies a windows dataset: the sha256 of its arrays and of its vocabulary (meta.json)."""
    meta = read_json(Path(folder) / "meta.json")
    return {"files": meta["files"], "vocab_sha256": meta["vocab_sha256"]}


def folder_data(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (a Parquet document table)."""
    folder = Path(folder)
    return {f.relative_to(folder).as_posix(): sha256_file(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV, atomically; floats as repr (they round-trip exactly), missing cells empty."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(columns) + "\n")
        for row in rows:
            f.write(",".join(repr(v) if isinstance(v := row.get(c, ""), float) else str(v) for c in columns) + "\n")


def stage_main(doc: str | None, argv: Sequence[str] | None, body: Callable[[str], object]) -> int:
    """``python -m flows.X [--params FILE]``: fixed torch threads, user errors without a traceback."""
    args = stage.parser(doc).parse_args(argv)
    set_threads()
    return stage.run(lambda: body(args.params))
