"""The grammar corpus and its oracle, checked two independent ways.

1. Brute force: enumerate every derivation of short documents directly from
   the grammar's definition, add up derivations per token sequence, and compare
   with the forward algorithm in ``Grammar.logprob``. On a small grammar whose
   500-character rule is shrunk so that every document is short, the
   enumeration is complete: the probabilities must sum to exactly 1.
2. Monte Carlo: an independent sampler written here draws documents, and
   (a) on the small grammar, empirical frequencies match exp(logprob);
   (b) on the default grammar (the nonsense language of the ``theano_lstm``
       package's LSTM tutorial notebook), the entropy estimated from the
       sampler's own choice probabilities matches the oracle's entropy per token.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterator

import numpy as np
import pytest

from bench.harness import ROOT, section
from pipeline.params import read_params
from pipeline.sources import grammar as gm
from pipeline.sources.grammar import DEFAULT, Grammar, render
from pipeline.tokenize import WordTokenizer, char_tokens

# Ambiguities on purpose: "in" is a stop word and starts the adverb "in jest";
# a single adverb can sit in either slot. max_chars=12 forces "." by the second
# clause, so the set of documents is finite and can be enumerated completely.
SMALL = Grammar(
    stop={"in": 1.0, "the": 2.0},
    nouns=("cat",),
    verbs=("ran", "do"),
    adverbs=("in jest", "calmly"),
    punct={".": 0.5, ",": 0.3, "!": 0.2},
    max_chars=12,
)


def derivations(g: Grammar, max_tokens: int = 10**9) -> Iterator[tuple[tuple[str, ...], float]]:
    """Every (tokens, probability) derivation, straight from the grammar's definition.

    Walks the clause slot by slot; derivations longer than ``max_tokens`` are
    pruned, which never drops a derivation of a document that fits.
    """
    stop_total = sum(g.stop.values())
    punct_total = sum(g.punct.values())

    def optional(p: float, choices: list[tuple[str, ...]]) -> list[tuple[tuple[str, ...], float]]:
        return [((), 1 - p)] + [(c, p / len(choices)) for c in choices]

    adverbs = [tuple(a.split()) for a in g.adverbs]
    slots = [  # (options, mandatory)
        ([((s,), w / stop_total) for s, w in g.stop.items()], True),
        ([((n,), 1 / len(g.nouns)) for n in g.nouns], True),
        (optional(g.p_adverb, adverbs), False),
        (optional(g.p_adverb, adverbs), False),
        ([((v,), 1 / len(g.verbs)) for v in g.verbs], True),
        (optional(g.p_object, [(n,) for n in g.nouns]), False),
        (optional(g.p_dash, [("-", n) for n in g.nouns]), False),
    ]
    # Fewest tokens still to come after slot i (mandatory slots, then the punctuation).
    still = [sum(m for _, m in slots[i:]) + 1 for i in range(len(slots) + 1)]

    def walk(tokens: tuple[str, ...], q: float, i: int) -> Iterator[tuple[tuple[str, ...], float]]:
        if len(tokens) + still[i] > max_tokens:
            return
        if i < len(slots):
            for words, p in slots[i][0]:
                yield from walk(tokens + words, q * p, i + 1)
            return
        forced = len(render(list(tokens))) > g.max_chars
        for mark, w in g.punct.items():
            p = float(mark == ".") if forced else w / punct_total
            if p == 0:
                continue
            if mark == ".":
                yield tokens + (mark,), q * p
            else:
                yield from walk(tokens + (mark,), q * p, 0)

    yield from walk((), 1.0, 0)


def by_document(g: Grammar, max_tokens: int = 10**9) -> dict[tuple[str, ...], float]:
    total: dict[tuple[str, ...], float] = defaultdict(float)
    for tokens, p in derivations(g, max_tokens):
        total[tokens] += p
    return total


def test_small_grammar_is_exact_and_normalised() -> None:
    docs = by_document(SMALL)
    assert math.isclose(sum(docs.values()), 1.0, abs_tol=1e-12)  # the enumeration is complete
    for tokens, p in docs.items():
        assert math.isclose(SMALL.logprob(list(tokens)), math.log(p), rel_tol=0, abs_tol=1e-9), tokens
    # Documents with several derivations exist (e.g. one adverb: slot 1 or slot 2).
    counts = Counter(t for t, _ in derivations(SMALL))
    ambiguous = sum(1 for c in counts.values() if c > 1)
    assert ambiguous > 100


def test_seed_grammar_short_documents_match_brute_force() -> None:
    docs = by_document(DEFAULT, max_tokens=5)  # every one-clause document of at most 5 tokens
    assert len(docs) > 20_000
    for tokens, p in docs.items():
        assert math.isclose(DEFAULT.logprob(list(tokens)), math.log(p), rel_tol=1e-12), tokens


def test_impossible_sequences_have_zero_probability() -> None:
    assert DEFAULT.logprob(["the", "cat", "ran"]) == -math.inf  # no "." at the end
    assert DEFAULT.logprob(["cat", "the", "ran", "."]) == -math.inf
    assert DEFAULT.logprob(["the", "cat", "ran", ".", "the"]) == -math.inf  # nothing after "."


def test_forced_stop_after_max_chars() -> None:
    g = Grammar(**{**_fields(DEFAULT), "max_chars": 10})
    # "the cat ran" is 11 characters: past 10, so "," is impossible and "." certain.
    assert g.logprob(["the", "cat", "ran", ","]) == -math.inf
    free = DEFAULT.logprob(["the", "cat", "ran", "."])
    forced = g.logprob(["the", "cat", "ran", "."])
    assert math.isclose(forced - free, -math.log(0.49 / 1.12), rel_tol=1e-12)


def _fields(g: Grammar) -> dict:
    return {k: getattr(g, k) for k in ("stop", "nouns", "verbs", "adverbs", "punct", "p_adverb", "p_object", "p_dash")}


class IndependentSampler:
    """The default grammar's generative process written out plainly, recording its choices' probability."""

    def __init__(self, g: Grammar, seed: int):
        self.g, self.rng = g, random.Random(seed)

    def sample(self) -> tuple[list[str], float, int]:
        """(tokens, log q(derivation), clauses holding exactly one adverb)."""
        g, rng = self.g, self.rng
        stops, weights = list(g.stop), list(g.stop.values())
        marks, mark_w = list(g.punct), list(g.punct.values())
        tokens: list[str] = []
        logq, single = 0.0, 0
        while True:
            s = rng.choices(stops, weights)[0]
            logq += math.log(g.stop[s] / sum(weights))
            clause = [s, rng.choice(g.nouns)]
            logq -= math.log(len(g.nouns))
            adverbs = 0
            for _ in range(2):
                if rng.random() < g.p_adverb:
                    clause += rng.choice(g.adverbs).split()
                    logq += math.log(g.p_adverb / len(g.adverbs))
                    adverbs += 1
                else:
                    logq += math.log(1 - g.p_adverb)
            single += adverbs == 1
            clause.append(rng.choice(g.verbs))
            logq -= math.log(len(g.verbs))
            if rng.random() < g.p_object:
                clause.append(rng.choice(g.nouns))
                logq += math.log(g.p_object / len(g.nouns))
            else:
                logq += math.log(1 - g.p_object)
            if rng.random() < g.p_dash:
                clause += ["-", rng.choice(g.nouns)]
                logq += math.log(g.p_dash / len(g.nouns))
            else:
                logq += math.log(1 - g.p_dash)
            tokens += clause
            if len(render(tokens)) > g.max_chars:
                mark = "."
            else:
                mark = rng.choices(marks, mark_w)[0]
                logq += math.log(g.punct[mark] / sum(mark_w))
            tokens.append(mark)
            if mark == ".":
                return tokens, logq, single


def test_monte_carlo_frequencies_match_oracle() -> None:
    sampler = IndependentSampler(SMALL, seed=7)
    n = 60_000
    seen = Counter(tuple(sampler.sample()[0]) for _ in range(n))
    exact = by_document(SMALL)
    assert set(seen) <= set(exact)
    tv = 0.5 * sum(abs(seen.get(d, 0) / n - p) for d, p in exact.items())
    assert tv < 0.03, f"total variation between sampler and oracle: {tv:.4f}"
    for doc, count in seen.items():
        expected = n * math.exp(SMALL.logprob(list(doc)))
        if expected >= 200:
            z = (count - expected) / math.sqrt(expected)
            assert abs(z) < 5, (doc, count, expected)


def test_monte_carlo_entropy_matches_oracle_entropy() -> None:
    """In the default grammar only a lone adverb is ambiguous (two slots, same weight),
    so log p(x) = log q(derivation) + (clauses with one adverb) * log 2, exactly."""
    sampler = IndependentSampler(DEFAULT, seed=11)
    nats, targets = [], []
    for _ in range(4000):
        tokens, logq, single = sampler.sample()
        assert math.isclose(DEFAULT.logprob(tokens), logq + single * math.log(2), rel_tol=1e-10)
        nats.append(-(logq + single * math.log(2)))
        targets.append(len(tokens) + 1)  # + <eos>
    nats_a, targets_a = np.array(nats), np.array(targets)
    mc = nats_a.sum() / targets_a.sum()
    # The oracle over a generated split (the corpus source's own numbers).
    batches = list(gm.read(section("corpus.grammar", train_docs=1, valid_docs=6000, test_docs=1)))
    valid = [b.filter(b["split"].to_numpy(zero_copy_only=False) == "valid") for b in batches]
    oracle = -sum(b["oracle_logprob"].to_numpy().sum() for b in valid) / sum(
        (b["oracle_tokens"].to_numpy() + 1).sum() for b in valid
    )
    # Standard error of a ratio estimator (delta method).
    r = nats_a - mc * targets_a
    se = np.sqrt((r**2).sum()) / targets_a.sum()
    assert abs(mc - oracle) < 4 * se * math.sqrt(1 + 4000 / 6000), (mc, oracle, se)


def test_tokenizer_gives_back_the_grammar_tokens() -> None:
    """The oracle counts tokens as the tokenizer emits them, at both levels."""
    import pyarrow as pa

    cfg = read_params(ROOT / "params.yaml").tokenize
    word = WordTokenizer(cfg.word.pattern, cfg.word.lowercase)
    rng = random.Random(3)
    docs = [DEFAULT.sample(rng) for _ in range(3000)]
    texts = pa.array([render(d) for d in docs])
    assert word(texts).to_pylist() == docs
    assert char_tokens(texts, cfg.char.lowercase).to_pylist() == [list(t) for t in texts.to_pylist()]


@pytest.mark.parametrize("seed", [0, 1])
def test_generation_is_deterministic_per_split(seed: int) -> None:
    a = list(gm.read(section("corpus.grammar", seed=seed, train_docs=50, valid_docs=20, test_docs=20)))
    b = list(gm.read(section("corpus.grammar", seed=seed, train_docs=80, valid_docs=20, test_docs=5)))
    assert a[0].equals(b[0].slice(0, 50))  # growing train keeps its first documents
    assert a[1].equals(b[1])  # valid untouched by other splits' sizes
