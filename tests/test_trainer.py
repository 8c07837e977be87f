"""The training loop: masked loss, clipping, optimizers, schedule, checkpoints, divergence."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.harness import section
from models import checkpoint as ckpt
from models.data import IGNORE
from models.evaluate import lm_loss
from models.lm import lm_trainer
from models.trainer import Trainer, TrainingDiverged, clip_gradients
from pipeline.vocab import Vocab
from tests.support import deterministic

RUN = {
    "fingerprint": "test",
    "tokenizer": {"level": "word", "pattern": "[a-z]+|[.]", "lowercase": True},
    "vocab_path": "data/vocab/word.json",
}
SMALL = {"emb_dim": 8, "hidden": 16, "layers": 1, "batch_size": 8, "bptt": 10, "epochs": 2, "epoch_size": 6, "lr": 0.01}


def make(root: Path, out: Path, level: str = "word", run: dict[str, Any] = RUN, **over: Any) -> Trainer:
    p = section("train.word", **{**SMALL, **over})
    vocab = Vocab.load(root / f"data/vocab/{level}.json")
    return lm_trainer(p, root / f"data/windows/{level}", out, vocab, run)


def test_masked_loss_ignores_whatever_the_logits_say_at_padding() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 7, requires_grad=True)  # (T, B, V)
    targets = torch.randint(0, 7, (5, 3))
    targets[3:, 1] = IGNORE  # row 1 is 3 tokens long
    targets[1:, 2] = IGNORE  # row 2 is 1 token long
    base = lm_loss(logits, targets)
    base.backward()
    assert torch.all(logits.grad[3:, 1] == 0) and torch.all(logits.grad[1:, 2] == 0)
    changed = logits.detach().clone()
    changed[3:, 1] = 1e4 * torch.randn(2, 7)
    changed[1:, 2] = float("nan")
    assert torch.equal(lm_loss(changed, targets), base.detach())
    real = targets != IGNORE
    manual = -torch.log_softmax(logits.detach(), -1).gather(2, targets.clamp(min=0)[..., None])[..., 0][real].sum()
    assert torch.allclose(base, manual)


def test_clipping_bounds_the_global_norm_or_each_value() -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(10, 10)) for _ in range(3)]
    for p in params:
        p.grad = 100 * torch.randn_like(p)
    before = clip_gradients(params, "norm", 0.5)
    assert before > 0.5
    after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert after <= 0.5 * (1 + 1e-5)
    for p in params:
        p.grad = 100 * torch.randn_like(p)
    assert clip_gradients(params, "value", 0.1) is None
    assert max(p.grad.abs().max() for p in params) <= 0.1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "mode", "level"),
    [
        ("adam", "stream", "word"),
        ("rmsprop", "window", "char"),
        ("adadelta", "padded", "word"),
        ("sgd", "stream", "char"),
    ],
)
def test_each_optimizer_and_mode_trains(lm_data: Path, tmp_path: Path, optimizer: str, mode: str, level: str) -> None:
    lr = {"adadelta": 1.0, "sgd": 1.0}.get(optimizer, 0.01)
    t = make(lm_data, tmp_path, level, optimizer=optimizer, mode=mode, lr=lr, momentum=0.9 * (optimizer == "sgd"))
    history = t.fit()
    assert [h["epoch"] for h in history] == [1, 2] and history[-1]["step"] == 12
    assert history[-1]["valid_loss"] < math.log(t.task.cfg.vocab_size)  # beats a uniform guess
    assert (tmp_path / ckpt.FILE).is_file()


@pytest.mark.slow
def test_plateau_halves_the_lr_when_validation_stalls(lm_data: Path, tmp_path: Path) -> None:
    t = make(lm_data, tmp_path, lr=1e-6, epochs=3, plateau_factor=0.5, plateau_patience=0)
    lrs = [h["lr"] for h in t.fit()]
    assert lrs[0] == 1e-6 and lrs[-1] < lrs[0]


@pytest.mark.slow
def test_checkpoint_is_plain_and_resume_in_process_is_exact(lm_data: Path, tmp_path: Path) -> None:
    whole = make(lm_data, tmp_path / "a", dropout=0.3, layers=2, checkpoint_every=4)
    whole.fit()
    raw = torch.load(tmp_path / "a" / ckpt.FILE, weights_only=True)  # no pickled classes
    assert raw["progress"].pop("seconds") > 0  # the training wall-clock, for the plots
    assert raw["progress"] == {"step": 12, "epoch": 2, "loss_sum": 0.0, "count": 0, "done": True}
    assert set(raw["rng"]) == {"torch", "cuda"} and raw["vocab"]["sha256"]

    cut = make(lm_data, tmp_path / "b", dropout=0.3, layers=2, checkpoint_every=4)
    with pytest.raises(KeyboardInterrupt):
        while True:  # stop between checkpoints, mid-epoch: steps 8 done, last checkpoint at 8
            cut.train_step()
            if cut.step == 4:
                cut.save()
            if cut.step == 7:
                raise KeyboardInterrupt
    resumed = make(lm_data, tmp_path / "b", dropout=0.3, layers=2, checkpoint_every=4)
    assert resumed.step == 4
    resumed.fit()
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert deterministic(resumed.history) == deterministic(whole.history)


def test_a_checkpoint_of_another_fingerprint_is_not_resumed(lm_data: Path, tmp_path: Path) -> None:
    make(lm_data, tmp_path).fit()
    again = make(lm_data, tmp_path, run={**RUN, "fingerprint": "other"})
    assert again.step == 0 and not again.done


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(lm_data: Path, tmp_path: Path) -> None:
    t = make(lm_data, tmp_path, checkpoint_every=5)
    calls = {"n": 0}

    def poison(module: torch.nn.Module, inputs: Any, output: tuple[torch.Tensor, Any]) -> tuple[torch.Tensor, Any]:
        calls["n"] += module.training  # count training steps only, not validation batches
        return (output[0] * float("nan"), output[1]) if calls["n"] == 8 and module.training else output

    t.model.rnn.register_forward_hook(poison)  # the recurrent layer's outputs (T, B, H), and its state
    with pytest.raises(
        TrainingDiverged,
        match=r"the loss became nan at step 8 \(epoch 2\); the last good checkpoint "
        r"is kept at .*last\.pt\. Lower train\.lr",
    ):
        t.fit()
    kept = ckpt.load(tmp_path)
    assert kept["progress"]["step"] == 6  # the end of epoch 1 (6 steps); step 8 never ran
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


def test_device_auto_is_cpu_here_and_cuda_without_a_gpu_is_a_clear_error() -> None:
    from models.device import resolve_device
    from pipeline.errors import ParamsError

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParamsError, match=r"train\.word\.device is 'cuda' but torch sees no CUDA device"):
            resolve_device("cuda", "train.word.device")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_device_trains_on_cuda_with_bf16_autocast(lm_data: Path, tmp_path: Path) -> None:
    from models.device import autocast

    t = make(lm_data, tmp_path, device="auto", dropout=0.2, layers=2)
    assert t.device.type == "cuda"
    with autocast(t.device):
        logits, _ = t.model(torch.zeros(3, 2, dtype=torch.long, device=t.device))
    assert logits.dtype == torch.bfloat16
    history = t.fit()
    assert all(math.isfinite(h["valid_loss"]) for h in history)
    again = make(lm_data, tmp_path, device="auto", dropout=0.2, layers=2)  # resumes a CUDA checkpoint
    assert again.done and again.step == t.step
