"""Kneser–Ney n-gram baseline (models/ngram.py): normalisation, a hand-worked example,
a plain-dict reference, held-out ordering on a real corpus, determinism, errors."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from models import ngram
from models.ngram import KneserNey, NgramScore, estimate_discounts
from pipeline.errors import DataError

EOS = 2
fit = KneserNey.fit  # the tests' short name


def evaluate(model: KneserNey, stream: np.ndarray) -> NgramScore:
    """Score every target of a held-out id stream; see ``KneserNey.evaluate``."""
    return model.evaluate(stream)


# --- a from-scratch reference with plain dicts (Chen & Goodman 1998, interpolated KN) -------------


def ref_model(stream: list[int], V: int, n: int, modified: bool = False, discounts: list[float] | None = None):
    """Return prob(history, w), computed by brute force over dicts of counts."""
    counts = {k: Counter(tuple(stream[i : i + k]) for i in range(len(stream) - k + 1)) for k in range(1, n + 1)}
    a: dict[int, dict[tuple[int, ...], int]] = {n: dict(counts[n])}
    for k in range(1, n):  # continuation counts: distinct left extensions
        cont: dict[tuple[int, ...], int] = defaultdict(int)
        for gram in counts[k + 1]:
            cont[gram[1:]] += 1
        a[k] = dict(cont)
    D: dict[int, tuple[float, float, float]] = {}
    for k in range(1, n + 1):
        if discounts is not None:
            D[k] = (discounts[k - 1],) * 3
            continue
        cc = Counter(a[k].values())
        n1, n2, n3, n4 = cc[1], cc[2], cc[3], cc[4]
        d = n1 / (n1 + 2 * n2) if n1 else 0.5
        D[k] = (d, d, d)
        if modified and min(n1, n2, n3, n4) > 0:
            y = n1 / (n1 + 2 * n2)
            mod = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
            if all(0 < x <= j for j, x in enumerate(mod, 1)):
                D[k] = mod

    def disc(k: int, c: int) -> float:
        return 0.0 if c == 0 else D[k][min(c, 3) - 1]

    def p(k: int, h: tuple[int, ...], w: int) -> float:
        if k == 0:
            return 1.0 / V
        lower = p(k - 1, h[1:], w)
        ext = {g: c for g, c in a[k].items() if g[:-1] == h}
        den = sum(ext.values())
        if den == 0:
            return lower
        gamma = sum(disc(k, c) for c in ext.values()) / den
        c = ext.get(h + (w,), 0)
        return max(c - disc(k, c), 0) / den + gamma * lower

    def prob(history: list[int], w: int) -> float:
        h = tuple(history[-(n - 1) :]) if n > 1 else ()
        return p(len(h) + 1, h, w)

    return prob


TINY = [EOS, 3, 4, 3, 4, EOS, 3, 5, EOS, 4, 3, 4, 5, EOS, 3, 3, 4, EOS, 5, 4, 3, 5, EOS]


def test_hand_worked_bigram() -> None:
    """Stream 2 3 4 3 4 2 3 5 2, V = 6, D = 1/2 at both orders, worked by hand with fractions.

    Bigrams: (2,3)×2 (3,4)×2 (4,3) (4,2) (3,5) (5,2). Continuation counts N1+(•w):
    2 ← {4,5}: 2; 3 ← {2,4}: 2; 4 ← {3}: 1; 5 ← {3}: 1; total 6, 4 types, so γ0 = (4·½)/6 = 1/3
    and P1(w) = (N1+(•w) - ½)/6 + (1/3)/6: P1(2) = P1(3) = 11/36, P1(4) = P1(5) = 5/36, P1(0) = 2/36.
    After 3: c(3•) = 3 from (3,4)×2 and (3,5), γ(3) = 2·½/3 = 1/3:
    P(4|3) = 3/2/3 + 5/108 = 59/108, P(5|3) = 1/2/3 + 5/108 = 23/108, P(2|3) = 11/108, P(0|3) = 2/108.
    """
    model = fit(np.array([2, 3, 4, 3, 4, 2, 3, 5, 2]), vocab_size=6, n=2, discounts=[0.5, 0.5])
    expected = {
        0: Fraction(2, 108),
        1: Fraction(2, 108),
        2: Fraction(11, 108),
        3: Fraction(0),
        4: Fraction(59, 108),
        5: Fraction(23, 108),
    }
    expected[3] = 1 - sum(expected.values())  # P(3|3): 3 never follows 3, so γ(3)·P1(3) = 11/108
    assert expected[3] == Fraction(11, 108)
    np.testing.assert_allclose(model.distribution([3]), [float(expected[w]) for w in range(6)], rtol=1e-13)
    # no context: the bigram model's unigram level, on continuation counts
    np.testing.assert_allclose(model.distribution([]), np.array([2, 2, 11, 11, 5, 5]) / 36, rtol=1e-13)
    # a unigram model discounts raw counts (2: 3, 3: 3, 4: 2, 5: 1 of 9): (c - ½)/9 + (4·½/9)/6
    unigram = fit(np.array([2, 3, 4, 3, 4, 2, 3, 5, 2]), 6, n=1, discounts=[0.5])
    np.testing.assert_allclose(unigram.distribution([]), np.array([1, 1, 8.5, 8.5, 5.5, 2.5]) / 27, rtol=1e-13)
    # the estimates: unigram continuation counts (2, 2, 1, 1): D = 2/(2+2·2); bigram counts: 4 ones, 2 twos
    assert fit(np.array([2, 3, 4, 3, 4, 2, 3, 5, 2]), 6, n=2).discounts == [(1 / 3,) * 3, (0.5,) * 3]


@pytest.mark.parametrize("modified", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_matches_dict_reference(n: int, modified: bool) -> None:
    rng = np.random.default_rng(n)
    train = TINY + [int(x) for x in rng.integers(2, 8, size=60)]
    held = [EOS, 3, 4, 7, 7, 1, 0, 3, 4, 5, EOS, 6, 6, 3]  # unseen words and contexts, <pad>/<unk> too
    V = 9
    model = fit(np.array(train, np.uint16), V, n, modified=modified)
    prob = ref_model(train, V, n, modified)
    expected = [math.log(prob(held[:t], held[t])) for t in range(1, len(held))]
    np.testing.assert_allclose(model.logprobs(np.array(held)), expected, rtol=1e-12)
    for ctx in ([], [3], [7, 7], [4, 3, 4], [8]):
        np.testing.assert_allclose(model.distribution(ctx), [prob(ctx, w) for w in range(V)], rtol=1e-12)


@pytest.mark.parametrize("modified", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_distribution_sums_to_one(n: int, modified: bool) -> None:
    rng = np.random.default_rng(0)
    V = 300
    stream = rng.zipf(1.3, size=20_000) % V  # a skewed, language-like unigram distribution
    stream[0] = EOS
    model = fit(stream, V, n, modified=modified)
    for _ in range(10):
        ctx = [int(x) for x in rng.choice(stream, size=rng.integers(0, 4))]
        p = model.distribution(ctx)
        assert p.min() > 0
        assert abs(math.fsum(p) - 1.0) < 1e-12


def test_chunked_scoring_equals_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    train, held = rng.integers(0, 30, size=3000), rng.integers(0, 30, size=1001)
    model = fit(train, 30, n=4)
    whole = model.logprobs(held)
    monkeypatch.setattr(ngram, "CHUNK", 7)  # blocks cut inside every context
    np.testing.assert_array_equal(model.logprobs(held), whole)


def _wiki_streams(shared_data: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """nlptutorial's tokenized Wikipedia sentences as <eos>-separated id streams, vocab from train."""
    folder = shared_data / "nlptutorial-wiki-en"
    train_docs = [line.split() for line in (folder / "wiki-en-train.word").read_text(encoding="utf-8").splitlines()]
    test_docs = [line.split() for line in (folder / "wiki-en-test.word").read_text(encoding="utf-8").splitlines()]
    counts = Counter(w for doc in train_docs for w in doc)
    # min count 2, so that <unk> occurs in training as it does in our vocab stage's outputs
    ids = {w: i for i, w in enumerate(sorted(w for w, c in counts.items() if c >= 2), start=3)}

    def stream(docs: list[list[str]]) -> np.ndarray:
        out = [EOS]
        for doc in docs:
            out += [ids.get(w, 1) for w in doc] + [EOS]
        return np.array(out, np.uint16)

    return stream(train_docs), stream(test_docs), len(ids) + 3


