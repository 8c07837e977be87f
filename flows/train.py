"""Flow ``train``: fit one level's language model; cached on one fingerprint, resumable when killed.

    python -m flows.train --level word

Caching rule (README, "Language models"):

* **DVC decides whether the stage runs.** It reruns ``train@<level>`` exactly when a
  declared dep or param changed: the windows and vocabulary, ``train.<level>``,
  ``tokenize.<level>``, or the code.
* **Prefect decides whether the training runs.** The ``fit`` task's cache key is one
  fingerprint (flows.common.fingerprint): the data's file hashes, the params, and a
  hash of the models/ code. A call with a known fingerprint (``dvc repro -f``, an
  edit to flows/ only, a run outside DVC) returns the cached record in seconds, once
  the checkpoint on disk is checked to still have the recorded sha256; otherwise it
  trains again.
* **The checkpoint resumes what was cut short.** ``artifacts/<level>/checkpoints`` is
  ``persist: true``, so DVC keeps it when the stage reruns: a killed run restarts
  from its last checkpoint, and a checkpoint of another fingerprint is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import checkpoints, fingerprint, history, markdown_table, stage_main, tokenizer_settings
from models.checkpoint import FILE
from models.data import read_meta
from models.lm import lm_trainer
from models.trainer import Trainer
from pipeline import paths, stage
from pipeline.io import atomic_open, sha256_file
from pipeline.params import Level, TrainParams, load_params
from pipeline.vocab import Vocab

# The models/ files this stage imports: their hashes are the fingerprint's code version.
TRAIN_CODE = (
    "models/checkpoint.py",
    "models/cells.py",
    "models/config.py",
    "models/data.py",
    "models/device.py",
    "models/evaluate.py",
    "models/lm.py",
    "models/rnn.py",
    "models/trainer.py",
)
HISTORY_COLUMNS = ("epoch", "step", "train_loss", "valid_loss", "valid_perplexity", "lr")


def spec(level: str) -> stage.StageSpec:
    return stage.StageSpec(
        params=(f"train.{level}", f"tokenize.{level}"),
        deps=(
            "flows/train.py",
            "flows/common.py",
            *TRAIN_CODE,
            "pipeline/io.py",
            "pipeline/params.py",
            "pipeline/shards.py",
            "pipeline/vocab.py",
            str(paths.windows(level)),
            str(paths.vocab(level)),
        ),
        outs=(str(checkpoints(level)), str(history(level))),
    )


@task(name="load-data", cache_policy=NO_CACHE)
def load_data(level: Level, params: TrainParams, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """Check the windows against the vocabulary; return the fingerprint (no arrays are read)."""
    vocab = Vocab.load(paths.vocab(level))
    meta = read_meta(paths.windows(level), vocab)
    return {
        "fingerprint": fingerprint(level, params, tokenizer, TRAIN_CODE),
        "vocab_size": len(vocab),
        "splits": meta["splits"],
    }


@task(name="train-epoch", cache_policy=NO_CACHE, task_run_name="epoch-{epoch}")
def train_epoch(trainer: Trainer, epoch: int) -> dict[str, Any]:
    """One epoch block: epoch_size steps, validation, LR schedule, checkpoint."""
    trainer.log = get_run_logger().info
    return trainer.run_epoch()


def _fit_key(_ctx: object, p: dict[str, Any]) -> str:
    return f"train-{p['level']}-{p['fingerprint']}"


@task(name="fit", cache_key_fn=_fit_key, persist_result=True, result_serializer="json")
def fit(level: Level, params: TrainParams, tokenizer: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """Train (or resume) to the last epoch; the result is cached under the fingerprint alone."""
    log = get_run_logger()
    trainer = lm_trainer(
        params,
        paths.windows(level),
        checkpoints(level),
        Vocab.load(paths.vocab(level)),
        {"fingerprint": fingerprint, "tokenizer": tokenizer, "vocab_path": str(paths.vocab(level))},
        key=f"train.{level}",
        log=log.info,
    )
    log.info(f"{trainer.task.cfg} on {trainer.device}: {trainer.steps_per_epoch} steps per epoch, {params.epochs} epochs")
    while not trainer.done:
        train_epoch(trainer, trainer.epoch + 1)
    return {"checkpoint": str(trainer.path), "sha256": trainer.sha256, "fingerprint": fingerprint,
            "history": trainer.history}  # fmt: skip


def intact(record: dict[str, Any], level: str) -> bool:
    """Whether the checkpoint a (cached) record describes is still on disk, byte for byte."""
    path = checkpoints(level) / FILE
    return path.is_file() and sha256_file(path) == record["sha256"]


@task(name="write-history", cache_policy=NO_CACHE)
def write_history(level: Level, record: dict[str, Any]) -> None:
    with atomic_open(history(level), "w", encoding="utf-8", newline="") as f:
        f.write(",".join(HISTORY_COLUMNS) + "\n")
        for row in record["history"]:  # repr: floats round-trip exactly
            f.write(",".join(repr(row[c]) if isinstance(row[c], float) else str(row[c]) for c in HISTORY_COLUMNS))
            f.write("\n")
    create_markdown_artifact(
        key=f"{level}-training",
        markdown=f"# Training, {level} level\n\n" + markdown_table(record["history"], HISTORY_COLUMNS),
        description=f"per-epoch losses of the {level}-level model",
    )


@flow(name="train")
def train(level: Level, params: TrainParams, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """Train ``level``'s model from ``data/windows/<level>`` into ``artifacts/<level>/``."""
    log = get_run_logger()
    data = load_data(level, params, tokenizer)
    state = fit(level, params, tokenizer, data["fingerprint"], return_state=True)
    record, cached = state.result(), state.name == "Cached"
    if cached and not intact(record, level):
        log.info(f"cached checkpoint {checkpoints(level) / FILE} is missing or changed: training again")
        record, cached = fit.with_options(refresh_cache=True)(level, params, tokenizer, data["fingerprint"]), False
    log.info(f"{'cache hit: ' if cached else ''}checkpoint {record['checkpoint']} sha256 {record['sha256'][:12]}")
    write_history(level, record)
    return {**record, "cached": cached}


def run(level: Level, params_file: str) -> dict[str, Any]:
    cfg = load_params(spec(level).params, params_file)
    return train(level, cfg[f"train.{level}"], tokenizer_settings(level, cfg[f"tokenize.{level}"]))


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(__doc__, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
