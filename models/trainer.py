"""The training loop every rnnlab model shares: epochs, clipping, LR schedule, checkpoints, exact resume.

A ``Task`` says what is trained (its model, the loss of batch number ``step``,
its validation metrics); the ``Trainer`` does the rest, the same way for every
task: language models (models/lm.py), classifiers, sequence labellers, skip-gram.

    trainer = Trainer(lambda device: MyTask(..., device), loop_params, ckpt_dir, fingerprint)
    while not trainer.done:
        record = trainer.run_epoch()      # epoch_size steps, validation, LR schedule, checkpoint

Exact resume: a checkpoint (every ``checkpoint_every`` steps and at each epoch's
end) holds the weights, optimizer, scheduler, the torch RNG states, the task's
own state (e.g. a carried TBPTT state) and the running epoch sums. Batches are a
pure function of the step, so a run killed at any point and restarted from its
last checkpoint repeats exactly the same operations: on CPU, with the same
thread count, its final weights are bit-identical to an uninterrupted run's.

Best weights: after each validation that beats every earlier one, the weights go to
``best.pt`` beside ``last.pt`` (written first, so a kill between the two re-runs that
epoch and writes the same bytes again). The best epoch is derived from the history, so
it resumes exactly too. With ``early_stop: N`` training ends once N validations in a row
brought no improvement. ``use_best()`` puts the best weights back into the model.

Progress: one bar on a terminal (a line every ``RNNLAB_PROGRESS_SECONDS`` elsewhere) covers the
whole run, steps × epochs, from the step a resumed run starts at (pipeline/progress.py); hooks
in ``trainer.hooks`` receive it too (flows/ add a Prefect progress artifact). Messages go to the
``rnnlab.models.trainer`` logger.

Data parallel: under ``torchrun --nproc_per_node N`` the same code joins the
process group (models/distributed.py), trains through DDP, reads its block of
each global batch (the task shards it), normalises the loss by the all-reduced
item count, validates on rank 0, and writes checkpoints, logs and reports
progress from rank 0 only. A checkpoint resumes bit-exactly with the same world
size, and with the same batches (float sums in another order) with another.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from models import checkpoint as ckpt
from models import distributed
from models.device import autocast, resolve_device
from pipeline.errors import RnnlabError
from pipeline.params import LoopParams
from pipeline.progress import Hook, Progress

logger = logging.getLogger(f"rnnlab.{__name__}")


class TrainingDiverged(RnnlabError):
    """The loss or the gradients became NaN or infinite."""


class Task(Protocol):
    """What a Trainer trains. Batches must be a pure function of ``step`` (exact resume).

    A task class may subclass ``Task`` to inherit the defaults below (no state between batches).
    """

    model: nn.Module  # already on the device the Trainer chose
    steps_per_pass: int  # optimizer steps in one pass over the training data
    unit: str  # what train_loss counts, for the log: "tokens", "documents", ...

    def train_loss(self, model: nn.Module, step: int) -> tuple[Tensor, int]:
        """Summed loss of training batch ``step`` through ``model`` (the task's model, or a
        wrapper of it such as DDP), and how many items it sums over."""
        ...

    def validate(self) -> dict[str, float]:
        """Validation metrics; ``loss`` (lower is better) drives the LR schedule."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """State carried between batches that a resumed run needs (tensors, plain types). Under
        torchrun every rank calls it; a task whose state is per rank gathers it here (whole batch).
        The default: nothing carries between batches."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what ``state_dict`` returned (the default has nothing to take)."""

    def checkpoint_fields(self) -> dict[str, Any]:
        """Saved at the checkpoint's top level: what loading the model later needs (format, config, vocab...)."""
        ...


