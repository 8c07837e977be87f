"""Sampling, completion and scoring: stateful, seeded, and consistent with the model's probabilities."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from flows.common import tokenizer_settings
from models.lm import lm_trainer
from models.sampling import LanguageModel, draw, next_token_probs
from pipeline.params import read_params
from pipeline.vocab import EOS, PAD, Vocab


@pytest.fixture(scope="module")
def models(lm_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A briefly trained checkpoint per level, with the tokenizer settings the flows record."""
    params = read_params(lm_data / "params.yaml")
    out = {}
    for level in ("word", "char"):
        folder = tmp_path_factory.mktemp(f"sampling-{level}")
        run = {
            "fingerprint": "t",
            "vocab_path": str(lm_data / f"data/vocab/{level}.json"),
            "tokenizer": tokenizer_settings(level, getattr(params.tokenize, level)),
        }
        train = getattr(params.train, level).model_copy(update={"epoch_size": 60})
        lm_trainer(
            train,
            lm_data / f"data/windows/{level}",
            folder,
            Vocab.load(lm_data / f"data/vocab/{level}.json"),
            run,
        ).fit()
        out[level] = folder
    return out


@pytest.fixture(scope="module")
def word(models: dict[str, Path]) -> LanguageModel:
    return LanguageModel.load(models["word"], device="cpu")


def test_temperature_divides_the_log_probs_and_top_k_keeps_k() -> None:
    logp = torch.log_softmax(torch.tensor([0.0, 0.5, 2.0, 1.0, -1.0]), 0)
    for t in (0.5, 1.0, 2.0):
        want = torch.exp(logp / t)
        want[PAD] = 0
        assert torch.allclose(next_token_probs(logp, t), want / want.sum())
    top2 = next_token_probs(logp, 1.0, top_k=2)
    assert (top2 > 0).sum() == 2 and top2[2] > top2[3] > 0
    assert next_token_probs(logp, 1e-3)[2] > 0.999  # T -> 0 is greedy


def test_draw_follows_the_distribution_and_never_picks_a_zero() -> None:
    probs = torch.tensor([0.0, 0.1, 0.0, 0.6, 0.3])
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw(probs, gen) for _ in range(20_000)]), minlength=5)
    assert counts[0] == counts[2] == 0
    assert torch.allclose(counts / 20_000, probs, atol=0.015)


@pytest.mark.slow
def test_sampling_is_stateful_and_matches_rerunning_the_prefix(
    word: LanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    prime_calls: list[int] = []
    step_calls: list[int] = []
    # The recurrent module runs for the prime only: model.step uses the one-step cell kernels.
    hook = word.model.rnn.register_forward_hook(lambda m, inp, out: prime_calls.append(inp[0].shape[0]))
    step = word.model.step
    monkeypatch.setattr(word.model, "step", lambda x, s: step_calls.append(x.shape[0]) or step(x, s))
    try:
        for seed in range(20):  # a sample that does not end at once (at <eos>)
            prime_calls.clear(), step_calls.clear()
            g = word.generate("the cat", max_tokens=15, seed=seed)
            if len(g.tokens) >= 3:
                break
    finally:
        hook.remove()
    n = len(g.tokens)
    assert n >= 3 and g.prime == ["the", "cat"]
    # <eos> the cat once, then one step per new token (the last one too when <eos> ended the sample)
    assert prime_calls == [3] and set(step_calls) == {1} and len(step_calls) in (n - 1, n)

    # The carried state gives the same distributions as re-reading the whole prefix every step.
    ids = word.encode("the cat") + word.vocab.encode(g.tokens)
    full, _ = word._step(ids, None)  # (len, V)
    _, state = word._step(ids[:3], None)
    for i in range(3, len(ids)):
        step_logp, state = word._step([ids[i]], state)
        assert torch.allclose(step_logp[-1], full[i], atol=1e-5)


@pytest.mark.slow
def test_seeds_reproduce_and_differ(word: LanguageModel) -> None:
    a = [word.generate("the", 20, seed=s).text for s in (1, 2, 3)]
    assert a == [word.generate("the", 20, seed=s).text for s in (1, 2, 3)]
    assert len(set(a)) > 1


@pytest.mark.slow
def test_greedy_stops_at_the_chosen_token(word: LanguageModel) -> None:
    g = word.generate("the dog", max_tokens=40, greedy=True, stop=".")
    assert g.tokens[-1] == "." or len(g.tokens) == 40
    assert "." not in g.tokens[:-1]
    assert g == word.generate("the dog", max_tokens=40, greedy=True, stop=".", seed=99)  # no randomness
    # A trained model's greedy path may never reach "." (p(",") = .50 > p(".") = .49 on this
    # grammar), and it may end at <eos> right after ".": so also stop on the first token of the
    # free greedy path, which must then end there, before the free path does.
    free = word.generate("the dog", max_tokens=40, greedy=True).tokens
    assert len(free) >= 2, free
    assert word.generate("the dog", max_tokens=40, greedy=True, stop=free[0]).tokens == free[:1]
    assert len(word.generate("the", max_tokens=4, temperature=0.7, top_k=3).tokens) <= 4
    with pytest.raises(ValueError, match="stop token 'zebra' is not in the word vocabulary"):
        word.generate("the", greedy=True, stop="zebra")


@pytest.mark.slow
def test_a_sample_without_a_prime_is_never_empty(word: LanguageModel) -> None:
    """A new document starts with a token: <eos> first would only be an empty sample (the preflight
    turns a prime the vocabulary cannot read into "", so this is what such corpora sample)."""
    for seed in range(20):
        assert word.generate("", 10, temperature=3.0, seed=seed).tokens, seed
    assert word.generate("", 10, greedy=True).tokens


@pytest.mark.slow
def test_prime_uses_the_checkpoints_tokenizer(word: LanguageModel, models: dict[str, Path]) -> None:
    assert word.tokenize("The CAT ran, -ship.") == ["the", "cat", "ran", ",", "-", "ship", "."]
    assert word.encode("the cat")[0] == EOS
    char = LanguageModel.load(models["char"], device="cpu")
    assert char.tokenize("Ab c") == ["A", "b", " ", "c"] and char.level == "char"
    assert char.generate("the ", max_tokens=10, seed=0).text.startswith("the ")


@pytest.mark.slow
def test_completion_and_score_agree_with_the_model(word: LanguageModel) -> None:
    top = word.complete("the cat", k=5)
    probs = [p for _, p in top]
    assert len(top) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    token, p = next((t, p) for t, p in top if not t.startswith("<"))  # <eos> is no text to append
    before, after = word.score("the cat"), word.score(f"the cat {token}")
    assert math.isclose(after["log_prob"] - before["log_prob"], math.log(p), rel_tol=1e-4, abs_tol=1e-5)

    s: dict[str, Any] = word.score("the cat ran.")
    ids = word.encode("the cat ran.")
    logp, _ = word._step(ids, None)
    manual = sum(float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1))
    assert s["tokens"] == 4 and math.isclose(s["log_prob"], manual, rel_tol=1e-5)
    assert math.isclose(s["perplexity"], math.exp(-manual / 4), rel_tol=1e-5)
    assert word.score("the cat ran.", end=True)["tokens"] == 5
