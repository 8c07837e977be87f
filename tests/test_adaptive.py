"""``output: adaptive``: nn.AdaptiveLogSoftmaxWithLoss through training (three modes), exact evaluation,
sampling, completion, scoring, the CLI, checkpoints and resume."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from bench.harness import section
from flows.common import tokenizer_settings
from models import checkpoint as ckpt
from models.config import ModelConfig, ModelConfigError, default_cutoffs
from models.data import IGNORE, eval_batches, eval_window, read_meta
from models.evaluate import score_split
from models.lm import lm_trainer
from models.rnn import RNNLanguageModel
from models.sampling import LanguageModel
from models.trainer import Trainer
from ops.cli import main as cli_main
from pipeline.params import read_params
from pipeline.vocab import PAD, Vocab
from tests.support import deterministic

SMALL = {
    "emb_dim": 16,
    "hidden": 32,
    "layers": 1,
    "batch_size": 8,
    "bptt": 12,
    "epochs": 2,
    "epoch_size": 8,
    "lr": 0.01,
    "device": "cpu",
    "output": "adaptive",
}


def make(root: Path, out: Path, run: dict[str, Any] | None = None, **over: Any) -> Trainer:
    vocab = Vocab.load(root / "data/vocab/word.json")
    run = run or {"fingerprint": "adaptive", "tokenizer": None, "vocab_path": "v"}
    p = section("train.word", **{**SMALL, **over})
    return lm_trainer(p, root / "data/windows/word", out, vocab, run, key="train.word")


def test_log_probabilities_are_exact_sum_to_one_and_match_torchs_layer() -> None:
    torch.manual_seed(0)
    V = 37
    model = RNNLanguageModel(
        ModelConfig(V, "lstm", 16, 32, layers=2, dropout=0.0, tie_weights=False, output="adaptive", cutoffs=(5, 15))
    )
    model.eval()
    with torch.no_grad():  # make the clusters likely, so that rows' best words are found in the tails
        model.decoder.head.bias[5:] = 3.0
    x = torch.randint(0, V, (9, 4))  # (T, B)
    logp, _ = model(x)  # (T, B, V): exact log-probabilities
    assert logp.shape == (9, 4, V)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(9, 4), atol=1e-5)

    h, _ = model.features(x)
    flat, y = h.reshape(-1, 32), torch.randint(0, V, (36,))
    torchs = model.decoder(flat, y).output  # nn.AdaptiveLogSoftmaxWithLoss's own target log-probabilities
    assert torch.allclose(-model._adaptive_nll(flat, y), torchs, atol=1e-5)
    assert torch.allclose(model.target_logprobs(flat, y, 1e-4), torchs, atol=1e-5)
    best = logp.reshape(-1, V).argmax(-1)
    assert torch.equal(model._adaptive_top1(flat, None), best) and torch.equal(model._adaptive_top1(flat, 1e-4), best)
    assert (best >= 5).any()  # the tails were searched

    state, steps = None, []
    for t in range(9):  # sampling's one-step kernels give the same distribution
        out, state = model.step(x[t : t + 1], state)
        steps.append(out)
    assert torch.allclose(torch.cat(steps), logp, atol=1e-5)


def test_cutoffs_are_checked_and_tied_weights_are_refused_naming_the_key(lm_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must be increasing ids"):
        section("train.word", output="adaptive", cutoffs=(10, 5))
    with pytest.raises(ModelConfigError, match=r"train\.word: tie_weights: true needs output: full"):
        make(lm_data, tmp_path, emb_dim=32, tie_weights=True)
    with pytest.raises(ModelConfigError, match=r"train\.word: cutoffs \[5, 100\] do not fit a vocabulary of 49"):
        make(lm_data, tmp_path, cutoffs=(5, 100))
    with pytest.raises(ModelConfigError, match=r"needs hidden >= 64 .* got hidden=32"):
        make(lm_data, tmp_path, cutoffs=(5, 10, 20))
    assert default_cutoffs(49) == (9, 24) and default_cutoffs(267_735) == (20_000, 60_000)
    assert make(lm_data, tmp_path).task.cfg.cutoffs == default_cutoffs(49)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stream", "window", "padded"])
def test_adaptive_trains_in_every_mode_and_records_its_output_layer(lm_data: Path, tmp_path: Path, mode: str) -> None:
    t = make(lm_data, tmp_path, mode=mode, cutoffs=(6, 20), epoch_size=15)
    before = t.task.validate()["loss"]
    history = t.fit()
    assert history[-1]["valid_loss"] < min(before - 0.5, math.log(49)), (before, history)  # beats a uniform guess
    c = ckpt.load(tmp_path)
    assert (c["config"]["output"], c["config"]["cutoffs"]) == ("adaptive", (6, 20))
    assert c["train"]["output"] == "adaptive" and any(k.startswith("decoder.tail.1.") for k in c["model"])


@pytest.mark.slow
def test_adaptive_resumes_bit_exactly_with_sliced_logits(lm_data: Path, tmp_path: Path) -> None:
    # Dropout, two layers, carried state, and a budget that slices every batch's output layer.
    head_rows = 20 * 8 * 4 / 2**20  # 20 rows of the head's 6 + 2 logits
    over = {
        "dropout": 0.3,
        "layers": 2,
        "checkpoint_every": 4,
        "hidden": 64,
        "cutoffs": (6, 20),
        "logits_mb": head_rows,
    }
    whole = make(lm_data, tmp_path / "a", **over)
    assert len(whole.model.slices(torch.zeros(96, dtype=torch.long), whole.p.logits_mb)) > 3
    whole.fit()
    cut = make(lm_data, tmp_path / "b", **over)
    for _ in range(7):  # stop mid-epoch, 3 steps past the last checkpoint (step 4)
        cut.train_step()
        if cut.step == 4:
            cut.save()
    resumed = make(lm_data, tmp_path / "b", **over)
    assert resumed.step == 4
    resumed.fit()
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert deterministic(resumed.history) == deterministic(whole.history)


@pytest.fixture(scope="module")
def adaptive_ckpt(lm_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained adaptive word model with the tokenizer settings the flows record."""
    out = tmp_path_factory.mktemp("adaptive")
    params = read_params(lm_data / "params.yaml")
    vocab = str(lm_data / "data/vocab/word.json")
    run = {"fingerprint": "a", "vocab_path": vocab, "tokenizer": tokenizer_settings("word", params.tokenize.word)}
    make(lm_data, out, run, epoch_size=40, cutoffs=(6, 20)).fit()
    return out


