"""Shared by every flow: training fingerprints, the epoch task, progress artifacts, DVCLive, a flow stage's main.

Outputs of one language-model level live under ``artifacts/<level>/`` (pipeline/paths.py names them,
dvc.yaml repeats them)::

    checkpoints/last.pt   the rolling training checkpoint (persist: true, so a killed run resumes)
    checkpoints/best.pt   the best validation epoch's weights: what is evaluated, sampled and promoted
    ngram.json            the Kneser-Ney baseline's held-out scores
    evaluation.json       every held-out split's loss, perplexity, bits, error rate and oracle gap
    samples.txt           generated text
    plots/metrics/*.tsv   DVCLive: train and valid loss, learning rate and training seconds per epoch
    plots/perplexity.json the RNN's, the n-gram's and the oracle's perplexity per held-out split
    metrics.json          DVCLive: the headline numbers of the test split (the DVC metrics)

Caching rule, for the language models and every other task: DVC decides whether a stage runs;
the Trainer's checkpoint (``persist: true`` in dvc.yaml) decides whether training runs. A
checkpoint records its fingerprint (data hashes, params, code hashes); a rerun with the same
fingerprint finds it finished and trains nothing, a killed run resumes from it, one of another
fingerprint is ignored. The language models also key Prefect's cache of ``fit`` on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from models.device import set_threads
from pipeline import paths, stage
from pipeline.codedeps import ROOT, module_file
from pipeline.errors import RnnlabError
from pipeline.io import atomic_open, read_json, sha256_file
from pipeline.params import CharTokenizeParams, TrainParams, WordTokenizeParams

if TYPE_CHECKING:  # only for the annotation: importing the trainer would make it a dep of every stage
    from models.trainer import Trainer
    from pipeline.progress import Hook, Snapshot

logger = logging.getLogger(f"rnnlab.{__name__}")


def tokenizer_settings(level: str, cfg: WordTokenizeParams | CharTokenizeParams) -> dict[str, Any]:
    """What turns text into this level's tokens: stored in checkpoints so the CLI needs no params file."""
    if level == "word":
        return {"level": "word", "pattern": cfg.pattern, "lowercase": cfg.lowercase}
    return {"level": "char", "lowercase": cfg.lowercase}


def fingerprint(task: str, params: BaseModel | Mapping[str, Any], data: Mapping[str, Any], code: Iterable[str]) -> str:
    """A training's identity: sha256 over the data's file hashes, the params and the code's hashes.

    ``data`` names files by their sha256 (e.g. a windows stage's meta.json), ``code`` the modules
    the training imports (pipeline/codedeps.py ``model_code``), by name, so that a module keeps its key wherever its
    file lives. File hashes only: no tensor is hashed.
    """
    dumped = params.model_dump(mode="json") if isinstance(params, BaseModel) else dict(params)
    hashes = {m: sha256_file(ROOT / module_file(m)) for m in sorted(code)}
    parts = {"task": task, "data": data, "params": dumped, "code": hashes}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def train_fingerprint(
    task: str, windows: Path, train: TrainParams, tokenizer: dict[str, Any], code: Iterable[str]
) -> str:
    """A language model's fingerprint: its windows and vocabulary, its train params and the
    tokenizer settings the checkpoint records, and the models/ code its stage imports."""
    params = {"train": train.model_dump(mode="json"), "tokenizer": tokenizer}
    return fingerprint(task, params, windows_data(windows), code)


def lm_fingerprint(level: str, train: TrainParams, tokenizer: dict[str, Any], code: Iterable[str]) -> str:
    """The train stage's cache key for ``level``."""
    return train_fingerprint(f"lm-{level}", paths.windows(level), train, tokenizer, code)


def windows_data(folder: Path) -> dict[str, Any]:
    """What identifies a windows dataset: the sha256 of its arrays and of its vocabulary (meta.json)."""
    meta = read_json(Path(folder) / "meta.json")
    return {"files": meta["files"], "vocab_sha256": meta["vocab_sha256"]}


