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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from models import checkpoint as ckpt
from models.device import autocast, resolve_device
from pipeline.errors import RnnlabError
from pipeline.params import LoopParams


class TrainingDiverged(RnnlabError):
    """The loss or the gradients became NaN or infinite."""


class Task(Protocol):
    """What a Trainer trains. Batches must be a pure function of ``step`` (exact resume)."""

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
        """State carried between batches that a resumed run needs (tensors, plain types)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

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
    """Clip in place: by global L2 norm (seed 002) or each element by value (seed 001).

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
        log: Callable[[str], None] = print,
    ):
        self.p, self.key, self.log = loop, key, log
        self.path = Path(ckpt_dir) / ckpt.FILE
        self.fingerprint = fingerprint  # identifies data + params + code: a checkpoint of another is ignored
        self.device = resolve_device(loop.device, f"{key}.device")
        ckpt.seed_all(loop.seed)  # before the task builds its model: initialisation draws from it
        self.task = build_task(self.device)
        self.model = self.task.model
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
        self._resume()

    @property
    def done(self) -> bool:
        return self.epoch >= self.p.epochs

    # --- checkpoints --------------------------------------------------------------------

    def _resume(self) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # left by a SIGKILL mid-write
            stale.unlink(missing_ok=True)
        if not self.path.exists():
            return
        c = ckpt.load(self.path, map_location=self.device)
        if c.get("fingerprint") != self.fingerprint:
            self.log(f"{self.path}: from other data, params or code; training from scratch")
            return
        self.model.load_state_dict(c["model"])
        self.optimizer.load_state_dict(c["optimizer"])
        self.scheduler.load_state_dict(c["scheduler"])
        ckpt.set_rng_state(c["rng"])
        pr = c["progress"]
        self.step, self.epoch, self.loss_sum, self.count = pr["step"], pr["epoch"], pr["loss_sum"], pr["count"]
        self.history = c["history"]
        self.task.load_state_dict(c["task_state"])
        self.sha256 = ckpt.sha256_file(self.path)
        if c.get("threads") != torch.get_num_threads() and self.device.type == "cpu":
            self.log(f"resuming with {torch.get_num_threads()} threads, not {c.get('threads')}: not bit-exact")
        self.log(f"resumed from {self.path} at step {self.step} (epoch {self.epoch}/{self.p.epochs})")

    def checkpoint(self) -> dict[str, Any]:
        return {
            **self.task.checkpoint_fields(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train": self.p.model_dump(mode="json"),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            "progress": {"step": self.step, "epoch": self.epoch, "loss_sum": self.loss_sum,
                         "count": self.count, "done": self.done},  # fmt: skip
            "task_state": self.task.state_dict(),
            "history": self.history,
            "fingerprint": self.fingerprint,
            "threads": torch.get_num_threads(),
        }

    def save(self) -> None:
        """Write the checkpoint, unless the weights are no longer finite (the last good one stays)."""
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise self._diverged("the weights", "non-finite")
        self.sha256 = ckpt.save(self.checkpoint(), self.path)

    def _diverged(self, what: str, value: object) -> TrainingDiverged:
        kept = f"the last good checkpoint is kept at {self.path}" if self.path.exists() else "no checkpoint was written"
        return TrainingDiverged(
            f"training diverged: {what} became {value} at step {self.step + 1} (epoch {self.epoch + 1}); {kept}. "
            f"Lower {self.key}.lr or clip gradients ({self.key}.clip: norm, a smaller {self.key}.clip_value)"
        )

    # --- training -----------------------------------------------------------------------

    def train_step(self) -> None:
        with autocast(self.device):
            loss, count = self.task.train_loss(self.model, self.step)
        value = loss.item()
        if not math.isfinite(value):
            raise self._diverged("the loss", value)
        self.optimizer.zero_grad(set_to_none=True)
        (loss / count).backward()  # the mean over real items only (padding never counts)
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
        end = (self.epoch + 1) * self.steps_per_epoch
        every = self.p.checkpoint_every
        self.model.train()
        while self.step < end:
            self.train_step()
            if every and self.step % every == 0 and self.step < end:
                self.save()
        seconds = time.perf_counter() - t0
        trained = self.count - count0  # this process's share of the epoch (a resumed epoch counts less)
        valid = self.task.validate()
        self.scheduler.step(valid["loss"])
        train = self.loss_sum / max(self.count, 1)
        record = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "train_loss": train,
            **{f"valid_{k}": v for k, v in valid.items()},
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        self.history.append(record)
        self.epoch += 1
        self.loss_sum, self.count = 0.0, 0
        self.save()
        self.rate = trained / seconds if seconds > 0 else 0.0
        shown = ", ".join(f"{k} {v:.4f}" for k, v in valid.items())
        self.log(
            f"epoch {record['epoch']}/{self.p.epochs} step {self.step}: train {train:.4f}, valid {shown}; "
            f"lr {record['lr']:.3g}; {trained:,} {self.task.unit} at {self.rate:,.0f}/s"
        )
        return record

    def fit(self) -> list[dict[str, Any]]:
        """Run the remaining epochs; return the history."""
        while not self.done:
            self.run_epoch()
        return self.history
