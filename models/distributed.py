"""Data-parallel training across processes: torchrun's command line and environment, the process group,
rank helpers.

torchrun (``python -m torch.distributed.run``) starts ``nproc_per_node`` copies of a
program on each node and tells each who it is through environment variables:
``RANK`` (0 … world - 1), ``WORLD_SIZE``, ``LOCAL_RANK`` (its GPU on this node),
``MASTER_ADDR`` and ``MASTER_PORT`` (the rendezvous). ``setup`` joins the process
group from them (nccl on CUDA, gloo on CPU); without them, or with one process, it
does nothing and everything below is a no-op, so single-process code paths stay
exactly what they were.

Semantics the Trainer builds on (docs/scaling.md, "Distributed training"):

* **One global batch per step.** A step reads the batch a single process would read
  (``batch_size`` rows); rank r takes the contiguous block ``models.data.block(rows,
  r, world)`` of it. So 1 and N processes see the same data at every step, and a checkpoint
  written by N processes resumes with M.
* **The loss is the single-process mean.** Each rank's summed loss is scaled by
  ``world / global_count`` before backward (DDP then averages gradients over the
  ranks), where ``global_count`` is the all-reduced number of real tokens: the
  gradient is that of the mean over the global batch even when ranks hold
  different token counts (padded mode).
* **Rank 0 writes**, after every rank has taken part in the collectives that gather
  what a checkpoint needs; the others wait at a barrier.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipeline.errors import RnnlabError

# A rank waits this long for the others at a collective before failing (e.g. validation
# on rank 0 while the rest wait at a broadcast). Long enough for a big validation set.
TIMEOUT = datetime.timedelta(minutes=30)


class DistributedError(RnnlabError):
    """The processes of a distributed run disagree (a missing shared folder, a bad world size)."""


def torchrun(nproc: int, module: str, args: Sequence[str] = ()) -> list[str]:
    """``torchrun --standalone --nproc_per_node N -m MODULE ARGS`` with this interpreter.

    ``--standalone`` runs a local rendezvous on a free port, so several trainings on one
    machine never collide.
    """
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, "-m", module, *args]


@dataclass(frozen=True)
class Dist:
    """Who this process is in the job; ``Dist()`` is a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and logs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def from_env() -> Dist:
    """This process's place as torchrun set it in the environment (single process without it)."""
    return Dist(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def current() -> Dist:
    """The process group this process has joined, or a single process if none."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return Dist()


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join torchrun's process group (once) and pick this rank's device.

    On CUDA each process drives the GPU ``LOCAL_RANK`` with nccl; on CPU the gloo
    backend. Returns the rank info and the device to use (``cuda:<local_rank>``).
    """
    env = from_env()
    if env.world <= 1:
        return current(), device
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    joined = current()
    if joined.world != env.world:
        raise DistributedError(f"WORLD_SIZE={env.world} but the process group has {joined.world} processes")
    return joined, device


def teardown() -> None:
    """Leave the process group (a clean exit: no warning from torch at shutdown)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """The module to train through: DDP around ``model`` when several processes run, else ``model``.

    DDP broadcasts rank 0's weights at construction and all-reduces (averages) the
    gradients during backward; its state_dict keys gain ``module.``, so checkpoints
    are always taken from the unwrapped ``model``.
    """
    if not d.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


# --- collectives (no-ops for a single process) ----------------------------------------------


def all_sum(values: Sequence[float], d: Dist, device: torch.device) -> list[float]:
    """Sum ``values`` over the ranks, in float64 (token counts stay exact up to 2**53)."""
    if not d.active:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)  # nccl needs the tensor on this rank's GPU; gloo, on the CPU
    return t.tolist()


def broadcast(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable value)."""
    if not d.active:
        return obj
    box = [obj if d.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (tensors: pass them on the CPU)."""
    if not d.active:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


# --- random streams --------------------------------------------------------------------------


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A well-mixed 63-bit seed for ``(seed, rank, step)``: dropout masks independent across ranks."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))
