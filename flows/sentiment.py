"""Flow ``sentiment``: a GRU/LSTM review classifier on IMDB.

    python -m flows.sentiment              # tasks/dvc.yaml, after imdb_data

Trains models/classify.py with the shared Trainer on ``data/imdb/windows``
(padded rows and labels; valid accuracy after each epoch), then scores the test
split. The task and its ``last`` readout follow Abrahams, Hafner, Erwitt &
Scarpinelli, *TensorFlow for Machine Intelligence* (Bleeding Edge Press, 2016),
chapter 6; the ``mean`` and ``max`` readouts pool over each review's valid steps
instead. Writes under ``artifacts/sentiment/``:

    checkpoints/last.pt   rolling checkpoint (persist: a killed run resumes, a finished one is reused)
    checkpoints/best.pt   the best validation epoch's weights: what valid and test are scored with
    history.csv           train loss, valid loss and accuracy per epoch (DVC plot)
    metrics.json          valid and test: loss, accuracy, confusion matrix (rows true, columns predicted)

and a markdown artifact ``sentiment-metrics``. ``sentiment.embeddings`` may name
``artifacts/skipgram/embeddings.npy`` (it must have been trained on this
vocabulary: an error names both otherwise) or a word2vec/GloVe text file, aligned
by token with its out-of-vocabulary count reported. That file is tracked through
the param only: after changing the file itself, ``dvc repro -f tasks/dvc.yaml:sentiment``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import (
    fingerprint,
    markdown_table,
    stage_main,
    tokenizer_settings,
    train_all,
    windows_data,
    write_csv,
)
from models.classify import SentimentTask, initial_embeddings
from models.trainer import Trainer
from pipeline import stage
from pipeline.codedeps import code_deps, model_code
from pipeline.io import sha256_file, write_json
from pipeline.params import SentimentParams, load_params
from pipeline.paths import IMDB_DATA, SENTIMENT_CHECKPOINTS, SENTIMENT_HISTORY, SENTIMENT_METRICS
from pipeline.vocab import Vocab

HISTORY_COLUMNS = ("epoch", "step", "train_loss", "valid_loss", "valid_accuracy", "lr")
# What the fingerprint hashes: the models/ modules this flow loads, and the pretrained-vector aligner.
CODE = model_code("flows.sentiment", "pipeline.vectors")


def spec() -> stage.StageSpec:
    return stage.StageSpec(
        params=("sentiment", "imdb_data.tokenize"),
        deps=(
            *code_deps("flows.sentiment"),
            str(IMDB_DATA.windows),
            str(IMDB_DATA.vocab),
        ),
        # Not DVC metrics: `dvc metrics show` must not warn for users who never ran tasks/dvc.yaml.
        outs=(str(SENTIMENT_CHECKPOINTS), str(SENTIMENT_HISTORY), str(SENTIMENT_METRICS)),
    )


@task(name="evaluate-split", cache_policy=NO_CACHE, task_run_name="{split}")
def evaluate_split(task_: SentimentTask, split: str) -> dict[str, Any]:
    m = task_.evaluate(split)
    get_run_logger().info(f"{split}: accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}, confusion {m['confusion']}")
    return m


def confusion_markdown(m: dict[str, Any]) -> str:
    names = m["classes"]
    rows = [{"true \\ predicted": t, **dict(zip(names, counts))} for t, counts in zip(names, m["confusion"])]
    return markdown_table(rows, ["true \\ predicted", *names])


@flow(name="sentiment")
def sentiment(params: SentimentParams, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume, or reuse) the classifier; score valid and test; write metrics.json."""
    log = get_run_logger()
    vocab = Vocab.load(IMDB_DATA.vocab)
    data = windows_data(IMDB_DATA.windows)
    emb = None
    if params.embeddings:
        emb = initial_embeddings(params.embeddings, vocab, IMDB_DATA.vocab, params.emb_dim)
        log.info(f"embeddings from {params.embeddings}: {emb[2]}")
        data["embeddings_sha256"] = sha256_file(params.embeddings)
    fp = fingerprint("sentiment", {"params": params.model_dump(mode="json"), "tokenizer": tokenizer}, data, CODE)

    def build(device: Any) -> SentimentTask:
        return SentimentTask(
            params,
            IMDB_DATA.windows,
            vocab,
            device,
            vocab_path=str(IMDB_DATA.vocab),
            tokenizer=tokenizer,
            embeddings=emb,
        )

    trainer = Trainer(build, params, SENTIMENT_CHECKPOINTS, fp, key="sentiment")
    log.info(
        f"{trainer.task.cfg} on {trainer.device}: {trainer.steps_per_epoch} steps per epoch, {params.epochs} epochs"
    )
    train_all({"": trainer})
    write_csv(SENTIMENT_HISTORY, trainer.history, HISTORY_COLUMNS)
    result: dict[str, Any] = {split: evaluate_split(trainer.task, split) for split in ("valid", "test")}
    result["model"] = {
        "cell": params.cell,
        "readout": params.readout,
        "hidden": params.hidden,
        "embeddings": trainer.task.embeddings_info,
    }
    write_json(SENTIMENT_METRICS, result)
    test = result["test"]
    create_markdown_artifact(
        key="sentiment-metrics",
        markdown=f"# Sentiment ({params.cell.upper()} {params.hidden}, readout {params.readout})\n\n"
        f"test accuracy **{test['accuracy']:.4f}** on {test['examples']} reviews "
        f"(valid {result['valid']['accuracy']:.4f})\n\n" + confusion_markdown(test),
        description="accuracy and confusion matrix on the test split",
    )
    return result


def run(params_file: str) -> dict[str, Any]:
    cfg = load_params(spec().params, params_file)
    return sentiment(cfg["sentiment"], tokenizer_settings("word", cfg["imdb_data.tokenize"]))


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(__doc__, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