def test_higher_orders_win_on_real_text(shared_data: Path) -> None:
    train, test, V = _wiki_streams(shared_data)
    ppl = {n: evaluate(fit(train, V, n), test).perplexity for n in (1, 2, 3)}
    assert ppl[3] < ppl[2] < ppl[1]
    mkn = evaluate(fit(train, V, 3, modified=True), test).perplexity
    assert mkn < ppl[2]


def test_deterministic_and_round_trips(shared_data: Path, tmp_path: Path) -> None:
    train, test, V = _wiki_streams(shared_data)
    a, b = fit(train, V, 3), fit(train.astype(np.int32), V, 3)
    for la, lb in zip(a.orders, b.orders, strict=True):
        for x, y in zip((la.keys, la.alpha, la.gamma), (lb.keys, lb.alpha, lb.gamma), strict=True):
            np.testing.assert_array_equal(x, y)
    score = evaluate(a, test)
    assert score == evaluate(b, test)
    np.save(tmp_path / "stream.npy", test)  # scored as the pipeline hands it over: memory-mapped uint16
    assert evaluate(a, np.load(tmp_path / "stream.npy", mmap_mode="r")) == score
    assert score.nats == pytest.approx(-a.logprobs(test).sum(), rel=1e-12)
    assert score.tokens == len(test) - 1
    assert score.perplexity == pytest.approx(math.exp(score.nats / score.tokens))
    a.save(tmp_path / "kn3.npz")
    loaded = KneserNey.load(tmp_path / "kn3.npz")
    assert evaluate(loaded, test) == score
    assert loaded.summary() == a.summary()


