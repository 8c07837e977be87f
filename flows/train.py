"""Flow ``train``: fit one level's language model; cached on one fingerprint, resumable when killed.

A subflow of the ``lm@<level>`` stage (flows/lm.py). Caching rule (docs/models.md, "Caching"):

* **DVC decides whether the stage runs.** It reruns ``lm@<level>`` exactly when a
  declared dep or param changed: the windows and vocabulary, ``train.<level>``,
  ``tokenize.<level>``, the n-gram, evaluation or sampling params, or the code.
* **Prefect decides whether the training runs.** The ``fit`` task's cache key is one
  fingerprint (flows.common.fingerprint): the data's file hashes, the params, and a
  hash of the models/ code. A call with a known fingerprint (``dvc repro -f``, an
  edit to flows/ only, a changed ``sample.<level>`` param) returns the cached record in seconds, once
  the checkpoint on disk is checked to still have the recorded sha256; otherwise it
  trains again.
* **The checkpoint resumes what was cut short.** ``artifacts/<level>/checkpoints`` is
  ``persist: true``, so DVC keeps it when the stage reruns: a killed run restarts
  from its last checkpoint, and a checkpoint of another fingerprint is ignored.
* **Several processes.** With ``train.<level>.distributed.nproc`` above 1, ``fit`` runs
  the same training under torchrun (models/ddp_train.py, DDP) as a subprocess; the DVC
  stage and this flow are unchanged for users. nproc is not in the fingerprint: it
  changes only the float summation order, so any nproc resumes and reuses a result.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import lm_fingerprint, progress_artifact, train_all
from models import checkpoint as ckpt
from models import ddp_train, distributed
from models.data import read_meta, train_batches
from models.lm import lm_trainer
from pipeline import paths, procs
from pipeline.codedeps import model_code
from pipeline.errors import RnnlabError
from pipeline.io import sha256_file
from pipeline.params import DistributedParams, Level, TrainParams
from pipeline.paths import checkpoints
from pipeline.progress import MODE_ENV, SECONDS_ENV, Hook, Progress, parse_line
from pipeline.vocab import Vocab

logger = logging.getLogger(f"rnnlab.{__name__}")

# The models/ modules this stage imports (by name): their hashes are the fingerprint's code version.
TRAIN_CODE = model_code("flows.train")
# The training table artifact's columns; "seconds" is the training wall-clock at each validation.
HISTORY_COLUMNS = ("epoch", "step", "train_loss", "valid_loss", "valid_perplexity", "lr", "seconds")


class TrainingLaunchError(RnnlabError):
    """The torchrun training processes failed."""


def fingerprint_params(params: TrainParams) -> TrainParams:
    """``params`` as the fingerprint sees them: without ``distributed``, which changes only the float
    summation order (as the thread count does), so that a checkpoint resumes, and a cached result is
    reused, with any number of processes."""
    return params.model_copy(update={"distributed": DistributedParams(nproc=1)})


@task(name="load-data", cache_policy=NO_CACHE)
def load_data(level: Level, params: TrainParams, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """Check the windows against the vocabulary; return the fingerprint (no arrays are read)."""
    vocab = Vocab.load(paths.vocab(level))
    meta = read_meta(paths.windows(level), vocab)
    return {
        "fingerprint": lm_fingerprint(level, fingerprint_params(params), tokenizer, TRAIN_CODE),
        "vocab_size": len(vocab),
        "splits": meta["splits"],
    }


def _fit_key(_ctx: object, p: dict[str, Any]) -> str:
    return f"train-{p['level']}-{p['fingerprint']}"


# Tagged "gpu": a tag concurrency limit (`prefect concurrency-limit create gpu 1`) then caps how
# many trainings share a GPU host. Only `fit` holds the slot, for the whole training: its nested
# train-epoch tasks must stay untagged, or with a limit of 1 they would wait on their own parent.
@task(name="fit", cache_key_fn=_fit_key, persist_result=True, result_serializer="json", tags=["gpu"])
def fit(level: Level, params: TrainParams, tokenizer: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """Train (or resume) to the last epoch; the result is cached under the fingerprint alone."""
    log = get_run_logger()
    if params.distributed.nproc > 1:
        return fit_torchrun(level, params, tokenizer, fingerprint, [progress_artifact(f"train.{level}")])
    trainer = lm_trainer(
        params,
        paths.windows(level),
        checkpoints(level),
        Vocab.load(paths.vocab(level)),
        {"fingerprint": fingerprint, "tokenizer": tokenizer, "vocab_path": str(paths.vocab(level))},
        key=f"train.{level}",
    )
    log.info(
        f"{trainer.task.cfg} on {trainer.device}: {trainer.steps_per_epoch} steps per epoch, {params.epochs} epochs"
    )
    train_all({"": trainer})
    return record_of(level, fingerprint)


# Seconds between rank 0's progress lines, which this process reads to show the progress as its own.
RANK_PROGRESS_SECONDS = 2.0
RESUMED = re.compile(r"^(?:rnnlab: )?resumed from .* at step (\d+) ")  # models/trainer.py says so


def fit_torchrun(
    level: Level, params: TrainParams, tokenizer: dict[str, Any], fingerprint: str, hooks: Sequence[Hook] = ()
) -> dict[str, Any]:
    """Train with ``params.distributed.nproc`` torchrun processes (models/ddp_train.py); the same record.

    Rank 0's log lines come through to this process's log (and so to Prefect's); its progress
    lines, every RANK_PROGRESS_SECONDS, move this process's progress of the run (a bar on a terminal,
    ``hooks``), which is complete once the ranks exit 0. The launcher runs in its own process group,
    stopped whole if this task is interrupted.
    """
    nproc = params.distributed.nproc
    argv = distributed.torchrun(
        nproc,
        ddp_train.MODULE,
        ddp_train.arguments(
            params,
            paths.windows(level),
            paths.vocab(level),
            checkpoints(level),
            fingerprint,
            f"train.{level}",
            tokenizer,
        ),
    )
    logger.info(f"launching {nproc} training processes: {shlex.join(argv)}")
    errors: list[str] = []  # each rank prints a user error as "error: rank R: ..." (models/ddp_train.py)
    desc = f"train.{level}"
    # Steps per epoch as the Trainer counts them: global batches, whatever the number of processes.
    data = paths.windows(level) / "train"
    steps = (
        params.epoch_size
        or train_batches(params.mode, data, params.batch_size, params.bptt, params.seed).steps_per_pass
    )
    progress = Progress(desc, params.epochs * steps, unit="steps", logger=logger, hooks=hooks)
    env = {**os.environ, MODE_ENV: "lines", SECONDS_ENV: str(RANK_PROGRESS_SECONDS)}

    def relay(line: str) -> None:
        line = line.rstrip()
        if line.startswith("error: "):
            errors.append(line.removeprefix("error: "))
        elif (seen := parse_line(line)) is not None:
            if seen.desc == desc:  # the run's progress, not a validation's
                progress.set(seen.done)
        elif resumed := RESUMED.search(line):  # the steps before it are not this run's
            progress.initial = progress.done = int(resumed[1])
            logger.info(line.removeprefix("rnnlab: "))
        elif line.startswith("warning: "):
            logger.warning(line.removeprefix("warning: "))
        elif line.strip(" *"):  # torchrun frames its banner in asterisks
            logger.info(line.removeprefix("rnnlab: "))

    try:  # torchrun and its workers in a process group of their own, stopped whole if this is interrupted
        code, tail = procs.stream(argv, relay, tail=30, env=env)
        if code == 0:
            progress.set(progress.total or 0)  # done (an early stop ends before steps x epochs)
    finally:
        progress.close()
    if code != 0:
        raise TrainingLaunchError(
            f"train.{level}: {nproc} torchrun processes failed (exit {code}): "
            + (errors[0] if errors else "\n".join(tail))
        )
    return record_of(level, fingerprint)


def record_of(level: Level, fingerprint: str) -> dict[str, Any]:
    """What ``fit`` returns (and Prefect caches): the finished checkpoint's path, sha256 and history, and
    the best validation epoch, whose weights (best.pt) the evaluation and sampling use."""
    path, best = checkpoints(level) / ckpt.FILE, ckpt.model_file(checkpoints(level))
    history = ckpt.load(path, mmap=True)["history"]
    return {
        "checkpoint": str(path),
        "sha256": sha256_file(path),
        "best": str(best),
        "best_sha256": sha256_file(best),
        "best_epoch": ckpt.weights_epoch(ckpt.load(best, mmap=True)) if best != path else history[-1]["epoch"],
        "fingerprint": fingerprint,
        "history": history,
    }


def intact(record: dict[str, Any], level: str) -> bool:
    """Whether the checkpoints a (cached) record describes are still on disk, byte for byte."""
    files = (
        (checkpoints(level) / ckpt.FILE, record["sha256"]),
        (Path(record["best"]), record["best_sha256"]),
    )
    return all(path.is_file() and sha256_file(path) == sha for path, sha in files)


@task(name="publish-history", cache_policy=NO_CACHE)
def publish_history(level: Level, record: dict[str, Any]) -> None:
    """The per-epoch table as the keyed table artifact ``<level>-training`` (DVCLive writes the curves)."""
    create_table_artifact(
        key=f"{level}-training",
        table=[{c: row.get(c) for c in HISTORY_COLUMNS} for row in record["history"]],
        description=f"Training, {level} level, a row per epoch: losses (nats/token), validation perplexity, "
        "learning rate and training wall-clock (s)",
    )


@flow(name="train")
def train(level: Level, params: TrainParams, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """Train ``level``'s model from ``data/windows/<level>`` into ``artifacts/<level>/``."""
    log = get_run_logger()
    data = load_data(level, params, tokenizer)
    state = fit(level, params, tokenizer, data["fingerprint"], return_state=True)
    record, cached = state.result(), state.name == "Cached"
    if cached and not intact(record, level):
        log.info(f"cached checkpoints in {checkpoints(level)} are missing or changed: training again")
        record, cached = fit.with_options(refresh_cache=True)(level, params, tokenizer, data["fingerprint"]), False
    log.info(
        f"{'cache hit: ' if cached else ''}checkpoint {record['checkpoint']} sha256 {record['sha256'][:12]}; "
        f"best validation epoch {record['best_epoch']} ({record['best']})"
    )
    publish_history(level, record)
    return {**record, "cached": cached}
