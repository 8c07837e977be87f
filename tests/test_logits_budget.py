"""Logits memory bounded by ``logits_mb``: training, evaluation and scoring compute the output layer over
slices of rows, give the results of the unsliced code (to float tolerance), and never build a larger
logits tensor, whatever the vocabulary."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bench.harness import section
from flows.common import tokenizer_settings
from models.config import ModelConfig
from models.data import IGNORE, Batch, eval_batches, eval_window, read_meta
from models.evaluate import Scores, lm_loss, score, score_split
from models.lm import lm_trainer
from models.rnn import MIB, RNNLanguageModel, detach
from models.sampling import LanguageModel
from pipeline.params import read_params
from pipeline.vocab import Vocab

RUN = {"fingerprint": "budget", "tokenizer": None, "vocab_path": "v"}


class LargestLogits(TorchDispatchMode):
    """The bytes of the largest tensor any aten op returns (forward or backward) whose last
    dimension is one of ``widths`` (the vocabulary, or the adaptive head's and clusters' sizes)."""

    def __init__(self, widths: set[int]):
        super().__init__()
        self.widths, self.bytes = widths, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] in self.widths:
                self.bytes = max(self.bytes, t.numel() * t.element_size())
        return out


def widths(model: RNNLanguageModel) -> set[int]:
    if not model.adaptive:
        return {model.cfg.vocab_size}
    ends = model.decoder.cutoffs
    return {model.decoder.head_size, *(b - a for a, b in itertools.pairwise(ends))}


def old_score(model: RNNLanguageModel, batches: list[Batch]) -> Scores:
    """models.evaluate.score before logits_mb: the whole (T, B, V) logits of each batch."""
    out, state = Scores(), None
    with torch.no_grad():
        model.eval()
        for b in batches:
            logits, state = model(b.inputs, None if b.fresh else state)  # (T, B, V)
            state = detach(state)
            out.nats += lm_loss(logits, b.targets).item()
            out.correct += int(((logits.argmax(-1) == b.targets) & (b.targets != IGNORE)).sum())
            out.tokens += b.tokens
    return out


def rows_budget(model: RNNLanguageModel, rows: int) -> float:
    """A logits_mb that holds ``rows`` rows of full-softmax logits."""
    return rows * model.cfg.vocab_size * 4 / MIB


@pytest.fixture(scope="module")
def trained(lm_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A briefly trained word model of the default (grammar) corpus, so its top-1 guesses mean something."""
    out = tmp_path_factory.mktemp("budget")
    shape = {"emb_dim": 16, "hidden": 32, "layers": 1}
    p = section("train.word", **shape, batch_size=16, bptt=20, epochs=1, epoch_size=40, lr=0.01, device="cpu")
    vocab = Vocab.load(lm_data / "data/vocab/word.json")
    t = lm_trainer(p, lm_data / "data/windows/word", out, vocab, RUN)
    t.fit()
    return {"model": t.model.eval(), "meta": read_meta(lm_data / "data/windows/word", vocab)}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stream", "window", "padded"])
def test_many_slices_score_the_same_nats_and_hits_as_the_unsliced_code(
    lm_data: Path, trained: dict[str, Any], mode: str
) -> None:
    model, meta = trained["model"], trained["meta"]
    folder = lm_data / "data/windows/word/valid"
    window, stride = eval_window(meta)
    batches = list(eval_batches(mode, folder, 16, window, stride))
    before = old_score(model, batches)
    budget = rows_budget(model, 7)  # 7 rows of logits per slice: hundreds of slices per batch
    assert len(model.slices(torch.zeros(16 * 256, dtype=torch.long), budget)) > 100
    for logits_mb in (None, budget, section("evaluate").logits_mb):
        got = score_split(model, mode, lm_data / "data/windows/word", meta, "valid", 16, torch.device("cpu"), logits_mb)
        assert got.tokens == before.tokens and got.correct == before.correct, (mode, logits_mb)
        assert math.isclose(got.nats, before.nats, rel_tol=1e-6), (mode, logits_mb, got.nats, before.nats)
    assert 0 < before.correct < before.tokens


@pytest.mark.slow
@pytest.mark.parametrize(("output", "tie"), [("full", False), ("full", True), ("adaptive", False)])
def test_sliced_training_loss_and_gradients_equal_the_unsliced_ones(output: str, tie: bool) -> None:
    torch.manual_seed(0)
    cutoffs = (40, 120) if output == "adaptive" else ()
    cfg = ModelConfig(300, "lstm", 32, 32, layers=2, dropout=0.3, tie_weights=tie, output=output, cutoffs=cutoffs)
    model = RNNLanguageModel(cfg).train()
    x = torch.randint(0, 300, (20, 8))  # (T, B)
    y = torch.randint(0, 300, (20, 8))
    y[12:, 3] = IGNORE  # padding, as padded mode has
    results = []
    for logits_mb in ("autograd", None, rows_budget(model, 9)):
        torch.manual_seed(1)  # the same dropout masks
        if logits_mb == "autograd":  # the code before logits_mb: (T, B, V) logits, F.cross_entropy
            logp, _ = model(x)
            loss = lm_loss(logp, y)
        else:
            loss, _ = model(x, targets=y, logits_mb=logits_mb)
        model.zero_grad(set_to_none=True)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (want, grads), *sliced = results
    for loss, got in sliced:
        assert torch.allclose(loss, want, rtol=1e-6), (loss, want)
        for name in grads:
            assert torch.allclose(got[name], grads[name], rtol=1e-5, atol=1e-7), name
    assert len(model.slices(y[y != IGNORE], rows_budget(model, 9))) > 5  # slices, not one
    with torch.no_grad():  # evaluation through forward: the nats alone, no gradient computed
        torch.manual_seed(1)
        assert torch.allclose(model(x, targets=y, logits_mb=rows_budget(model, 9))[0], want, rtol=1e-6)


