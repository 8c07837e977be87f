"""Training jobs for tests/test_ddp.py and bench/ddp.py: run under torchrun, or in-process for one process.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m bench.ddp_job jobs.json

``jobs.json`` is a list of jobs, run in order in the same process group::

    {"data": "<folder with data/windows/word, data/vocab/word.json>", "checkpoints": "<folder>",
     "train": {train.word keys to change}, "grads": "<file>" | null, "grads_step": 0, "fit": true}

``grads``: before training, rank 0 saves the gradients of batch ``grads_step`` (after DDP's
all-reduce: every rank holds the same) as ``{name: tensor}``. ``fit``: then train to the end.
``time_steps``: N (bench/ddp.py): instead, run 2 warm-up steps, then time N train steps
(no validation, no checkpoint) between barriers; rank 0 writes the timings to argv[2].
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.harness import section
from models import distributed
from models.device import set_threads
from models.lm import lm_trainer
from pipeline import paths
from pipeline.vocab import Vocab


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One job; returns rank 0's timings (steps, seconds) for the bench."""
    data = Path(job["data"])
    params = section("train.word", **job["train"])
    run = {"fingerprint": job.get("fingerprint", "ddp-test"), "tokenizer": None, "vocab_path": "vocab.json"}
    trainer = lm_trainer(
        params,
        data / paths.windows("word"),
        Path(job["checkpoints"]),
        Vocab.load(data / paths.vocab("word")),
        run,
    )
    if job.get("grads"):
        trainer.model.train()
        step = trainer.step
        trainer.step = job.get("grads_step", 0)
        trainer.backward()
        trainer.step = step
        if trainer.dist.main:
            torch.save({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()}, job["grads"])
        trainer.optimizer.zero_grad(set_to_none=True)
    if job.get("time_steps"):
        trainer.model.train()
        for _ in range(2):  # warm-up: allocations, DDP's bucket rebuild after the first step
            trainer.train_step()
        distributed.barrier(trainer.dist)
        t0 = time.perf_counter()
        for _ in range(job["time_steps"]):
            trainer.train_step()
        distributed.barrier(trainer.dist)
        return {"steps": job["time_steps"], "seconds": time.perf_counter() - t0}
    t0, step0 = time.perf_counter(), trainer.step
    if job.get("fit", True):
        trainer.fit()
    return {"steps": trainer.step - step0, "seconds": time.perf_counter() - t0}


def main(argv: list[str]) -> int:
    set_threads(1)
    jobs = json.loads(Path(argv[0]).read_text())
    timings = [run_job(job) for job in jobs]
    if distributed.current().main and len(argv) > 1:
        Path(argv[1]).write_text(json.dumps(timings))
    distributed.teardown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
