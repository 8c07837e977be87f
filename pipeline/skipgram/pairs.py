"""Skip-gram training pairs from an id stream, vectorized (random window sizes; word2vec's subsampling).

    plan = PassPlan.build(stream, keep, max_context=10, rng=np.random.default_rng([seed, pass_]))
    centers, contexts = plan.span(k * 1000, (k + 1) * 1000)               # batch k of the pass
    centers, contexts = plan.all_pairs()                                   # every pair, in stream order

One pass over a ``stream.npy`` (``<eos> d0 … <eos> d1 … <eos>``, pipeline/windows.py):

1. ``<eos>`` separators are removed; they only mark document boundaries, and no
   window crosses one.
2. Subsampling (Mikolov et al. 2013, "Distributed Representations of Words and
   Phrases"; the formula of word2vec's C code): each occurrence of word w is kept
   with probability ``min(1, (sqrt(f_w / t) + 1) · t / f_w)``, f_w its share of
   the training tokens. Dropped words are removed before windows are drawn, which
   widens the effective window as in word2vec.
3. Every kept word draws its window size b uniformly from 1..max_context (as in
   Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine Intelligence*,
   Bleeding Edge Press, 2016, chapter 6), and pairs with each word at most b
   positions away, in its document::

       tokens   a  b  c  d  e      b(c) = 2: (c, a) (c, b) (c, d) (c, e)
       windows  1  1  2  1  1      b(a) = 1: (a, b)

A pass enumerates its pairs center by center, the centers in a random order;
batch k is pair numbers [k·B, (k+1)·B) of that enumeration. Two ``searchsorted``
calls over the per-center pair counts find the centers that batch covers, whose
pairs are then expanded with ``np.repeat``: a batch is computed directly, without
materialising the pass's pairs. Memory is O(tokens), and no Python runs per pair or
per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import DataError
from pipeline.vocab import EOS, UNK


def keep_probabilities(counts: np.ndarray, threshold: float | None) -> np.ndarray:
    """Per word id, the probability that subsampling keeps one of its occurrences (1 when off).

    counts (V,): training counts (zero for ids that never occur).
    """
    counts = np.asarray(counts, np.float64)
    if threshold is None:
        return np.ones(len(counts))
    f = counts / max(counts.sum(), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.sqrt(f / threshold) + 1.0) * threshold / f
    return np.where(f > 0, np.minimum(p, 1.0), 1.0)


def noise_distribution(counts: np.ndarray, power: float = 0.75, exclude: tuple[int, ...] = ()) -> np.ndarray:
    """Noise probabilities ∝ count ** power (Mikolov et al. 2013: power 0.75), zero for ``exclude`` ids."""
    w = np.asarray(counts, np.float64).copy()
    w[list(exclude)] = 0.0
    w = np.where(w > 0, w**power, 0.0)
    total = w.sum()
    if total <= 0:
        raise DataError("no word has a positive training count: the noise distribution is empty")
    return w / total


def clip_ids(stream: np.ndarray, vocab_size: int) -> np.ndarray:
    """The stream as int64 with ids ≥ ``vocab_size`` mapped to <unk>: rarer words count as unknown."""
    ids = np.asarray(stream, np.int64)
    return np.where(ids < vocab_size, ids, UNK)


def stream_counts(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Occurrences of each id in a stream, <eos> separators excluded: (vocab_size,) int64."""
    counts = np.bincount(ids, minlength=vocab_size)
    counts[EOS] = 0
    return counts


@dataclass(frozen=True)
class PassPlan:
    """One pass's kept words, windows and center order; any batch of its pairs on demand.

    tokens (N,)  kept word ids          lo, hi (N,)  first and one-past-last context position
    counts (N,)  pairs of each center   order  (N,)  centers in pass order
    ends   (N,)  cumulative pair counts of the centers in pass order
    """

    tokens: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    counts: np.ndarray
    order: np.ndarray
    ends: np.ndarray

    @classmethod
    def build(
        cls, ids: np.ndarray, keep: np.ndarray, max_context: int, rng: np.random.Generator, shuffle: bool = True
    ) -> PassPlan:
        """Subsample ``ids`` (a clipped stream, <eos> separated), draw windows, order the centers.

        Args:
            ids: (T,) int64 word ids with <eos> between documents (``clip_ids`` of a stream.npy).
            keep: (V,) keep probability per id (``keep_probabilities``).
            max_context: windows are drawn from 1..max_context.
            rng: the pass's generator; the plan is a pure function of its state.
            shuffle: centers in random order (training) or in stream order.
        """
        if max_context < 1:
            raise ValueError(f"max_context must be ≥ 1, got {max_context}")
        doc = np.cumsum(ids == EOS)  # (T,) document number of each position
        word = ids != EOS
        kept = word & (rng.random(len(ids)) < keep[ids])
        tokens, doc = ids[kept], doc[kept]  # (N,)
        n = len(tokens)
        # Each kept word's document run [start, stop) in the compacted positions.
        cuts = np.flatnonzero(np.diff(doc)) + 1
        starts = np.concatenate([[0], cuts])
        stops = np.concatenate([cuts, [n]])
        run = np.repeat(np.arange(len(starts)), stops - starts) if n else np.zeros(0, np.int64)
        b = rng.integers(1, max_context + 1, n)  # (N,) window size per center
        pos = np.arange(n)
        lo = np.maximum(pos - b, starts[run] if n else pos)
        hi = np.minimum(pos + b + 1, stops[run] if n else pos)
        order = rng.permutation(n) if shuffle else pos
        counts = hi - lo - 1  # the center itself is not its own context
        return cls(tokens, lo, hi, counts, order, np.cumsum(counts[order]))

    @property
    def total(self) -> int:
        """Pairs in the pass."""
        return int(self.ends[-1]) if len(self.ends) else 0

    def pairs(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(center ids, context ids) of the pairs numbered ``index`` (taken modulo ``total``)."""
        if self.total == 0:
            raise DataError("no skip-gram pairs: every document has fewer than 2 words after subsampling")
        index = np.asarray(index, np.int64) % self.total
        rank = np.searchsorted(self.ends, index, side="right")  # which center, in pass order
        c = self.order[rank]
        first = self.ends[rank] - self.counts[c]  # the number of its first pair
        j = self.lo[c] + (index - first)
        j += j >= c  # skip the center's own position
        return self.tokens[c], self.tokens[j]

    def span(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Pairs numbered ``start`` .. ``stop - 1`` (wrapping past ``total``): a batch, in a few numpy calls."""
        if self.total == 0:
            raise DataError("no skip-gram pairs: every document has fewer than 2 words after subsampling")
        parts = []
        while start < stop:
            s = start % self.total
            take = min(stop - start, self.total - s)
            first, last = np.searchsorted(self.ends, [s, s + take - 1], side="right")
            c, j = self._expand(self.order[first : last + 1])
            skip = s - (int(self.ends[first - 1]) if first else 0)  # pairs of center `first` before s
            parts.append((c[skip : skip + take], j[skip : skip + take]))
            start += take
        c = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        j = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        return self.tokens[c], self.tokens[j]

    def _expand(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (center, context) of every pair of ``centers``, center by center."""
        counts = self.counts[centers]
        c = np.repeat(centers, counts)
        offset = np.arange(len(c)) - np.repeat(np.cumsum(counts) - counts, counts)
        j = np.repeat(self.lo[centers], counts) + offset
        j += j >= c  # skip the center's own position
        return c, j

    def all_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every pair of the pass, in pass order (memory: O(pairs))."""
        c, j = self._expand(self.order)
        return self.tokens[c], self.tokens[j]
