"""Exact resume: a training process SIGKILLed at arbitrary points, restarted each time from its
last checkpoint, ends with weights bit-identical to an uninterrupted run (CPU, same threads)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.harness import ROOT
from models import checkpoint as ckpt
from tests.support import deterministic

# Dropout (RNG), two layers, stream mode (carried state), checkpoints mid-epoch and at epoch ends.
TRAIN = """
import sys
from pathlib import Path
from models.device import set_threads
from models.lm import lm_trainer
from pipeline.vocab import Vocab
from bench.harness import section

set_threads(1)
data, out = Path(sys.argv[1]), Path(sys.argv[2])
p = section("train.word", emb_dim=16, hidden=96, layers=2, dropout=0.3, batch_size=16, bptt=20, lr=0.003,
            epochs=3, epoch_size=30, checkpoint_every=4, seed=7, device="cpu")
run = {"fingerprint": "resume-test", "tokenizer": None, "vocab_path": "v"}
lm_trainer(p, data / "data/windows/word", out, Vocab.load(data / "data/vocab/word.json"), run).fit()
"""


def _start(script: Path, data: Path, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), str(data), str(out)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _progress(out: Path) -> tuple[int, bool] | None:
    try:
        pr = ckpt.load(out)["progress"]
    except ckpt.CheckpointError:
        return None
    return pr["step"], pr["done"]


@pytest.mark.slow
def test_sigkill_at_any_point_then_rerun_gives_bit_identical_weights(lm_data: Path, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    whole = _start(script, lm_data, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stdout.read()

    out = tmp_path / "killed"
    kills: list[int] = []  # the last checkpointed step at each kill
    delays = [0.0, 0.013, 0.031, 0.047]  # land in steps, validation and checkpoint writes alike
    for attempt in range(12):
        proc = _start(script, lm_data, out)
        seen = _progress(out)
        if attempt < len(delays):
            # Wait for this process to write a checkpoint of its own, then kill it a moment later.
            deadline = time.monotonic() + 300
            while proc.poll() is None and _progress(out) == seen:
                assert time.monotonic() < deadline, "waited 300 s for the training to write a checkpoint"
                time.sleep(0.002)
            time.sleep(delays[attempt])  # not a wait: where in the step the kill lands
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills.append((_progress(out) or (0, False))[0])
                continue
        assert proc.wait(timeout=300) == 0, proc.stdout.read()
        break
    print("kills at checkpointed steps", kills)
    assert _progress(out) == (90, True)
    assert len(kills) >= 3, f"only {len(kills)} kills landed before training finished: {kills}"
    assert any(k % 30 for k in kills), f"no kill landed mid-epoch: {kills}"

    a, b = ckpt.load(tmp_path / "whole"), ckpt.load(out)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after kills at steps {kills}"
    assert deterministic(a["history"]) == deterministic(b["history"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