@pytest.mark.slow
def test_evaluation_scores_the_exact_log_probabilities(lm_data: Path, adaptive_ckpt: Path) -> None:
    model, vocab, _ = ckpt.load_model(adaptive_ckpt, torch.device("cpu"))
    meta = read_meta(lm_data / "data/windows/word", vocab)
    window, stride = eval_window(meta)
    nats, hits, tokens = 0.0, 0, 0
    with torch.no_grad():
        for b in eval_batches("window", lm_data / "data/windows/word/valid", 16, window, stride):
            logp, _ = model(b.inputs)  # (T, B, V): the whole distribution, unsliced
            real = b.targets != IGNORE
            nats -= float(logp.gather(2, b.targets.clamp(min=0)[..., None])[..., 0][real].sum())
            hits += int((logp.argmax(-1) == b.targets)[real].sum())
            tokens += b.tokens
    for logits_mb in (None, 0.001):
        windows = lm_data / "data/windows/word"
        got = score_split(model, "window", windows, meta, "valid", 16, torch.device("cpu"), logits_mb)
        assert got.tokens == tokens and got.correct == hits
        assert math.isclose(got.nats, nats, rel_tol=1e-5)
    assert 0 < hits < tokens


@pytest.mark.slow
def test_sampling_completion_and_scoring_use_the_adaptive_distribution(adaptive_ckpt: Path) -> None:
    lm = LanguageModel.load(adaptive_ckpt, device="cpu")
    assert lm.model.adaptive
    a = [lm.generate("the", 15, seed=s).text for s in (1, 2, 3)]
    assert a == [lm.generate("the", 15, seed=s).text for s in (1, 2, 3)] and len(set(a)) > 1
    g = lm.generate("the cat", max_tokens=20, greedy=True)
    assert g.prime == ["the", "cat"] and g == lm.generate("the cat", max_tokens=20, greedy=True, seed=5)

    ids = lm.encode("the cat") + lm.vocab.encode(g.tokens)
    full, _ = lm._step(ids, None)  # (len, V) from re-reading the prefix
    assert torch.allclose(full.exp().sum(-1), torch.ones(len(ids)), atol=1e-5)
    _, state = lm._step(ids[:3], None)
    for i in range(3, len(ids)):  # the carried state gives the same distributions
        step_logp, state = lm._step([ids[i]], state)
        assert torch.allclose(step_logp[-1], full[i], atol=1e-5)

    top = lm.complete("the cat", k=49)  # every token, <pad> at probability 0
    last = lm._step(lm.encode("the cat"), None)[0][-1].exp()  # (V,)
    assert math.isclose(sum(p for _, p in top) + float(last[PAD]), 1.0, rel_tol=1e-5)
    assert all(math.isclose(p, float(last[lm.vocab.id(t)]), rel_tol=1e-5) for t, p in top if t != "<pad>")
    token, p = next((t, p) for t, p in top if not t.startswith("<"))
    before, after = lm.score("the cat"), lm.score(f"the cat {token}")
    assert math.isclose(after["log_prob"] - before["log_prob"], math.log(p), rel_tol=1e-4, abs_tol=1e-5)
    s = lm.score("the cat ran.", end=True)
    ids = lm.encode("the cat ran.")
    logp, _ = lm._step(ids, None)
    manual = sum(float(logp[i, t]) for i, t in enumerate([*ids[1:], ids[0]]))  # ... and the closing <eos>
    assert s["tokens"] == 5 and math.isclose(s["log_prob"], manual, rel_tol=1e-5)


