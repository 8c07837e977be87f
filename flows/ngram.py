"""Flow ``ngram``: the Kneser-Ney n-gram baseline beside the RNN and the oracle.

A subflow of the ``lm@<level>`` stage (flows/lm.py). Fits models/ngram.py on
``data/windows/<level>/train/stream.npy`` and scores the valid and test streams with the
evaluation's conventions (every target once, so the token count is the oracle's and the
RNN's). Writes ``artifacts/<level>/ngram.json`` (loss in nats/token, perplexity, bits, and on
the grammar corpus ``oracle_gap = perplexity / oracle perplexity``); the ``evaluate`` subflow
takes the result, so its ``<level>-perplexity`` table artifact shows the oracle, the n-gram and
the RNN side by side (this flow's own, ``<level>-ngram``, the n-gram beside the oracle). It
never reads the RNN: the two are independent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.evaluate import oracle_splits, score_columns, table
from models.evaluate import loss_scores, oracle_comparison
from models.ngram import KneserNey
from pipeline import paths
from pipeline.io import write_json
from pipeline.params import Level, NgramParams
from pipeline.paths import ngram_scores
from pipeline.vocab import Vocab

SPLITS = ("valid", "test")


@task(name="fit-ngram", cache_policy=NO_CACHE)
def fit_ngram(level: Level, p: NgramParams) -> KneserNey:
    vocab = Vocab.load(paths.vocab(level))
    stream = np.load(paths.windows(level) / "train" / "stream.npy", mmap_mode="r")
    model = KneserNey.fit(stream, len(vocab), p.n, modified=p.modified, progress=f"ngram {level} fit")
    get_run_logger().info(f"{level}: {model.summary()}")
    return model


@task(name="score-split", cache_policy=NO_CACHE, task_run_name="{split}")
def ngram_split_scores(model: KneserNey, level: Level, split: str, oracle: dict[str, Any] | None) -> dict[str, Any]:
    """The baseline's entry for one split: the keys the RNN's has (but the error rate), and its total nats."""
    s = model.evaluate(np.load(paths.windows(level) / split / "stream.npy", mmap_mode="r"), f"ngram {level} {split}")
    m = loss_scores(s.nats_per_token, s.tokens, level) | {"nats": s.nats}
    if oracle is not None:
        m |= oracle_comparison(m["perplexity"], oracle)
    get_run_logger().info(f"{level} {split}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))
    return m


@task(name="write-ngram", cache_policy=NO_CACHE)
def write_ngram(level: Level, result: dict[str, Any]) -> None:
    write_json(ngram_scores(level), result)
    rows = [{"split": split, **result[split]} for split in SPLITS]
    cols = score_columns(level, rows)
    model = result["model"]
    create_table_artifact(
        key=f"{level}-ngram",
        table=table(rows, cols),
        description=f"The {model['n']}-gram baseline ({model['smoothing'].replace('_', ' ')}), {level} level, "
        "a row per split: its held-out loss (nats/token), perplexity and bits beside the oracle's (grammar corpus)",
    )


@flow(name="ngram")
def ngram(level: Level, params: NgramParams) -> dict[str, Any]:
    """Fit on the train stream, score valid and test, write artifacts/<level>/ngram.json."""
    oracle = oracle_splits(level)
    model = fit_ngram(level, params)
    result: dict[str, Any] = {"model": model.summary()}
    for split in SPLITS:
        result[split] = ngram_split_scores(model, level, split, oracle.get(split))
    write_ngram(level, result)
    return result
