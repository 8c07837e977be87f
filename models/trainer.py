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

Data parallel: under ``torchrun --nproc_per_node N`` the same code joins the
process group (models/distributed.py), trains through DDP, reads its block of
each global batch (the task shards it), normalises the loss by the all-reduced
item count, validates on rank 0, and writes checkpoints from rank 0 only. A
checkpoint resumes bit-exactly with the same world size, and with the same
batches (float sums in another order) with another.
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
from models import distributed
from models.device import autocast, resolve_device
from pipeline.errors import RnnlabError
from pipeline.params import LoopParams


def _silent(_message: str) -> None:
    """The log of ranks other than 0."""


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
        log: Callable[[str], None] = print,
    ):
        self.p, self.key, self.log = loop, key, log
        self.path = Path(ckpt_dir) / ckpt.FILE
        self.fingerprint = fingerprint  # identifies data + params + code: a checkpoint of another is ignored
        self.device = resolve_device(loop.device, f"{key}.device")
        # Under torchrun: join the process group, one GPU per process (models/distributed.py).
        self.dist, self.device = distributed.setup(self.device)
        if not self.dist.main:
            self.log = _silent  # rank 0 alone logs
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
        self._resume()
        # What train_loss runs through: DDP (gradients all-reduced in backward) or the model itself.
        self.train_model = distributed.wrap(self.model, self.dist, self.device)

    @property
    def done(self) -> bool:
        return self.epoch >= self.p.epochs

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
            return
        saved = ckpt.load(self.path, map_location=self.device)
        if saved.get("fingerprint") != self.fingerprint:
            self.log(f"{self.path}: from other data, params or code; training from scratch")
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
            self.log(
                f"resuming a checkpoint of {len(ranks)} processes with {self.dist.world}: same batches, "
                "not bit-exact (float reduction order, dropout masks)"
            )
        self.step, self.epoch = progress["step"], progress["epoch"]
        self.loss_sum, self.count = progress["loss_sum"], progress["count"]
        self.history = saved["history"]
        self.task.load_state_dict(saved["task_state"])
        self.sha256 = ckpt.sha256_file(self.path)
        if saved.get("threads") != torch.get_num_threads() and self.device.type == "cpu":
            self.log(f"resuming with {torch.get_num_threads()} threads, not {saved.get('threads')}: not bit-exact")
        self.log(f"resumed from {self.path} at step {self.step} (epoch {self.epoch}/{self.p.epochs})")

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
        end = (self.epoch + 1) * self.steps_per_epoch
        every = self.p.checkpoint_every
        self.model.train()
        while self.step < end:
            self.train_step()
            if every and self.step % every == 0 and self.step < end:
                self.save()
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