def test_ignored_rows_count_nothing_whatever_their_inputs() -> None:
    torch.manual_seed(0)
    model = RNNLanguageModel(
        ModelConfig(300, "lstm", 32, 32, 1, dropout=0.0, tie_weights=False, output="full", cutoffs=())
    )
    h, y = torch.randn(40, 32), torch.randint(0, 300, (40,))
    y[5:9] = IGNORE
    h[5:9] = float("nan")  # as F.cross_entropy(ignore_index=IGNORE): loss and h's gradient stay finite
    h.requires_grad_()
    loss = model.loss(h, y, logits_mb=rows_budget(model, 6))
    loss.backward()
    keep = y != IGNORE
    want = lm_loss(model.decoder(h.detach()[keep])[None], y[keep][None])
    assert torch.isfinite(loss) and torch.allclose(loss, want, rtol=1e-6)
    assert torch.all(h.grad[~keep] == 0) and torch.isfinite(h.grad[keep]).all()


def test_the_sliced_softmax_loss_follows_autocast() -> None:
    # bf16 autocast as on CUDA (models.device.autocast), here on the CPU, where the recurrent layer
    # gives bf16 outputs: the logits products run in bf16, the loss and the weight gradient in fp32.
    torch.manual_seed(0)
    model = RNNLanguageModel(
        ModelConfig(300, "lstm", 32, 32, 1, dropout=0.0, tie_weights=False, output="full", cutoffs=())
    )
    h0, y = torch.randn(160, 32), torch.randint(0, 300, (160,))
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        h = h0.to(dtype).detach().requires_grad_()  # a leaf of its own
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model.loss(h, y, logits_mb=rows_budget(model, 9))
        model.zero_grad(set_to_none=True)
        loss.backward()
        assert (
            loss.dtype == torch.float32 and h.grad.dtype == dtype and model.decoder.weight.grad.dtype == torch.float32
        )
        results.append((loss.detach(), h.grad.float(), model.decoder.weight.grad.clone()))
    (loss32, h32, w32), (loss16, h16, w16) = results
    assert torch.allclose(loss16, loss32, rtol=0.01)
    assert torch.allclose(h16, h32, atol=0.02 * float(h32.abs().max()))
    assert torch.allclose(w16, w32, atol=0.02 * float(w32.abs().max()))


@pytest.mark.slow
@pytest.mark.parametrize("output", ["full", "adaptive"])
def test_no_logits_tensor_exceeds_the_budget_in_training_evaluation_or_scoring(output: str) -> None:
    torch.manual_seed(0)
    V = 600
    cutoffs = (60, 200) if output == "adaptive" else ()
    cfg = ModelConfig(V, "lstm", 16, 32, layers=1, dropout=0.0, tie_weights=False, output=output, cutoffs=cutoffs)
    model = RNNLanguageModel(cfg)
    x, y = torch.randint(0, V, (40, 32)), torch.randint(0, V, (40, 32))  # full logits: 3 MB
    budget = 0.1  # MiB
    cap = budget * MIB

    def largest(run: Any) -> int:
        with LargestLogits(widths(model)) as seen:
            run()
        return seen.bytes

    def train(logits_mb: float | None) -> None:
        model.train()
        loss, _ = model(x, targets=y, logits_mb=logits_mb)
        loss.backward()

    batches = [Batch(x, y, y.numel(), True)]
    assert largest(lambda: train(None)) > 10 * cap  # the unsliced loss holds all 1,280 rows' logits
    assert 0 < largest(lambda: train(budget)) <= cap
    assert 0 < largest(lambda: score(model, batches, torch.device("cpu"), budget)) <= cap
    h = torch.randn(1280, 32)
    assert 0 < largest(lambda: model.target_logprobs(h, y.reshape(-1), budget)) <= cap


@pytest.mark.slow
def test_rnnlab_score_holds_no_more_than_the_budget_and_agrees_with_the_model(lm_data: Path, tmp_path: Path) -> None:
    params = read_params(lm_data / "params.yaml")
    vocab = lm_data / "data/vocab/word.json"
    run = {"fingerprint": "s", "vocab_path": str(vocab), "tokenizer": tokenizer_settings("word", params.tokenize.word)}
    p = params.train.word.model_copy(update={"epochs": 1, "epoch_size": 5, "device": "cpu"})
    lm_trainer(p, lm_data / "data/windows/word", tmp_path, Vocab.load(vocab), run).fit()
    text = "the cat ran . " * 40  # 161 targets
    whole = LanguageModel.load(tmp_path, device="cpu", logits_mb=None).score(text, end=True)
    lm = LanguageModel.load(tmp_path, device="cpu")
    assert lm.logits_mb == p.logits_mb  # by default, the budget the checkpoint was trained with
    lm.logits_mb = rows_budget(lm.model, 5)
    with LargestLogits({lm.model.cfg.vocab_size}) as seen:
        sliced = lm.score(text, end=True)
    assert seen.bytes <= 5 * lm.model.cfg.vocab_size * 4
    assert sliced["tokens"] == whole["tokens"] == 161
    assert math.isclose(sliced["log_prob"], whole["log_prob"], rel_tol=1e-6)