@pytest.mark.slow
def test_the_cli_samples_completes_and_scores_an_adaptive_checkpoint(
    adaptive_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--checkpoint", str(adaptive_ckpt), "--json"]
    assert cli_main(["sample", "--prime", "the", "--max-tokens", "5", *where]) == 0
    assert json.loads(capsys.readouterr().out)["samples"][0]["text"].startswith("the")
    assert cli_main(["complete", "the cat", "-k", "3", *where]) == 0
    assert len(json.loads(capsys.readouterr().out)["next"]) == 3
    assert cli_main(["score", "the cat ran.", *where]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["tokens"] == 4 and s["log_prob"] < 0


@pytest.mark.slow
def test_a_checkpoint_without_output_keys_loads_as_a_full_softmax(lm_data: Path, tmp_path: Path) -> None:
    tokenizer = {"level": "word", "pattern": "[a-z]+|[.]", "lowercase": True}
    run = {"fingerprint": "old", "tokenizer": tokenizer, "vocab_path": str(lm_data / "data/vocab/word.json")}
    make(lm_data, tmp_path, run, output="full", epochs=1).fit()
    c = torch.load(tmp_path / ckpt.FILE, weights_only=True)
    del c["config"]["output"], c["config"]["cutoffs"]  # as written before the adaptive option
    torch.save(c, tmp_path / "old.pt")
    model, _, _ = ckpt.load_model(tmp_path / "old.pt", torch.device("cpu"))
    assert not model.adaptive and model.cfg.output == "full" and model.cfg.cutoffs == ()
    new, _, _ = ckpt.load_model(tmp_path, torch.device("cpu"))
    x = torch.randint(0, 49, (5, 2))
    assert torch.equal(model(x)[0], new(x)[0])
