"""Flow ``lmclass``: LM-based review classification, beside the sentiment classifier.

    python -m flows.lmclass                # tasks/dvc.yaml, after lmclass_data and sentiment

Trains one language model per class with the shared LM trainer (models/lm.py's
``lm_trainer``, unchanged) on ``data/imdb/lm/<label>/``, then labels each test
review (``data/imdb/windows/test``, the very rows the sentiment classifier is
tested on) with the class whose model gives it the higher length-normalised
log-likelihood (models/lmclass.py). Writes under ``artifacts/lmclass/``:

    checkpoints/<label>/last.pt   one rolling LM checkpoint per class (persist)
    history.csv                   per class and epoch: train loss, valid loss and perplexity
    metrics.json                  test accuracy and confusion matrix, and the sentiment classifier's accuracy

and a markdown artifact ``lmclass-metrics`` with both accuracies side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import (
    markdown_table,
    stage_main,
    tokenizer_settings,
    train_all,
    train_fingerprint,
    write_csv,
)
from models.classify import classification_metrics
from models.data import open_array, read_meta
from models.lm import lm_trainer
from models.lmclass import class_scores
from models.trainer import Trainer
from pipeline import stage
from pipeline.codedeps import code_deps, model_code
from pipeline.errors import DataError
from pipeline.io import read_json, write_json
from pipeline.params import TrainParams, load_params
from pipeline.paths import IMDB_DATA, LMCLASS_CHECKPOINTS, LMCLASS_HISTORY, LMCLASS_METRICS, SENTIMENT_METRICS
from pipeline.vocab import Vocab

HISTORY_COLUMNS = ("label", "epoch", "step", "train_loss", "valid_loss", "valid_perplexity", "lr")
# What the fingerprint hashes: the models/ modules this flow loads.
CODE = model_code("flows.lmclass")


def spec() -> stage.StageSpec:
    return stage.StageSpec(
        params=("lmclass.train", "lmclass.batch_size", "imdb_data.tokenize"),
        deps=(
            *code_deps("flows.lmclass"),
            str(IMDB_DATA.lm),
            str(IMDB_DATA.windows),
            str(IMDB_DATA.vocab),
            str(SENTIMENT_METRICS),
        ),
        # Not DVC metrics: `dvc metrics show` must not warn for users who never ran tasks/dvc.yaml.
        outs=(str(LMCLASS_CHECKPOINTS), str(LMCLASS_HISTORY), str(LMCLASS_METRICS)),
    )


@task(name="classify-test", cache_policy=NO_CACHE)
def classify_test(trainers: dict[str, Trainer], labels: list[str], batch_size: int) -> dict[str, Any]:
    folder = IMDB_DATA.windows / "test"
    padded, lengths = open_array(folder, "padded.npy"), np.asarray(open_array(folder, "lengths.npy"))
    truth = np.asarray(open_array(folder, "labels.npy"), np.int64)
    device = next(iter(trainers.values())).device
    scores = class_scores({k: t.model for k, t in trainers.items()}, padded, lengths, device, batch_size)  # (C, R)
    pred = scores.argmax(0)
    m = classification_metrics(truth, pred, labels)
    top2 = np.sort(scores, axis=0)[-2:]
    m["median_margin"] = float(np.median(top2[1] - top2[0]))  # nats per token between the two likeliest classes
    m["nats_per_token"] = {label: float(-scores[i][truth == i].mean()) for i, label in enumerate(labels)}
    get_run_logger().info(f"test: accuracy {m['accuracy']:.4f}, confusion {m['confusion']}")
    return m


@flow(name="lmclass")
def lmclass(train: TrainParams, batch_size: int, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """One LM per class (trained, resumed or reused), then the test reviews by the likelier model."""
    vocab = Vocab.load(IMDB_DATA.vocab)
    labels: list[str] = read_meta(IMDB_DATA.windows, vocab).get("labels") or []
    if len(labels) < 2:
        raise DataError(f"{IMDB_DATA.windows}/meta.json: labels {labels}; LM classification needs two or more classes")
    trainers: dict[str, Trainer] = {}
    for label in labels:
        data = IMDB_DATA.lm / label
        if not (data / "meta.json").is_file():
            raise DataError(f"{data}: no windows for class {label!r}; run `dvc repro tasks/dvc.yaml:lmclass_data`")
        fp = train_fingerprint(f"lmclass-{label}", data, train, tokenizer, CODE)
        provenance = {"fingerprint": fp, "tokenizer": tokenizer, "vocab_path": str(IMDB_DATA.vocab)}
        trainers[label] = lm_trainer(train, data, LMCLASS_CHECKPOINTS / label, vocab, provenance, key="lmclass.train")
    train_all(trainers)
    write_csv(LMCLASS_HISTORY, [{"label": k, **h} for k, t in trainers.items() for h in t.history], HISTORY_COLUMNS)
    result: dict[str, Any] = {"test": classify_test(trainers, labels, batch_size)}
    result["valid_perplexity"] = {k: t.history[-1]["valid_perplexity"] for k, t in trainers.items()}
    sentiment = read_json(SENTIMENT_METRICS) if Path(SENTIMENT_METRICS).is_file() else None
    if sentiment is not None:
        result["test"]["sentiment_accuracy"] = sentiment["test"]["accuracy"]
    write_json(LMCLASS_METRICS, result)
    rows = [
        {
            "classifier": f"one {train.cell.upper()} LM per class, higher log-likelihood per token",
            "test accuracy": result["test"]["accuracy"],
            "reviews": result["test"]["examples"],
        }
    ]
    if sentiment is not None:
        model = sentiment.get("model", {})
        name = f"{model.get('cell', '?').upper()} classifier, readout {model.get('readout', '?')}"
        rows.append(
            {
                "classifier": name,
                "test accuracy": sentiment["test"]["accuracy"],
                "reviews": sentiment["test"]["examples"],
            }
        )
    create_markdown_artifact(
        key="lmclass-metrics",
        markdown="# IMDB test accuracy: LM-based against the sentiment classifier\n\n"
        + markdown_table(rows, ["classifier", "test accuracy", "reviews"]),
        description="LM-based classification beside the sentiment classifier, on the same test reviews",
    )
    return result


def run(params_file: str) -> dict[str, Any]:
    cfg = load_params(spec().params, params_file)
    tokenizer = tokenizer_settings("word", cfg["imdb_data.tokenize"])
    return lmclass(cfg["lmclass.train"], cfg["lmclass.batch_size"], tokenizer)


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(__doc__, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