def test_estimated_discounts_fall_back() -> None:
    assert estimate_discounts(np.array([1, 1, 2, 3, 5]), modified=False) == (0.5, 0.5, 0.5)  # 2/(2+2)
    assert estimate_discounts(np.array([3, 4, 5]), modified=False) == (0.5, 0.5, 0.5)  # no singletons
    d = estimate_discounts(np.array([1] * 8 + [2] * 4 + [3] * 2 + [4]), modified=True)
    y = 8 / 16
    assert d == pytest.approx((1 - 2 * y * 4 / 8, 2 - 3 * y * 2 / 4, 3 - 4 * y * 1 / 2))
    assert estimate_discounts(np.array([1, 1, 2]), modified=True) == (0.5, 0.5, 0.5)  # no n3, n4: single D


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="vocab_size=5"):
        fit(np.array([2, 3, 9]), 5, 2)
    with pytest.raises(DataError, match="1-D integer"):
        fit(np.zeros((3, 2), np.int64), 5, 2)
    with pytest.raises(DataError, match="at least 2"):
        fit(np.array([2]), 5, 2)
    with pytest.raises(DataError, match="at least 2"):
        fit(np.array([2, 3]), 5, 2).logprobs(np.array([], np.int64))
    model = fit(np.array([2, 3, 4, 2]), 5, 2)
    with pytest.raises(DataError, match="another vocabulary"):
        model.logprobs(np.array([2, 3, 5]))
    with pytest.raises(ValueError, match="0 < D"):
        fit(np.array([2, 3, 4, 2]), 5, 2, discounts=[0.5, 1.5])
    with pytest.raises(ValueError, match="one entry per order"):
        fit(np.array([2, 3, 4, 2]), 5, 2, discounts=[0.5])
    with pytest.raises(DataError, match="not found"):
        KneserNey.load(tmp_path / "missing.npz")