def make_optimizer(p: LoopParams, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    if p.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


def clip_gradients(params: list[nn.Parameter], how: str, value: float) -> float | None:
    """Clip in place: by global L2 norm, or each element by value.

    Clipping each element by value is what Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow
    for Machine Intelligence* (Bleeding Edge Press, 2016), chapter 6 does.

    Returns the global norm before clipping when ``how == "norm"``, else None.
    """
    if how == "norm":
        return float(nn.utils.clip_grad_norm_(params, value))
    if how == "value":
        nn.utils.clip_grad_value_(params, value)
    return None


class Trainer:
    """A task's model, optimizer and progress; resumes from ``ckpt_dir/last.pt`` when its fingerprint matches."""

    def __init__(
        self,
        build_task: Callable[[torch.device], Task],
        loop: LoopParams,
        ckpt_dir: Path,
        fingerprint: str,
        *,
        key: str = "train",
    ):
        self.p, self.key = loop, key
        self.path = Path(ckpt_dir) / ckpt.FILE
        self.best_path = Path(ckpt_dir) / ckpt.BEST
        self.fingerprint = fingerprint  # identifies data + params + code: a checkpoint of another is ignored
        self.device = resolve_device(loop.device, f"{key}.device")
        # Under torchrun: join the process group, one GPU per process (models/distributed.py).
        self.dist, self.device = distributed.setup(self.device)
        # Progress of the whole run (steps x epochs), from the first step this process trains: what it
        # is called, and its hooks (flows/ adds a Prefect progress artifact). Rank 0 alone reports.
        self.desc = key
        self.hooks: list[Hook] = []
        self.progress: Progress | None = None
        ckpt.seed_all(loop.seed)  # before the task builds its model: initialisation draws from it
        self.task = build_task(self.device)
        self.model = self.task.model
        if self.dist.rank > 0:
            # Same initial weights on every rank; from here on each rank draws its own dropout masks.
            torch.manual_seed(distributed.rank_seed(loop.seed, self.dist.rank))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(loop, self.params)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=loop.plateau_factor, patience=loop.plateau_patience
        )
        self.steps_per_epoch = loop.epoch_size or self.task.steps_per_pass

        self.step = 0  # optimizer steps done; also the data position
        self.epoch = 0  # epochs finished (validated)
        self.loss_sum, self.count = 0.0, 0  # running sums of the current epoch
        self.history: list[dict[str, Any]] = []
        self.sha256: str | None = None  # of the last checkpoint written
        self.rate = 0.0  # units per second in the last epoch, for the log
        # Training wall-clock so far, summed over the processes that resumed this run (history's
        # "seconds": plots only, it is not deterministic); _since is when the uncounted time began.
        self.seconds = 0.0
        self._since: float | None = None
        self._resume()
        # What train_loss runs through: DDP (gradients all-reduced in backward) or the model itself.
        self.train_model = distributed.wrap(self.model, self.dist, self.device)

    @property
    def done(self) -> bool:
        return self.epoch >= self.p.epochs or self.stopped_early

    @property
    def best(self) -> dict[str, Any] | None:
        """The history record of the best validation epoch so far (the first of equal losses), or None."""
        return min(self.history, key=lambda r: r["valid_loss"], default=None)

    @property
    def stopped_early(self) -> bool:
        """``early_stop`` validations in a row have not improved on the best one."""
        best = self.best
        return self.p.early_stop is not None and best is not None and self.epoch - best["epoch"] >= self.p.early_stop

    def _tick(self) -> float:
        """Add the wall-clock since the last tick (inside ``run_epoch``) to ``seconds``; return the total."""
        now = time.perf_counter()
        if self._since is not None:
            self.seconds += now - self._since
            self._since = now
        return self.seconds

    # --- checkpoints --------------------------------------------------------------------

    def _resume(self) -> None:
        if self.dist.main:
            for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # left by a SIGKILL mid-write
                stale.unlink(missing_ok=True)
        if self.dist.active:
            # Every rank reads the checkpoint itself; they must all find the same one (several
            # nodes need the checkpoints folder on a filesystem they all see).
            seen = distributed.gather(ckpt.sha256_file(self.path) if self.path.exists() else None, self.dist)
            if len(set(seen)) > 1:
                raise distributed.DistributedError(
                    f"{self.path}: the {self.dist.world} training processes see different checkpoints "
                    f"(sha256 {[s[:12] if s else None for s in seen]} by rank); put the checkpoints folder on "
                    "a filesystem every node shares"
                )
        if not self.path.exists():
            self._drop_best()
            return
        saved = ckpt.load(self.path, map_location=self.device)
        if saved.get("fingerprint") != self.fingerprint:
            self._log(f"{self.path}: from other data, params or code; training from scratch")
            self._drop_best()
            return
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        progress = saved["progress"]
        ranks = saved.get("rng_ranks") or [saved["rng"]]  # one generator state per rank that wrote it
        if len(ranks) == self.dist.world:
            ckpt.set_rng_state(ranks[self.dist.rank])
        else:
            # Another world size: the batches are the same (global-batch semantics), the float sums
            # run in another order, and each rank draws fresh dropout masks from (seed, rank, step).
            ckpt.set_rng_state(saved["rng"])
            if self.dist.rank > 0:
                torch.manual_seed(distributed.rank_seed(self.p.seed, self.dist.rank, progress["step"]))
            self._log(
                f"resuming a checkpoint of {len(ranks)} processes with {self.dist.world}: same batches, "
                "not bit-exact (float reduction order, dropout masks)"
            )
        self.step, self.epoch = progress["step"], progress["epoch"]
        self.loss_sum, self.count = progress["loss_sum"], progress["count"]
        self.seconds = progress.get("seconds", 0.0)
        self.history = saved["history"]
        self.task.load_state_dict(saved["task_state"])
        self.sha256 = ckpt.sha256_file(self.path)
        if saved.get("threads") != torch.get_num_threads() and self.device.type == "cpu":
            self._log(f"resuming with {torch.get_num_threads()} threads, not {saved.get('threads')}: not bit-exact")
        self._log(f"resumed from {self.path} at step {self.step} (epoch {self.epoch}/{self.p.epochs})")

    def _log(self, message: str) -> None:
        if self.dist.main:  # rank 0 alone logs
            logger.info(message)

    def _drop_best(self) -> None:
        """A run that starts from scratch removes the best weights of an earlier one (other params or data)."""
        if self.dist.main:
            self.best_path.unlink(missing_ok=True)
            for stale in self.best_path.parent.glob(f".{self.best_path.name}.*.tmp"):
                stale.unlink(missing_ok=True)

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint dict: ``ckpt.TRAINER_KEYS`` and the task's fields. Under torchrun every rank
        calls it: it gathers each rank's generator state and the task's per-rank state (collectives),
        rank 0 writes it."""
        fields = self.task.checkpoint_fields()
        own = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train": self.p.model_dump(mode="json"),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(),  # rank 0's
            "rng_ranks": distributed.gather(ckpt.rng_state(), self.dist),  # every rank's, in rank order
            "world_size": self.dist.world,
            "progress": {
                "step": self.step,
                "epoch": self.epoch,
                "loss_sum": self.loss_sum,
                "count": self.count,
                "seconds": self._tick(),
                "done": self.done,
            },
            "task_state": self.task.state_dict(),
            "history": self.history,
            "fingerprint": self.fingerprint,
            "threads": torch.get_num_threads(),
        }
        assert own.keys() == ckpt.TRAINER_KEYS.keys(), "update models.checkpoint.TRAINER_KEYS"
        assert not own.keys() & fields.keys(), f"a task's checkpoint_fields overwrite {own.keys() & fields.keys()}"
        return {**fields, **own}

    def save(self) -> None:
        """Write the checkpoint, unless the weights are no longer finite (the last good one stays)."""
        if not all(bool(torch.isfinite(p).all()) for p in self.params):  # the same on every rank
            raise self._diverged("the weights", "non-finite")
        state = self.checkpoint()
        if self.dist.main:
            self.sha256 = ckpt.save(state, self.path)
        distributed.barrier(self.dist)  # the others go on once the file is whole

    def save_best(self, record: dict[str, Any]) -> None:
        """Write the current weights as ``best.pt``: ``ckpt.BEST_KEYS`` and the task's fields (rank 0)."""
        if not self.dist.main:
            return
        fields = self.task.checkpoint_fields()
        own = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train": self.p.model_dump(mode="json"),
            "fingerprint": self.fingerprint,
            "best": {
                "epoch": record["epoch"],
                "step": record["step"],
                "valid": {k.removeprefix("valid_"): v for k, v in record.items() if k.startswith("valid_")},
            },
        }
        assert own.keys() == ckpt.BEST_KEYS.keys(), "update models.checkpoint.BEST_KEYS"
        ckpt.save({**fields, **own}, self.best_path)

    def use_best(self) -> int:
        """Load the best validation epoch's weights into the model; return that epoch (the last one when
        no best.pt was kept, e.g. a checkpoint of an older rnnlab)."""
        if self.best_path.is_file():
            saved = ckpt.load(self.best_path, map_location=self.device)
            if saved.get("fingerprint") == self.fingerprint:
                self.model.load_state_dict(saved["model"])
                return ckpt.weights_epoch(saved)
        return self.epoch

    def _diverged(self, what: str, value: object) -> TrainingDiverged:
        kept = f"the last good checkpoint is kept at {self.path}" if self.path.exists() else "no checkpoint was written"
        return TrainingDiverged(
            f"training diverged: {what} became {value} at step {self.step + 1} (epoch {self.epoch + 1}); {kept}. "
            f"Lower {self.key}.lr or clip gradients ({self.key}.clip: norm, a smaller {self.key}.clip_value)"
        )

    # --- training -----------------------------------------------------------------------

    def backward(self) -> tuple[float, int]:
        """Forward and backward of batch ``self.step``: the gradients of the mean loss over the real
        items of the (global) batch. Returns that batch's summed loss and item count."""
        # Last step's gradients go before the forward, not after it: with a large vocabulary they
        # are as big as the embedding and output layers, and the forward's peak need not hold them.
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device):
            loss, count = self.task.train_loss(self.train_model, self.step)
        if self.dist.active:
            # One all-reduce: the loss sum (for the log) and the item count (for the normalisation).
            value, total = distributed.all_sum([loss.item(), count], self.dist, self.device)
            count = int(total)
        else:
            value = loss.item()
        if not math.isfinite(value):  # all-reduced: every rank stops at the same step
            raise self._diverged("the loss", value)
        if self.dist.active:
            # DDP averages gradients over the ranks, so world / N per rank gives sum_r grad(loss_r) / N: the
            # single-process mean over all N real items, whatever each rank's share (padded mode).
            (loss * (self.dist.world / max(count, 1))).backward()
        else:
            (loss / count).backward()  # the mean over real items only (padding never counts)
        return value, count

    def train_step(self) -> None:
        value, count = self.backward()
        norm = clip_gradients(self.params, self.p.clip, self.p.clip_value)
        if norm is not None and not math.isfinite(norm):
            raise self._diverged("the gradient norm", norm)
        self.optimizer.step()
        self.loss_sum += value
        self.count += count
        self.step += 1

    def run_epoch(self) -> dict[str, Any]:
        """Train to the end of the current epoch, validate, step the LR schedule, checkpoint."""
        t0, count0 = time.perf_counter(), self.count
        self._since = t0  # from here on the wall-clock counts (not the time before, or between processes)
        end = (self.epoch + 1) * self.steps_per_epoch
        every = self.p.checkpoint_every
        progress = self._progress()
        self.model.train()
        try:
            while self.step < end:
                self.train_step()
                progress.update()
                if every and self.step % every == 0 and self.step < end:
                    self.save()
        except BaseException:
            progress.close()
            raise
        seconds = time.perf_counter() - t0
        trained = self.count - count0  # this epoch's items over every rank (a resumed epoch counts less)
        self.optimizer.zero_grad(set_to_none=True)  # validation has no use for the last step's gradients
        # Rank 0 validates on the whole valid split (metrics exactly as one process computes them);
        # every rank then steps the same LR schedule.
        valid = distributed.broadcast(self.task.validate() if self.dist.main else None, self.dist)
        self.scheduler.step(valid["loss"])
        train = self.loss_sum / max(self.count, 1)
        record = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "train_loss": train,
            **{f"valid_{k}": v for k, v in valid.items()},
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(self._tick(), 3),  # training wall-clock when this validation ended
        }
        improved = all(valid["loss"] < r["valid_loss"] for r in self.history)
        self.history.append(record)
        self.epoch += 1
        self.loss_sum, self.count = 0.0, 0
        if improved:
            self.save_best(record)  # before last.pt: a kill in between re-runs this epoch, which writes it again
        self.save()
        self.rate = trained / seconds if seconds > 0 else 0.0
        shown = ", ".join(f"{k} {v:.4f}" for k, v in valid.items())
        self._log(
            f"epoch {record['epoch']}/{self.p.epochs} step {self.step}: train {train:.4f}, valid {shown}"
            f"{' (best)' if improved else ''}; lr {record['lr']:.3g}; "
            f"{trained:,} {self.task.unit} at {self.rate:,.0f}/s"
        )
        if self.stopped_early and self.epoch < self.p.epochs:
            best = self.best
            assert best is not None
            self._log(
                f"early stop after epoch {self.epoch}: validation loss has not improved for {self.p.early_stop} "
                f"epochs ({self.key}.early_stop); the best, {best['valid_loss']:.4f} at epoch {best['epoch']}, is kept"
            )
        if self.done:
            progress.close()
        return record

    def _progress(self) -> Progress:
        """The run's Progress, made at its first epoch: steps × epochs in all, from the step it resumed at."""
        if self.progress is None or self.progress.closed:
            main = self.dist.main
            self.progress = Progress(
                self.desc,
                self.p.epochs * self.steps_per_epoch,
                unit="steps",
                initial=self.step,
                logger=logger,
                mode=None if main else "off",
                hooks=self.hooks if main else (),
            )
        return self.progress

    def fit(self) -> list[dict[str, Any]]:
        """Run the remaining epochs; return the history."""
        while not self.done:
            self.run_epoch()
        return self.history
