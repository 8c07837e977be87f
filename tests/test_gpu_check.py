"""bench/gpu.py, the GPU path's checks: its CPU fallback end to end, its pieces, and one CUDA-only test.

The CUDA branch itself runs with ``make gpu-check`` on a machine with a GPU; here (CI, no GPU)
``--cpu --tiny`` runs every check but the CUDA-only parts, and the ``gpu``-marked test skips.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu
from bench.harness import ROOT, section

CHECKS = [
    "device: auto",
    "bf16 vs fp32: word",
    "bf16 vs fp32: char",
    "resume",
    "tokens/s: word",
    "tokens/s: char",
    "DDP, nproc 1",
]


@pytest.mark.slow
def test_the_cpu_fallback_runs_every_check_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "TMPDIR": str(tmp_path), "RNNLAB_THREADS": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "bench.gpu", "--cpu", "--tiny", "--workdir", str(tmp_path / "work")]
    proc = subprocess.run(
        [*argv, "--json", str(out)], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert [c["name"] for c in report["checks"]] == CHECKS
    assert [c["status"] for c in report["checks"]] == ["PASS"] * len(CHECKS), proc.stdout
    for name in CHECKS:  # the table, one row per check
        assert any(line.startswith(name) and " PASS " in line for line in proc.stdout.splitlines()), name
    resume = next(c for c in report["checks"] if c["name"] == "resume")
    assert resume["figures"]["bit_exact"] and not resume["figures"]["problems"]  # the CPU promise
    ddp = next(c for c in report["checks"] if c["name"] == "DDP, nproc 1")
    assert ddp["figures"]["backend"] == "gloo" and ddp["figures"]["allreduces"] >= ddp["figures"]["steps"] > 0
    for level in ("word", "char"):
        speed = next(c for c in report["checks"] if c["name"] == f"tokens/s: {level}")["figures"]
        assert speed["tokens_per_s"]["examples"] > 0 and math.isfinite(speed["ratios"]["rnnlab"])


def test_fp32_takes_autocast_out_of_every_models_module_and_puts_it_back() -> None:
    import models.evaluate
    import models.trainer
    from models import device

    original = device.autocast
    with gpu.fp32():
        for module in (device, models.trainer, models.evaluate):
            assert module.autocast is not original
            with module.autocast(torch.device("cuda")) as inside:  # a no-op even where CUDA would cast
                assert inside is None and not torch.is_autocast_enabled("cuda")
    assert device.autocast is original and models.trainer.autocast is original and models.evaluate.autocast is original


def test_the_table_fails_when_one_check_fails(capsys: pytest.CaptureFixture[str]) -> None:
    passed = gpu.Result("resume", True, "state restored exactly", ["a detail"])
    failed = gpu.Result("tokens/s: word", False, "0.30x (floor 0.5)")
    assert gpu.report([passed], 1.0) == 0
    assert gpu.report([passed, failed], 1.0) == 1
    out = capsys.readouterr().out
    assert "resume          PASS" in out and "tokens/s: word  FAIL" in out and "a detail" in out
    assert "2 checks: 1 PASS, 1 FAIL in 1 s (failed: tokens/s: word)" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_without_cuda_it_says_to_use_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu.main([]) == 2
    assert "torch sees no CUDA device; `python -m bench.gpu --cpu`" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_checkpoint_loads_and_resumes_on_the_cpu(lm_data: Path, tmp_path: Path) -> None:
    """Train on the GPU, then use and resume the checkpoint without one: every tensor maps to the CPU."""
    from models import checkpoint as ckpt
    from models.lm import lm_trainer
    from models.trainer import Trainer
    from pipeline.vocab import Vocab

    vocab_path = lm_data / "data/vocab/word.json"
    run = {"fingerprint": "cuda-to-cpu", "tokenizer": None, "vocab_path": str(vocab_path)}
    small = {"emb_dim": 8, "hidden": 16, "layers": 1, "batch_size": 8, "bptt": 10, "epoch_size": 4}

    def make(device: str, epochs: int) -> Trainer:
        p = section("train.word", **small, epochs=epochs, device=device)
        return lm_trainer(p, lm_data / "data/windows/word", tmp_path, Vocab.load(vocab_path), run)

    on_gpu = make("cuda", 1)
    on_gpu.fit()
    model, _, _ = ckpt.load_model(tmp_path, torch.device("cpu"), vocab_path)
    assert all(p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        logits, _ = model(torch.zeros(4, 2, dtype=torch.long))  # (T, B, V)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    on_cpu = make("cpu", 2)  # resumes the CUDA checkpoint (Adam's moments saved as CUDA tensors)
    assert (on_cpu.step, on_cpu.epoch) == (on_gpu.step, 1)
    assert all(t.device.type == "cpu" for s in on_cpu.optimizer.state.values() for t in s.values() if t.dim())
    on_cpu.fit()
    assert len(on_cpu.history) == 2 and math.isfinite(on_cpu.history[-1]["valid_loss"])
