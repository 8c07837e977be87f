"""Flow ``ngram``: the Kneser-Ney n-gram baseline (seed 002) beside the RNN and the oracle.

A subflow of the ``lm@<level>`` stage (flows/lm.py). Fits models/ngram.py on
``data/windows/<level>/train/stream.npy`` and scores the valid and test streams with the
evaluation's conventions (every target once, so the token count is the oracle's and the
RNN's). Writes ``artifacts/<level>/ngram.json`` (loss in nats/token, perplexity, bits, and on
the grammar corpus ``oracle_gap = perplexity / oracle perplexity``); the ``evaluate`` subflow
takes the result, so its table and its ``<level>-metrics`` artifact show the oracle, the
n-gram and the RNN side by side. It never reads the RNN: the two are independent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import markdown_table, ngram_scores
from models.ngram import KneserNey, fit
from pipeline import paths
from pipeline.io import read_json, write_json
from pipeline.params import Level, NgramParams
from pipeline.vocab import Vocab

SPLITS = ("valid", "test")


@task(name="fit-ngram", cache_policy=NO_CACHE)
def fit_ngram(level: Level, p: NgramParams) -> KneserNey:
    vocab = Vocab.load(paths.vocab(level))
    model = fit(np.load(paths.windows(level) / "train" / "stream.npy", mmap_mode="r"), len(vocab), p.n,
                modified=p.modified)  # fmt: skip
    get_run_logger().info(f"{level}: {model.summary()}")
    return model


@task(name="score-split", cache_policy=NO_CACHE, task_run_name="{split}")
def score_split(model: KneserNey, level: Level, split: str, oracle: dict[str, Any] | None) -> dict[str, Any]:
    s = model.evaluate(np.load(paths.windows(level) / split / "stream.npy", mmap_mode="r"))
    m: dict[str, Any] = s.to_dict(level)
    if oracle is not None:
        m["oracle_perplexity"] = oracle["perplexity"]
        m["oracle_gap"] = s.perplexity / oracle["perplexity"]
    get_run_logger().info(f"{level} {split}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))
    return m


@task(name="write-ngram", cache_policy=NO_CACHE)
def write_ngram(level: Level, result: dict[str, Any]) -> None:
    write_json(ngram_scores(level), result)
    rows = [{"split": split, **result[split]} for split in SPLITS]
    cols = ["split", "loss", "perplexity", "bits_per_char" if level == "char" else "bits_per_token", "tokens"]
    if any("oracle_gap" in r for r in rows):
        cols += ["oracle_perplexity", "oracle_gap"]
    model = result["model"]
    create_markdown_artifact(
        key=f"{level}-ngram",
        markdown=f"# {model['n']}-gram baseline ({model['smoothing'].replace('_', ' ')}), {level} level\n\n"
        + markdown_table(rows, cols),
        description=f"the Kneser-Ney {model['n']}-gram's held-out loss beside the oracle",
    )


@flow(name="ngram")
def ngram(level: Level, params: NgramParams) -> dict[str, Any]:
    """Fit on the train stream, score valid and test, write artifacts/<level>/ngram.json."""
    oracle = read_json(paths.ORACLE) if paths.ORACLE.exists() else {"available": False}
    model = fit_ngram(level, params)
    result: dict[str, Any] = {"model": model.summary()}
    for split in SPLITS:
        result[split] = score_split(model, level, split, oracle[level][split] if oracle.get("available") else None)
    write_ngram(level, result)
    return result
