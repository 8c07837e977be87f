"""Shared by the train, evaluate and sample flows: output paths, the training fingerprint, stage plumbing.

Outputs of one level live under ``artifacts/<level>/`` (dvc.yaml repeats these paths)::

    checkpoints/last.pt   the rolling training checkpoint (persist: true, so a killed run resumes)
    history.csv           one row per epoch: the DVC plot of the losses
    metrics.json          held-out metrics and the oracle gap: DVC metrics
    samples.txt           generated text
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from models.device import set_threads
from pipeline import paths, stage
from pipeline.io import read_json, sha256_file
from pipeline.params import CharTokenizeParams, TrainParams, WordTokenizeParams

ROOT = Path(__file__).resolve().parents[1]  # the repository: code files are hashed from here
ARTIFACTS = Path("artifacts")


def checkpoints(level: str) -> Path:
    return ARTIFACTS / level / "checkpoints"


def history(level: str) -> Path:
    return ARTIFACTS / level / "history.csv"


def metrics(level: str) -> Path:
    return ARTIFACTS / level / "metrics.json"


def samples(level: str) -> Path:
    return ARTIFACTS / level / "samples.txt"


def tokenizer_settings(level: str, cfg: WordTokenizeParams | CharTokenizeParams) -> dict[str, Any]:
    """What turns text into this level's tokens: stored in checkpoints so the CLI needs no params file."""
    if level == "word":
        return {"level": "word", "pattern": cfg.pattern, "lowercase": cfg.lowercase}
    return {"level": "char", "lowercase": cfg.lowercase}


def fingerprint(level: str, train: TrainParams, tokenizer: dict[str, Any], code: Iterable[str]) -> str:
    """The training cache key: sha256 over the data, the params and the code that trains.

    data:  the windows stage's meta.json (the sha256 of every array, and of the vocabulary);
    params: ``train.<level>`` and the tokenizer settings the checkpoint records;
    code:  the sha256 of each models/ source file the train stage imports.
    File hashes only: no tensor is hashed.
    """
    meta = read_json(paths.windows(level) / "meta.json")
    parts = {
        "level": level,
        "data": {"files": meta["files"], "vocab_sha256": meta["vocab_sha256"]},
        "tokenizer": tokenizer,
        "train": train.model_dump(mode="json"),
        "code": {f: sha256_file(ROOT / f) for f in sorted(code)},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def stage_main(doc: str | None, argv: Sequence[str] | None, body: Callable[[str, str], object]) -> int:
    """``python -m flows.X --level L [--params FILE]``: fixed torch threads, user errors without traceback."""
    args = stage.parser(doc, level=True).parse_args(argv)
    set_threads()
    return stage.run(lambda: body(args.level, args.params))