def folder_data(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (a Parquet document table)."""
    folder = Path(folder)
    return {f.relative_to(folder).as_posix(): sha256_file(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def _epoch_run_name(parameters: dict[str, Any]) -> str:
    part = parameters.get("part")
    return f"{part}-epoch-{parameters['epoch']}" if part else f"epoch-{parameters['epoch']}"


@task(name="train-epoch", cache_policy=NO_CACHE, task_run_name=_epoch_run_name)
def train_epoch(trainer: Trainer, epoch: int, part: str = "") -> dict[str, Any]:
    """One epoch block of any task's Trainer: epoch_size steps, validation, LR schedule, checkpoint.

    ``part`` names which of a flow's several models this is (a class, a direction) in the run's name.
    Untagged: the language model's ``fit`` holds the ``gpu`` slot, and a tagged child would wait on it.
    The trainer's messages reach this run's log through the ``rnnlab`` logger (prefect.toml).
    """
    return trainer.run_epoch()


ARTIFACT_SECONDS = 5.0  # between updates of a training's progress artifact: a few ms of API call each


class ProgressArtifact:
    """A Prefect progress artifact that follows a ``pipeline.progress.Progress`` (as one of its hooks):
    made with the first snapshot, then updated with the percentage and the same line the log shows."""

    def __init__(self, key: str, description: str) -> None:
        self.key = artifact_key(key)
        self.description = description
        self.id: Any = None

    def __call__(self, snap: Snapshot) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = snap.percent or 0.0
        if self.id is None:
            self.id = create_progress_artifact(percent, key=self.key, description=self.description)
        else:
            update_progress_artifact(self.id, percent, description=f"{self.description}: {snap.line()}")


def artifact_key(name: str) -> str:
    """``name`` as a Prefect artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def progress_artifact(desc: str) -> Hook:
    """A progress hook that keeps the artifact ``<desc>-progress`` of this run up to date."""
    return ProgressArtifact(f"{desc}-progress", f"training progress of {desc}"), ARTIFACT_SECONDS


def follow_progress(trainer: Trainer, part: str = "") -> None:
    """Name ``trainer``'s progress after ``part`` too, and give it a Prefect progress artifact (once)."""
    if part:
        trainer.desc = f"{trainer.key} {part}"
    if not any(isinstance(call, ProgressArtifact) for call, _ in trainer.hooks):
        trainer.hooks.append(progress_artifact(trainer.desc))


def train_all(trainers: Mapping[str, Trainer]) -> dict[str, int]:
    """Every trainer to its last epoch (trained, resumed or already done), one ``train_epoch`` task
    per epoch; several side by side, epoch by epoch, so their curves share their epochs. A key
    names its model in the task runs ("" for a flow's only one).

    Then each model gets its best validation epoch's weights back, for whatever the flow scores or
    exports next; returns that epoch per key.
    """
    for part, t in trainers.items():
        if not t.done:
            follow_progress(t, part)
    while not all(t.done for t in trainers.values()):
        for part, t in trainers.items():
            if not t.done:
                train_epoch(t, t.epoch + 1, part=part)
    return {part: t.use_best() for part, t in trainers.items()}


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV, atomically; floats as repr (they round-trip exactly), missing cells empty."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(columns) + "\n")
        for row in rows:
            f.write(",".join(repr(v) if isinstance(v := row.get(c, ""), float) else str(v) for c in columns) + "\n")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def warn(line: str) -> None:
    """One warning for the user (``warning: line`` on stderr, and the run's log): a default that did
    not fit the data and was adapted."""
    logger.warning(line)


def write_live(
    folder: Path, history: Sequence[Mapping[str, Any]], curves: Sequence[str], summary: Mapping[str, float]
) -> None:
    """Log a finished training with DVCLive: ``folder/plots/metrics/<curve>.tsv`` per curve, one row per
    epoch (step = epoch), and ``folder/metrics.json`` holding ``summary`` (DVC's metrics file).

    Written from the checkpoint's history once training is over, so a resumed or cached training
    logs exactly what a straight one does. The summary holds only the headline numbers, so that
    ``dvc metrics show`` stays a few columns wide; the curves' last values are in the plots.

    When the history records the training wall-clock (``seconds``, models/trainer.py), it goes to
    ``seconds.tsv`` too, row for row with the curves: dvc.yaml's plots take it as the x axis of
    loss against time. It never reaches ``summary`` (set last, it replaces what log_metric
    gathered): it differs from run to run.
    """
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    # save_dvc_exp/dvcyaml off: inside a DVC stage, DVC owns experiments and dvc.yaml already
    # declares these files; DVCLive only writes them.
    try:
        live = Live(dir=str(folder), save_dvc_exp=False, dvcyaml=False)
    except SCMError as e:  # DVCLive reads the git commit the run starts from
        raise RnnlabError(
            f"DVCLive cannot log {folder}: git says {e}; commit once (git add -A && git commit -m baseline) "
            "and run again: training is not repeated"
        ) from None
    with live:
        for row in history:
            live.step = int(row["epoch"])
            for name in (*curves, "seconds"):
                if row.get(name) is not None:
                    live.log_metric(name, float(row[name]))
        # Written, with the last step, on exit; it replaces what log_metric gathered.
        live.summary = {k: v if isinstance(v, int) else float(v) for k, v in summary.items()}


def stage_main(doc: str | None, argv: Sequence[str] | None, body: Callable[..., object], *, level: bool = False) -> int:
    """``python -m flows.X [--level L] [--params FILE]``: fixed torch threads, user errors without a traceback.

    ``body`` is called as ``body(level, params_file)`` with ``level=True``, else ``body(params_file)``.
    With ``PREFECT_API_URL`` set, the flow first waits until that API answers: ``rnnlab repro``
    starts its server while DVC runs the data stages, so it may still be starting.
    """
    args = stage.parser(doc, level=level).parse_args(argv)
    set_threads()
    quiet_prefect_logs()
    call = (lambda: body(args.level, args.params)) if level else (lambda: body(args.params))
    return stage.run(lambda: stop_as_stage(lambda: without_heartbeats(call)), setup=wait_for_prefect)


HEARTBEATS = "flows.heartbeat_frequency"  # seconds between a flow run's heartbeats; None: none


def without_heartbeats(call: Callable[[], object]) -> None:
    """``call()`` with Prefect's flow-run heartbeats off (``flows.heartbeat_frequency`` None).

    Heartbeats let a server-side automation mark a silent deployment run as crashed; a stage's flows
    run under DVC, never from a deployment (a served retraining run keeps them: it is not a stage).
    Prefect's heartbeat thread sleeps in one-second steps, and each flow run's end waits for it: about
    1 s per flow run, five in an lm stage. prefect.toml cannot say None (TOML has no null).
    """
    from prefect.settings import temporary_settings

    with temporary_settings(updates={HEARTBEATS: None}):
        call()


def wait_for_prefect() -> None:
    """Block until the configured Prefect API answers (none configured: the flow starts its own):
    a server still starting, e.g. ``rnnlab repro``'s. The deadline is the one Prefect's own start-up
    of a server keeps (``server.ephemeral.startup_timeout_seconds``, raised in prefect.toml)."""
    from prefect.settings import get_current_settings

    from pipeline import procs  # here, not above: it cannot change what a stage writes

    settings = get_current_settings()
    if (api := settings.api.url) and not procs.healthy(api):
        procs.wait_until(
            f"the Prefect API at {api}",
            lambda: procs.healthy(api),
            float(settings.server.ephemeral.startup_timeout_seconds),
            say=lambda line: print(f"rnnlab: {line}", file=sys.stderr, flush=True),
            hint="is the server running? `make server` starts one; or unset PREFECT_API_URL to let each flow "
            "start a temporary server of its own",
        )


def stop_as_stage(call: Callable[[], object]) -> None:
    """``call()``; Prefect's own form of SIGTERM (its engine records the run as crashed or
    cancelled, then raises TerminationSignal) becomes pipeline.stage's quiet stop, and a Prefect
    API that stopped answering one line (pipeline.stage.Failed)."""
    import httpx
    from prefect.exceptions import TerminationSignal
    from prefect.settings import get_current_settings

    try:
        call()
    except TerminationSignal as e:
        stage.note_stop(e.signal)
        raise stage.Stopped(e.signal) from None
    except httpx.TransportError as e:  # after Prefect's client gave up its retries
        api = get_current_settings().api.url
        raise stage.Failed(
            f"lost the Prefect API at {api} ({e}); is its server still running? `make server` starts one"
        ) from None


def says_it_all(exc: BaseException) -> bool:
    """Whether an exception's message is all a user needs, so that a traceback is only noise: a
    user error (stage.run prints it as one line), a full disk, a stop, or the Prefect API gone
    (the command that started the stage says how the server ended)."""
    import httpx
    from prefect.exceptions import TerminationSignal

    if isinstance(exc, (RnnlabError, KeyboardInterrupt, TerminationSignal, httpx.TransportError)):
        return True
    return isinstance(exc, OSError) and exc.errno in stage.NO_SPACE


class QuietPrefectLogs(logging.Filter):
    """On Prefect's log handlers: a record about an exception that ``says_it_all`` loses its
    traceback (the UI keeps the one-line message); on a console handler it is dropped, since the
    stage prints its own ``error:`` line. Once the stage is stopping, the console gets nothing
    more: the command that stopped it says what happened, in one line."""

    def __init__(self, console: bool) -> None:
        super().__init__()
        self.console = console

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.exceptions import TerminationSignal

        # Logged while a stop propagates (Prefect's engine records the crash as it unwinds): the
        # stage is stopping, even when Prefect's own SIGTERM handler took the signal first.
        if isinstance(handling := sys.exc_info()[1], TerminationSignal):
            stage.note_stop(handling.signal)
        elif isinstance(handling, KeyboardInterrupt):
            stage.note_stop(getattr(handling, "signum", signal.SIGINT))
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and says_it_all(exc):
            record.exc_info, record.exc_text = None, None
            record.rnnlab_told = True  # the record goes on to the root's handlers: they know it too
        if not self.console:
            return True
        return not getattr(record, "rnnlab_told", False) and stage.stopping() is None


def quiet_prefect_logs() -> None:
    """Put QuietPrefectLogs on every handler of the root, Prefect's and httpx's loggers (once), and
    have Prefect's console print its lines above any progress bar (``BesideBars``).

    Also the standard library's production setting ``logging.raiseExceptions = False``: a handler
    that cannot emit stays silent. Prefect's API log worker honours it; otherwise, when the server
    dies, it writes "--- Error logging to API ---" on stderr before ``rnnlab repro`` (or the flow's
    own client) says in one line what happened to the server.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    logging.raiseExceptions = False

    loggers = [logging.getLogger()] + [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.split(".")[0] in ("prefect", "httpx", "httpcore")
    ]
    for each in loggers:
        for handler in each.handlers:
            if not any(isinstance(f, QuietPrefectLogs) for f in handler.filters):
                handler.addFilter(QuietPrefectLogs(console=isinstance(handler, logging.StreamHandler)))
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.console.file, BesideBars):
                handler.console.file = BesideBars(handler.console.file)


class BesideBars:
    """A text stream that clears the progress bars drawn on it before each write and redraws them
    after (what pipeline/log.py's handler does for rnnlab's lines), so that a line never lands in a bar."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        tqdm_module = sys.modules.get("tqdm")  # bars exist only once tqdm was imported
        if tqdm_module is not None and getattr(tqdm_module.tqdm, "_instances", None):
            with tqdm_module.tqdm.external_write_mode(file=self.stream):
                return self.stream.write(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding...: the stream's
        return getattr(self.stream, name)
