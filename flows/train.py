"""Flow ``train``: fit one level's language model; cached on one fingerprint, resumable when killed.

A subflow of the ``lm@<level>`` stage (flows/lm.py). Caching rule (README, "Language models"):

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

import contextlib
import os
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import checkpoints, lm_fingerprint, markdown_table, model_code, train_all
from models import ddp_train
from models.checkpoint import FILE
from models.checkpoint import load as load_checkpoint
from models.data import read_meta
from models.lm import lm_trainer
from pipeline import paths
from pipeline.errors import RnnlabError
from pipeline.io import sha256_file
from pipeline.params import DistributedParams, Level, TrainParams
from pipeline.vocab import Vocab

# The models/ modules this stage imports (by name): their hashes are the fingerprint's code version.
TRAIN_CODE = model_code("flows.train")
HISTORY_COLUMNS = ("epoch", "step", "train_loss", "valid_loss", "valid_perplexity", "lr")


class TrainingLaunchError(RnnlabError):
    """The torchrun training processes failed."""


def fingerprint_params(params: TrainParams) -> TrainParams:
    """``params`` as the fingerprint sees them: without ``distributed``, which changes only the float
    summation order (as the thread count does), so that a checkpoint resumes, and a cached result is
    reused, with any number of processes."""
    return params.model_copy(update={"distributed": DistributedParams()})


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
        return fit_torchrun(level, params, tokenizer, fingerprint, log.info)
    trainer = lm_trainer(
        params,
        paths.windows(level),
        checkpoints(level),
        Vocab.load(paths.vocab(level)),
        {"fingerprint": fingerprint, "tokenizer": tokenizer, "vocab_path": str(paths.vocab(level))},
        key=f"train.{level}",
        log=log.info,
    )
    log.info(
        f"{trainer.task.cfg} on {trainer.device}: {trainer.steps_per_epoch} steps per epoch, {params.epochs} epochs"
    )
    train_all({"": trainer})
    return {
        "checkpoint": str(trainer.path),
        "sha256": trainer.sha256,
        "fingerprint": fingerprint,
        "history": trainer.history,
    }


def fit_torchrun(
    level: Level, params: TrainParams, tokenizer: dict[str, Any], fingerprint: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """Train with ``params.distributed.nproc`` torchrun processes (models/ddp_train.py); the same record.

    Rank 0's log lines come through to the Prefect log. The launcher runs in its own
    process group, stopped whole if this task is interrupted.
    """
    nproc = params.distributed.nproc
    argv = ddp_train.command(
        nproc,
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
    log(f"launching {nproc} training processes: {shlex.join(argv)}")
    tail: deque[str] = deque(maxlen=30)
    errors: list[str] = []  # each rank prints a user error as "error: rank R: ..." (models/ddp_train.py)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if line.startswith("error: "):
                errors.append(line.removeprefix("error: "))
            if line.strip(" *"):  # torchrun frames its banner in asterisks
                log(line)
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: stop torchrun and its workers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if code != 0:
        raise TrainingLaunchError(
            f"train.{level}: {nproc} torchrun processes failed (exit {code}): "
            + (errors[0] if errors else "\n".join(tail))
        )
    path = checkpoints(level) / FILE
    return {
        "checkpoint": str(path),
        "sha256": sha256_file(path),
        "fingerprint": fingerprint,
        "history": load_checkpoint(path)["history"],
    }


def intact(record: dict[str, Any], level: str) -> bool:
    """Whether the checkpoint a (cached) record describes is still on disk, byte for byte."""
    path = checkpoints(level) / FILE
    return path.is_file() and sha256_file(path) == record["sha256"]


@task(name="publish-history", cache_policy=NO_CACHE)
def publish_history(level: Level, record: dict[str, Any]) -> None:
    """The per-epoch table as the keyed artifact ``<level>-training`` (DVCLive writes the curves)."""
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
    publish_history(level, record)
    return {**record, "cached": cached}
