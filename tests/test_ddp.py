"""Data-parallel training: torchrun with 2 processes on gloo/CPU against one process, on a tiny config.

Claims checked (docs/scaling.md, "Distributed training"):

* rank blocks of a step make up exactly the single-process batch, in all three modes;
* the first step's gradients equal one process's to 1e-5 (stream, window, padded with unequal
  token counts per rank, and a last batch of one row, where one rank's block is empty), also
  with the output layer in slices and with the adaptive softmax;
* final losses agree with one process within LOSS_TOL (full and adaptive softmax);
* two 2-process runs give bit-identical weights (with and without dropout);
* a 2-process checkpoint resumes bit-exactly with 2 processes, and with 1 process to LOSS_TOL;
* the train flow launches torchrun when ``train.<level>.distributed.nproc`` is 2, and nproc
  stays out of the fingerprint (the 1-process flow is a cache hit).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.ddp_job import run_job
from bench.harness import ROOT, load_params, write_params
from models import checkpoint as ckpt
from models import distributed
from models.data import IGNORE, block, train_batches
from models.device import set_threads
from pipeline import paths, procs
from tests.support import deterministic, run_train

# Measured: first-step gradients differ by <= 7.5e-9 (float32 sums split over 2 ranks), and the
# losses after 30 Adam steps by <= 3.2e-7. LOSS_TOL leaves ~300x room for other machines' float
# kernels, yet is ~1000x below what one epoch changes the loss by (~0.1): a wrong batch split
# or loss normalisation is caught by the gradient check, whose 1e-5 is a fixed requirement, not a measurement.
GRAD_TOL = 1e-5
LOSS_TOL = 1e-4

# Two layers, stream mode with its carried state; epoch 1 ends mid-pass (15 of ~50 steps),
# so the resumed state is a real one. Dropout 0: no random draws, so 1 and 2 processes
# compute the same function.
STREAM = {
    "emb_dim": 16,
    "hidden": 32,
    "layers": 2,
    "batch_size": 8,
    "bptt": 12,
    "epochs": 2,
    "epoch_size": 15,
    "checkpoint_every": 5,
    "lr": 0.003,
    "seed": 3,
    "device": "cpu",
}
DROPOUT = {**STREAM, "dropout": 0.3, "epochs": 1}
PADDED = {**STREAM, "mode": "padded", "batch_size": 7}  # 3 + 4 documents: unequal token counts per rank
# The output layer in slices (models/rnn.py): the full softmax 5 rows of logits at a time; the adaptive
# one (every cluster's parameters get a gradient on every rank, even with no rows) 20 rows of its head.
SLICED = {"logits_mb": 5 * 49 * 4 / 2**20}
ADAPTIVE = {"output": "adaptive", "cutoffs": [6, 20], "logits_mb": 20 * 8 * 4 / 2**20}


def torchrun(jobs: list[dict[str, Any]], folder: Path, nproc: int = 2) -> None:
    """Run ``jobs`` (bench/ddp_job.py) under torchrun; kill its whole process group whatever happens."""
    spec = folder / f"jobs-{len(list(folder.glob('jobs-*.json')))}.json"
    spec.write_text(json.dumps(jobs))
    argv = distributed.torchrun(nproc, "bench.ddp_job", [str(spec)])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RNNLAB_THREADS": "1"}
    proc = procs.start(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        procs.stop(proc)
    assert proc.returncode == 0, out


def short_last_batch(lm_data: Path) -> tuple[dict[str, Any], int]:
    """Params whose last batch of a pass holds 1 row (rank 0's block is empty), and that step."""
    for mode, name in (("window", "windows.npy"), ("padded", "padded.npy")):
        n = len(np.load(lm_data / f"data/windows/word/train/{name}", mmap_mode="r"))
        for b in range(3, 40):
            if n % b == 1:
                return {**STREAM, "mode": mode, "batch_size": b}, n // b  # steps_per_pass - 1
    raise AssertionError("no batch size leaves a last batch of one row")


@pytest.fixture(scope="module")
def runs(lm_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every training the tests compare: two 2-process launches, then the 1-process references."""
    out = tmp_path_factory.mktemp("ddp")
    short, last = short_last_batch(lm_data)

    def job(name: str, train: dict[str, Any], grads: bool = False, fit: bool = True, step: int = 0) -> dict[str, Any]:
        return {
            "data": str(lm_data),
            "checkpoints": str(out / name),
            "train": train,
            "grads": str(out / f"{name}.grads.pt") if grads else None,
            "grads_step": step,
            "fit": fit,
        }

    torchrun(
        [
            job("two-a", STREAM, grads=True),
            job("two-padded", PADDED, grads=True, fit=False),
            job("two-window", {**STREAM, "mode": "window", "batch_size": 5}, grads=True, fit=False),
            job("two-short", short, grads=True, fit=False, step=last),
            job("two-half", {**STREAM, "epochs": 1}),
            job("two-dropout-a", DROPOUT),
            job("two-sliced-padded", {**PADDED, **SLICED}, grads=True, fit=False),
            job("two-adaptive-short", {**short, **ADAPTIVE}, grads=True, fit=False, step=last),
            job("two-adaptive", {**STREAM, **ADAPTIVE, "epochs": 1}),
        ],
        out,
    )
    for copy in ("resume-two", "resume-one"):  # the 1-epoch checkpoint, resumed two ways below
        shutil.copytree(out / "two-half", out / copy)
    torchrun([job("two-b", STREAM), job("two-dropout-b", DROPOUT), job("resume-two", STREAM)], out)

    set_threads(1)
    run_job(job("one", STREAM, grads=True))
    run_job(job("one-padded", PADDED, grads=True, fit=False))
    run_job(job("one-window", {**STREAM, "mode": "window", "batch_size": 5}, grads=True, fit=False))
    run_job(job("one-short", short, grads=True, fit=False, step=last))
    run_job(job("resume-one", STREAM))
    run_job(job("one-sliced-padded", {**PADDED, **SLICED}, grads=True, fit=False))
    run_job(job("one-adaptive-short", {**short, **ADAPTIVE}, grads=True, fit=False, step=last))
    run_job(job("one-adaptive", {**STREAM, **ADAPTIVE, "epochs": 1}))
    return out


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _assert_close_history(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [h["step"] for h in a] == [h["step"] for h in b]
    for x, y in zip(a, b):
        for key in ("train_loss", "valid_loss"):
            assert abs(x[key] - y[key]) <= LOSS_TOL, (key, x, y)


def test_rank_blocks_make_up_the_single_process_batch_in_every_mode(lm_data: Path) -> None:
    folder = lm_data / "data/windows/word/train"
    for mode, batch_size in (("stream", 8), ("window", 7), ("padded", 5)):
        one = train_batches(mode, folder, batch_size, 12, seed=1)
        for world in (2, 3):
            ranks = [train_batches(mode, folder, batch_size, 12, seed=1, rank=r, world=world) for r in range(world)]
            for step in (0, 1, one.steps_per_pass - 1, one.steps_per_pass + 2):
                whole = one.batch(step)
                parts = [r.batch(step) for r in ranks]
                assert sum(p.tokens for p in parts) == whole.tokens
                cols = 0
                for r, part in enumerate(parts):
                    if part.tokens == 0:  # an empty block: one IGNOREd position, nothing learned
                        assert block(whole.inputs.shape[1], r, world)[0] == block(whole.inputs.shape[1], r, world)[1]
                        continue
                    b, t = part.inputs.shape[1], part.inputs.shape[0]
                    assert torch.equal(part.inputs, whole.inputs[:t, cols : cols + b]), (mode, world, step, r)
                    assert torch.equal(part.targets, whole.targets[:t, cols : cols + b])
                    assert (whole.targets[t:, cols : cols + b] == IGNORE).all()  # padded: a narrower block
                    assert part.fresh == whole.fresh
                    cols += b
                assert cols == whole.inputs.shape[1]


@pytest.mark.slow
def test_first_step_gradients_equal_one_process(runs: Path) -> None:
    for mode in ("", "-padded", "-window", "-short", "-sliced-padded", "-adaptive-short"):
        one, two = torch.load(runs / f"one{mode}.grads.pt"), torch.load(runs / f"two{mode if mode else '-a'}.grads.pt")
        diff = _max_diff(one, two)
        print(f"first-step gradients{mode or ' (stream)'}: max |2 procs - 1 proc| = {diff:.2e}")
        assert diff <= GRAD_TOL, (mode, diff)
        assert max(float(g.abs().max()) for g in one.values()) > 1e-3  # not trivially zero


@pytest.mark.slow
def test_final_losses_agree_with_one_process(runs: Path) -> None:
    one, two = ckpt.load(runs / "one"), ckpt.load(runs / "two-a")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    _assert_close_history(one["history"], two["history"])
    _assert_close_history(ckpt.load(runs / "one-adaptive")["history"], ckpt.load(runs / "two-adaptive")["history"])
    print("loss differences", [abs(x["valid_loss"] - y["valid_loss"]) for x, y in zip(one["history"], two["history"])])


@pytest.mark.slow
def test_two_process_runs_are_bit_identical(runs: Path) -> None:
    for a, b in (("two-a", "two-b"), ("two-dropout-a", "two-dropout-b")):
        x, y = ckpt.load(runs / a), ckpt.load(runs / b)
        for k in x["model"]:
            assert torch.equal(x["model"][k], y["model"][k]), (a, k)
        assert deterministic(x["history"]) == deterministic(y["history"])
    ranks = ckpt.load(runs / "two-dropout-a")["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])  # own dropout masks per rank


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_with_two_exactly_and_with_one_closely(runs: Path) -> None:
    whole = ckpt.load(runs / "two-a")
    same = ckpt.load(runs / "resume-two")  # epoch 1 by 2 processes, epoch 2 by 2 others
    assert deterministic(same["history"]) == deterministic(whole["history"])
    for k in whole["model"]:
        assert torch.equal(same["model"][k], whole["model"][k]), k
    other = ckpt.load(runs / "resume-one")  # epoch 1 by 2 processes, epoch 2 by 1
    assert deterministic(other["history"])[0] == deterministic(whole["history"])[0] and other["world_size"] == 1
    _assert_close_history(other["history"], whole["history"])
    assert _max_diff(other["model"], whole["model"]) < 1e-3  # Adam steps are at most lr = 3e-3


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_flows")
def test_the_train_flow_runs_torchrun_for_nproc_2_and_keeps_the_fingerprint(lm_workdir: Path) -> None:
    from models.lm import lm_trainer
    from pipeline.params import read_params
    from pipeline.vocab import Vocab

    base = load_params(lm_workdir / "params.yaml")
    write_params(lm_workdir / "params.yaml", {"train": {"word": {"distributed": {"nproc": 2}, "device": "cpu"}}}, base)
    two = run_train("word")
    saved = ckpt.load("artifacts/word/checkpoints")
    assert not two["cached"] and saved["world_size"] == 2 and two["sha256"] == ckpt.sha256_file(two["checkpoint"])
    assert [h["epoch"] for h in two["history"]] == [1, 2]
    assert saved["history"] == two["history"]

    # The same params in one process: the fingerprint leaves nproc out, so the result is reused.
    write_params(lm_workdir / "params.yaml", {"train": {"word": {"distributed": {"nproc": 1}, "device": "cpu"}}}, base)
    again = run_train("word")
    assert again["cached"] and again["sha256"] == two["sha256"]

    p = read_params("params.yaml").train.word
    one = lm_trainer(
        p,
        paths.windows("word"),
        lm_workdir / "one",
        Vocab.load(paths.vocab("word")),
        {"fingerprint": "x", "tokenizer": None, "vocab_path": "v"},
    ).fit()
    _assert_close_history(one, two["history"])


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_flows")
def test_a_batch_smaller_than_the_processes_fails_with_the_key(lm_workdir: Path) -> None:
    from pipeline.errors import RnnlabError

    write_params(
        lm_workdir / "params.yaml",
        {"train": {"word": {"distributed": {"nproc": 2}, "batch_size": 1, "device": "cpu"}}},
        load_params(lm_workdir / "params.yaml"),
    )
    with pytest.raises(RnnlabError, match=r"train\.word\.batch_size=1 is smaller than the 2 training processes"):
        run_train("word")
