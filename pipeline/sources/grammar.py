"""A probabilistic "nonsense" grammar: the default corpus, with a known entropy.

A document is a run of clauses, each of the shape::

    stop noun [adverb] [adverb] verb [noun] [- noun] punctuation

The optional slots are independent (p = .3 for each adverb, .2 for the object
noun, .1 for the dash noun). Clauses repeat until a ``.`` is drawn, which ends
the document; once the text passes ``max_chars`` characters the ``.`` is forced.

Because the grammar is known, so is the probability of any document: ``logprob``
runs the forward algorithm over the grammar's automaton, summing over every
derivation of the token sequence (one adverb can come from either slot, and
the adverb "in jest" starts with the stop word "in"). The corpus stage turns
those into ``oracle.json``: the entropy per token that no model can beat.

Rendering and tokenizing are inverse: the word tokenizer configured with
``TOKEN_PATTERN`` gives back exactly the tokens that ``render`` was given, and
the characters of the text are the character-level tokens. So the oracle is
exact at both levels.

The grammar and its lexicon come from the nonsense-language LSTM tutorial
notebook of the ``theano_lstm`` package.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate

import pyarrow as pa

from pipeline.params import SPLITS, GrammarParams
from pipeline.progress import Progress

logger = logging.getLogger(f"rnnlab.{__name__}")

# The word pattern that keeps every symbol this grammar emits (params.yaml sets it).
TOKEN_PATTERN = r"[a-z]+|[-!?.:;,()]"
DASH = "-"
END = "."


@dataclass(frozen=True)
class Grammar:
    """The grammar's lexicon and probabilities. ``DEFAULT`` is the ``theano_lstm`` tutorial's."""

    stop: dict[str, float]  # weights, normalised here
    nouns: tuple[str, ...]  # uniform
    verbs: tuple[str, ...]  # uniform
    adverbs: tuple[str, ...]  # uniform; may be several words ("in jest")
    punct: dict[str, float]  # weights, normalised here; must contain "."
    p_adverb: float = 0.3  # each of the two adverb slots
    p_object: float = 0.2
    p_dash: float = 0.1
    max_chars: int = 500  # past this many characters, the punctuation is "."
    _tables: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        assert END in self.punct, "the punctuation must include '.', which ends a document"
        object.__setattr__(self, "_tables", _build_tables(self))

    # --- generation ---------------------------------------------------------------------

    def sample(self, rng: random.Random) -> list[str]:
        """Draw one document as a token list (only ``rng.random()`` is used: stable across Pythons)."""
        t = self._tables
        tokens: list[str] = []
        length = 0  # characters of render(tokens)

        def emit(words: list[str]) -> None:
            nonlocal length
            for w in words:
                length += _width(tokens[-1] if tokens else None, w)
                tokens.append(w)

        def pick(words: tuple[str, ...]) -> str:
            return words[min(int(rng.random() * len(words)), len(words) - 1)]

        while True:
            emit([t["stop_words"][bisect.bisect(t["stop_cum"], rng.random() * t["stop_cum"][-1])]])
            emit([pick(self.nouns)])
            for _ in range(2):
                if rng.random() < self.p_adverb:
                    emit(pick(self.adverbs).split())
            emit([pick(self.verbs)])
            if rng.random() < self.p_object:
                emit([pick(self.nouns)])
            if rng.random() < self.p_dash:
                emit([DASH, pick(self.nouns)])
            if length > self.max_chars:
                mark = END
            else:
                mark = t["punct_marks"][bisect.bisect(t["punct_cum"], rng.random() * t["punct_cum"][-1])]
            emit([mark])
            if mark == END:
                return tokens

    # --- exact probability ----------------------------------------------------------------

    def logprob(self, tokens: list[str]) -> float:
        """Natural log of P(tokens) under the grammar, summed over all derivations (-inf if impossible)."""
        t = self._tables
        alpha = {_START: 1.0}
        logp = 0.0
        prev: str | None = None
        length = 0
        for tok in tokens:
            alpha = _close(alpha, t["eps"])
            nxt: dict[int, float] = {}
            for state, p in alpha.items():
                if state == _PUNCT:
                    q = t["punct_p"].get(tok, 0.0) if length <= self.max_chars else float(tok == END)
                    if q:
                        target = _END if tok == END else _START
                        nxt[target] = nxt.get(target, 0.0) + p * q
                    continue
                for target, q in t["emit"].get((state, tok), ()):
                    nxt[target] = nxt.get(target, 0.0) + p * q
            total = sum(nxt.values())
            if total == 0.0:
                return -math.inf
            logp += math.log(total)  # rescale each step so long documents never underflow
            alpha = {s: p / total for s, p in nxt.items()}
            length += _width(prev, tok)
            prev = tok
        return logp + math.log(alpha[_END]) if alpha.get(_END) else -math.inf


def render(tokens: list[str]) -> str:
    """Tokens → text: words spaced, punctuation attached, the dash glued to its noun."""
    out = []
    prev = None
    for tok in tokens:
        out.append(" " * (_width(prev, tok) - len(tok)) + tok)
        prev = tok
    return "".join(out)


def _width(prev: str | None, tok: str) -> int:
    """Characters that appending ``tok`` after ``prev`` adds to the rendered text."""
    if prev is None or prev == DASH or _is_mark(tok):
        return len(tok)
    return len(tok) + 1


def _is_mark(tok: str) -> bool:
    return len(tok) == 1 and not tok.isalpha() and tok != DASH


# --- the automaton ------------------------------------------------------------------------
# States of one clause. Optional slots are epsilon moves; multi-word adverbs get
# an inner state per extra word. _PUNCT's emission depends on the text length,
# so logprob handles it directly instead of through the emission table.
_START, _NOUN, _ADV1, _ADV2, _VERB, _OBJ, _DASH, _DASH_NOUN, _PUNCT, _END = range(10)


def _build_tables(g: Grammar) -> dict:
    stop_total = sum(g.stop.values())
    punct_total = sum(g.punct.values())
    emit: dict[tuple[int, str], list[tuple[int, float]]] = {}
    inner = [100]  # ids for the inner states of multi-word adverbs

    def add(state: int, tok: str, target: int, p: float) -> None:
        emit.setdefault((state, tok), []).append((target, p))

    for w, weight in g.stop.items():
        add(_START, w, _NOUN, weight / stop_total)
    for w in g.nouns:
        add(_NOUN, w, _ADV1, 1 / len(g.nouns))
        add(_OBJ, w, _DASH, g.p_object / len(g.nouns))
        add(_DASH_NOUN, w, _PUNCT, 1 / len(g.nouns))
    for slot, after in ((_ADV1, _ADV2), (_ADV2, _VERB)):
        for adverb in g.adverbs:
            words = adverb.split()
            state, p = slot, g.p_adverb / len(g.adverbs)
            for w in words[:-1]:
                inner[0] += 1
                add(state, w, inner[0], p)
                state, p = inner[0], 1.0
            add(state, words[-1], after, p)
    for w in g.verbs:
        add(_VERB, w, _OBJ, 1 / len(g.verbs))
    add(_DASH, DASH, _DASH_NOUN, g.p_dash)
    eps = [  # (from, to, p) in topological order, so one pass closes
        (_ADV1, _ADV2, 1 - g.p_adverb),
        (_ADV2, _VERB, 1 - g.p_adverb),
        (_OBJ, _DASH, 1 - g.p_object),
        (_DASH, _PUNCT, 1 - g.p_dash),
    ]
    stop_words = list(g.stop)
    marks = list(g.punct)
    return {
        "emit": emit,
        "eps": eps,
        "punct_p": {m: w / punct_total for m, w in g.punct.items()},
        "stop_words": stop_words,
        "stop_cum": list(accumulate(g.stop[w] for w in stop_words)),
        "punct_marks": marks,
        "punct_cum": list(accumulate(g.punct[m] for m in marks)),
    }


def _close(alpha: dict[int, float], eps: list[tuple[int, int, float]]) -> dict[int, float]:
    """Add the probability mass that flows along epsilon moves (skipped optional slots)."""
    out = dict(alpha)
    for src, dst, p in eps:
        if src in out:
            out[dst] = out.get(dst, 0.0) + out[src] * p
    return out


# A data table, kept as written: the formatter would put each noun on its own line.
NOUNS = ("cat", "broom", "boat", "dog", "car", "wrangler", "mexico", "lantern", "book", "paper", "joke",
         "calendar", "ship", "event")  # fmt: skip
DEFAULT = Grammar(
    stop={"the": 10, "from": 5, "a": 9, "they": 3, "he": 3, "it": 2.5, "she": 2.7, "in": 4.5},
    nouns=NOUNS,
    verbs=("ran", "stole", "carried", "could", "would", "do", "can", "carry", "catapult", "jump", "duck"),
    adverbs=("rapidly", "calmly", "cooly", "in jest", "fantastically", "angrily", "dazily"),
    punct={".": 0.49, ",": 0.5, ";": 0.03, "?": 0.05, "!": 0.05},
)


def read(params: GrammarParams, grammar: Grammar = DEFAULT) -> Iterator[pa.Table]:
    """Generate the corpus, split by split, as document-table batches.

    Each split has its own random stream (seeded by ``seed`` and the split name),
    so resizing one split never changes another's documents.
    """
    sizes = {"train": params.train_docs, "valid": params.valid_docs, "test": params.test_docs}
    batch = 5_000
    with Progress("corpus grammar", sum(sizes.values()), unit="documents", logger=logger) as progress:
        for split in SPLITS:
            rng = random.Random(f"{params.seed}/{split}")
            remaining = sizes[split]
            while remaining:
                n = min(batch, remaining)
                remaining -= n
                docs = [grammar.sample(rng) for _ in range(n)]
                yield pa.table(
                    {
                        "split": pa.array([split] * n, pa.string()),
                        "text": pa.array([render(d) for d in docs], pa.string()),
                        # The oracle: exact log P(document) in nats, and its word count
                        # (the word tokenizer's count; +1 for <eos> is added downstream).
                        "oracle_logprob": pa.array([grammar.logprob(d) for d in docs], pa.float64()),
                        "oracle_tokens": pa.array([len(d) for d in docs], pa.int32()),
                    }
                )
                progress.update(n)
