"""Count-based n-gram language model with interpolated Kneser–Ney smoothing.

    model = KneserNey.fit(np.load("data/windows/word/train/stream.npy"), vocab_size=10_000, n=3)
    score = model.evaluate(np.load("data/windows/word/test/stream.npy"))
    score.perplexity, score.nats_per_token

The baseline beside the RNN and the grammar oracle in evaluate's table. It reads the
same ``stream.npy`` as the neural LM (see pipeline/windows.py) and scores it with
the same conventions: every token after the first is a target (len(stream) - 1
targets), ``<eos>`` is an ordinary token that also serves as the boundary and
start symbol, and contexts run across document boundaries as the stream does.

Smoothing (Chen & Goodman 1998, "An Empirical Study of Smoothing Techniques for
Language Modeling", Harvard TR-10-98: interpolated and modified Kneser–Ney)::

    P_k(w | h) = max(a(hw) - D_k(a(hw)), 0) / a(h•)  +  γ_k(h) · P_{k-1}(w | h')
    γ_k(h)     = Σ_{w: a(hw) > 0} D_k(a(hw)) / a(h•)          (1 when a(h•) = 0)
    P_0(w)     = 1 / V                                        (so no probability is 0)

where h' drops the oldest word of h, a = the raw count c for the highest order and
the continuation count N1+(•hw) = |{v : c(vhw) > 0}| for every lower order (the
Kneser–Ney idea), and a(h•) = Σ_w a(hw). Discounts, estimated per order from the
counts-of-counts n_j = |{g : a(g) = j}| of that order's a (Ney et al. 1994):

* ``modified=False`` (default), interpolated KN: one D_k = n1 / (n1 + 2 n2).
* ``modified=True``, Chen & Goodman's modified KN: D_k(1), D_k(2), D_k(3+) =
  1 - 2Y n2/n1, 2 - 3Y n3/n2, 3 - 4Y n4/n3 with Y = n1 / (n1 + 2 n2).

When the counts-of-counts cannot give a valid estimate (tiny corpora: n1 = 0, or
a modified discount outside (0, j]), modified falls back to the single D_k and a
single D_k falls back to 0.5; ``KneserNey.discounts`` shows what was used.

Vectorized: no Python loop over n-grams or tokens. A k-gram is keyed by one
int64, ``rank(its (k-1)-gram prefix) * V + last word``, where the rank is the
prefix's index in the sorted unique (k-1)-grams. Unlike a base-V code of the whole
k-gram (V^k overflows uint64 at V = 10^4, k = 5) it fits for any n: keys stay
below (number of distinct (k-1)-grams) · V. Counting is one ``np.unique`` per
order; lookups are ``np.searchsorted`` on the sorted keys. ``python -m bench.ngram``
(trigram, WikiText-2 valid -> test, one core) fits 1.6-3M and scores ~4M tokens/s,
8-17x a plain-dict implementation of the same model in the same run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.io import atomic_open
from pipeline.progress import Progress

FALLBACK_DISCOUNT = 0.5  # when counts-of-counts give no valid estimate (tiny corpora)
CHUNK = 1 << 20  # target positions scored per block: bounded memory for any stream length
logger = logging.getLogger(f"rnnlab.{__name__}")


@dataclass(frozen=True)
class NgramScore:
    """Log-loss of a stream: ``nats`` summed over ``tokens`` targets (len(stream) - 1)."""

    nats: float
    tokens: int

    @property
    def nats_per_token(self) -> float:
        return self.nats / self.tokens

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)


@dataclass(frozen=True)
class _Order:
    """One order k: its k-grams as sorted keys, and what scoring needs of them.

    keys  (U_k,)      int64, sorted: rank of the (k-1)-gram prefix * V + last word (k = 1: the word)
    alpha (U_k,)      float64: the discounted term max(a - D(a), 0) / a(prefix •)
    gamma (U_{k-1},)  float64: γ of every (k-1)-gram as a context; (1,) for k = 1 (the empty context)
    """

    keys: np.ndarray
    alpha: np.ndarray
    gamma: np.ndarray


def _check_stream(stream: np.ndarray, vocab_size: int, what: str) -> np.ndarray:
    """``stream`` as a 1-D integer array (a memmap stays one) of ids in [0, vocab_size), else a DataError."""
    arr = np.asarray(stream)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what}: expected a 1-D integer id stream, got shape {arr.shape} of {arr.dtype}")
    if len(arr) < 2:
        raise DataError(f"{what}: needs at least 2 tokens (the first has no context), got {len(arr)}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        raise DataError(
            f"{what}: ids must lie in [0, vocab_size={vocab_size}), found {lo if lo < 0 else hi}; "
            "was it encoded with another vocabulary?"
        )
    return arr


def _lookup(keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query in sorted ``keys`` and whether it is there (index is 0 when not)."""
    if len(keys) == 0:
        return np.zeros(len(query), np.int64), np.zeros(len(query), bool)
    idx = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    found = keys[idx] == query
    return np.where(found, idx, 0), found


def estimate_discounts(a: np.ndarray, modified: bool) -> tuple[float, float, float]:
    """D(1), D(2), D(3+) of one order from the counts-of-counts of its counts ``a``.

    Interpolated KN returns the same D three times (see the module docstring).
    """
    n1, n2, n3, n4 = (int(np.count_nonzero(a == j)) for j in (1, 2, 3, 4))
    d = n1 / (n1 + 2 * n2) if n1 > 0 else FALLBACK_DISCOUNT  # n1 = 0 would give D = 0: no mass for unseen
    if not modified:
        return (d, d, d)
    if min(n1, n2, n3, n4) == 0:
        return (d, d, d)
    y = n1 / (n1 + 2 * n2)
    mod = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < dj <= j for j, dj in enumerate(mod, start=1)):
        return (d, d, d)
    return mod


def _check_discounts(discounts: Sequence[Sequence[float] | float], n: int, modified: bool) -> list[tuple[float, ...]]:
    if len(discounts) != n:
        raise ValueError(f"discounts: need one entry per order 1..{n}, got {len(discounts)}")
    out = []
    for k, d in enumerate(discounts, start=1):
        triple = tuple(float(x) for x in d) if isinstance(d, Sequence) else (float(d),) * 3
        if len(triple) != 3 or (not modified and len(set(triple)) != 1):
            raise ValueError(f"discounts[{k - 1}]: give one D (or three with modified=True), got {d!r}")
        if not all(0 < dj <= j for j, dj in enumerate(triple, start=1)):
            raise ValueError(f"discounts[{k - 1}]: need 0 < D(1) ≤ 1, 0 < D(2) ≤ 2, 0 < D(3+) ≤ 3, got {d!r}")
        out.append(triple)
    return out


class KneserNey:
    """A fitted interpolated (or modified) Kneser–Ney n-gram model. Build it with ``KneserNey.fit``."""

    def __init__(
        self, vocab_size: int, n: int, modified: bool, discounts: list[tuple[float, ...]], orders: list[_Order]
    ):
        self.vocab_size, self.n, self.modified = vocab_size, n, modified
        self.discounts = discounts  # discounts[k - 1] = (D(1), D(2), D(3+)) of order k
        self.orders = orders  # orders[k - 1] = order k
        # Unigram ranks as a dense (V,) table: a gather instead of a binary search per token.
        self._word_rank = np.full(vocab_size, -1, np.int64)
        self._word_rank[orders[0].keys] = np.arange(len(orders[0].keys))

    # --- fitting ---------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        stream: np.ndarray,
        vocab_size: int,
        n: int = 3,
        *,
        modified: bool = False,
        discounts: Sequence[Sequence[float] | float] | None = None,
        progress: str | None = None,
    ) -> KneserNey:
        """Count every k-gram (k ≤ n) of ``stream`` and precompute the smoothed terms.

        Args:
            stream: (N,) ids in [0, vocab_size): a train split's ``stream.npy``.
            vocab_size: V, including the specials.
            n: the order (1 = unigram).
            modified: three discounts per order (modified KN) instead of one.
            discounts: per order 1..n, a D or a (D1, D2, D3+) triple, instead of the estimates.
            progress: the name to report progress under, one order counted at a time (None: none).

        Raises:
            DataError: the stream is not 1-D, too short, or has ids outside [0, V).
        """
        if n < 1 or vocab_size < 1:
            raise ValueError(f"need n ≥ 1 and vocab_size ≥ 1, got n={n}, vocab_size={vocab_size}")
        s = _check_stream(stream, vocab_size, "n-gram train stream").astype(np.int64)
        V, N = vocab_size, len(s)
        # Per order k: the unique k-grams (sorted keys, raw counts) and, per position t ≥ k-1
        # (element t - k + 1), the rank of the k-gram ending at t.
        keys, raw, pos_rank = [], [], []
        with Progress(progress or "", n, unit="orders", logger=logger, mode=None if progress else "off") as shown:
            for k in range(1, n + 1):
                if k == 1:
                    pos_key = s
                else:
                    if len(keys[-1]) * V >= 2**63:
                        raise ValueError(f"order {k}: {len(keys[-1])} distinct prefixes × V={V} overflow int64 keys")
                    pos_key = pos_rank[-1][: max(N - k + 1, 0)] * V + s[k - 1 :]  # (N - k + 1,)
                uniq, inv, cnt = np.unique(pos_key, return_inverse=True, return_counts=True)
                keys.append(uniq)
                raw.append(cnt)
                pos_rank.append(inv.astype(np.int64))
                shown.update()
        # Continuation counts a(g) = N1+(•g), for k < n: the number of distinct (k+1)-grams whose
        # suffix is g. The (k+1)-gram ending at t has as suffix the k-gram ending at t, which is
        # element j + 1 of order k's positions when it is element j of order k+1's.
        cont = []
        for k in range(1, n):
            suffix = np.empty(len(keys[k]), np.int64)  # (U_{k+1},) rank of each (k+1)-gram's suffix
            suffix[pos_rank[k]] = pos_rank[k - 1][1:]  # every occurrence writes the same value
            cont.append(np.bincount(suffix, minlength=len(keys[k - 1])))
        a_by_order = [*cont, raw[-1]]  # a_by_order[k - 1]: what order k discounts
        if discounts is None:
            used = [estimate_discounts(a, modified) for a in a_by_order]
        else:
            used = _check_discounts(discounts, n, modified)
        orders = [
            cls._order(k, keys[k - 1], a_by_order[k - 1], used[k - 1], V, len(keys[k - 2]) if k > 1 else 1)
            for k in range(1, n + 1)
        ]
        return cls(V, n, modified, used, orders)

    @staticmethod
    def _order(k: int, keys: np.ndarray, a: np.ndarray, d: tuple[float, ...], V: int, contexts: int) -> _Order:
        """Precompute alpha per k-gram and gamma per context from counts ``a`` and discounts ``d``."""
        ctx = keys // V if k > 1 else np.zeros(len(keys), np.int64)  # (U_k,) rank of the prefix
        a = a.astype(np.float64)
        disc = np.select([a == 0, a == 1, a == 2], [0.0, d[0], d[1]], d[2])  # (U_k,) D(a), 0 when unseen
        den = np.bincount(ctx, weights=a, minlength=contexts)  # (contexts,) a(h•)
        has = den > 0
        safe = np.where(has, den, 1.0)
        alpha = np.maximum(a - disc, 0.0) / safe[ctx]  # a = 0 wherever den = 0, so alpha is 0 there
        gamma = np.where(has, np.bincount(ctx, weights=disc, minlength=contexts) / safe, 1.0)
        return _Order(keys=keys, alpha=alpha, gamma=gamma)

    # --- scoring ---------------------------------------------------------------------------

    def _gram_rank(self, k: int, ctx: np.ndarray | None, words: np.ndarray) -> np.ndarray:
        """Rank of the k-gram (context of rank ``ctx``, word) in order k's table, -1 when unseen."""
        if k == 1:
            return self._word_rank[words]
        assert ctx is not None
        seen = ctx >= 0
        idx, found = _lookup(self.orders[k - 1].keys, np.where(seen, ctx * self.vocab_size + words, -1))
        return np.where(found & seen, idx, -1)

    def _prob(self, ctx: list[np.ndarray], words: np.ndarray, grams: list[np.ndarray] | None = None) -> np.ndarray:
        """P_n(word | context) for a batch, by the recursion in the module docstring.

        Args:
            ctx: for j = 1..n-1, ctx[j - 1] (M,) is the rank of the j most recent context
                words as a j-gram, -1 when unseen in training or the history is shorter.
            words: (M,) the predicted ids.
            grams: for k = 1..n-1, grams[k - 1] (M,) the rank of the k-gram ending at the word,
                when the caller has them (a stream does): saves n-1 lookups.

        Returns:
            (M,) float64 probabilities, all > 0.
        """
        p = np.zeros(len(words))  # P_0 is added at k = 1
        for k in range(1, self.n + 1):
            order = self.orders[k - 1]
            context = ctx[k - 2] if k > 1 else None
            r = grams[k - 1] if grams is not None and k < self.n else self._gram_rank(k, context, words)
            term = np.where(r >= 0, order.alpha[np.maximum(r, 0)], 0.0)  # (M,) discounted count, 0 if unseen
            if context is None:
                p = term + order.gamma[0] / self.vocab_size
            else:  # an unseen context backs off fully (γ = 1)
                p = term + np.where(context >= 0, order.gamma[np.maximum(context, 0)], 1.0) * p
        return p

    def _ranks(self, window: np.ndarray) -> list[np.ndarray]:
        """For j = 1..n-1, the rank of the j-gram ending at each position of ``window`` (-1: none)."""
        out: list[np.ndarray] = []
        for j in range(1, self.n):
            if j == 1:
                out.append(self._gram_rank(1, None, window))
            else:  # the (j-1)-gram ending one position earlier is the context
                out.append(np.concatenate([[-1], self._gram_rank(j, out[-1][:-1], window[1:])]))
        return out

    def _blocks(self, s: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(index of the first target, their log-probs) per block of at most ``CHUNK`` targets of ``s``."""
        hist = self.n - 1
        for start in range(1, len(s), CHUNK):
            stop = min(start + CHUNK, len(s))
            lo = max(0, start - hist)  # the block plus the history its first targets need
            window = np.asarray(s[lo:stop], np.int64)  # (stop - lo,): one block of a memmap at a time
            ranks = self._ranks(window)
            first = start - lo  # window index of the first target
            ctx = [r[first - 1 : -1] for r in ranks]  # the context ends just before each target
            grams = [r[first:] for r in ranks]  # the j-grams ending at each target: orders < n come free
            yield start - 1, np.log(self._prob(ctx, window[first:], grams))

    def logprobs(self, stream: np.ndarray) -> np.ndarray:
        """Natural log-probability of every target of ``stream``: (len(stream) - 1,) float64.

        Target t ≥ 1 is predicted from the up to n-1 tokens before it; the first token is
        context only.
        """
        s = _check_stream(stream, self.vocab_size, "n-gram scored stream")
        out = np.empty(len(s) - 1, np.float64)
        for offset, lp in self._blocks(s):
            out[offset : offset + len(lp)] = lp
        return out

    def evaluate(self, stream: np.ndarray, progress: str | None = None) -> NgramScore:
        """Total nats and target count of ``stream``, as the neural LM reports them.

        Memory stays bounded by ``CHUNK`` whatever the length of the (memory-mapped) stream.
        ``progress``: the name to report progress under, in targets (None: none).
        """
        nats, tokens = 0.0, 0
        s = _check_stream(stream, self.vocab_size, "n-gram scored stream")
        mode = None if progress else "off"
        with Progress(progress or "", max(len(s) - 1, 0), unit="tokens", logger=logger, mode=mode) as shown:
            for _, lp in self._blocks(s):
                nats -= float(lp.sum())
                tokens += len(lp)
                shown.update(len(lp))
        return NgramScore(nats=nats, tokens=tokens)

    def distribution(self, context: Sequence[int]) -> np.ndarray:
        """P(w | context) for every w in the vocabulary: (V,) float64 summing to 1.

        Only the last n-1 ids of ``context`` matter; a shorter one uses the lower orders.
        """
        hist = list(context)[-(self.n - 1) :] if self.n > 1 else []
        if any(not 0 <= int(i) < self.vocab_size for i in hist):
            raise DataError(f"context ids must lie in [0, {self.vocab_size}), got {hist}")
        words = np.arange(self.vocab_size, dtype=np.int64)
        ranks = self._ranks(np.asarray(hist, np.int64)) if hist else []
        ctx = [np.full(self.vocab_size, r[-1] if len(r) else -1, np.int64) for r in ranks]
        ctx += [np.full(self.vocab_size, -1, np.int64)] * (self.n - 1 - len(ctx))  # history too short
        return self._prob(ctx, words)

    # --- introspection and persistence -----------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Order, discounts and n-gram counts: what a metrics file should record beside the score."""
        return {
            "n": self.n,
            "vocab_size": self.vocab_size,
            "smoothing": "modified_kneser_ney" if self.modified else "interpolated_kneser_ney",
            "discounts": [list(d) if self.modified else d[0] for d in self.discounts],
            "ngrams": [len(order.keys) for order in self.orders],
        }

    def save(self, path: str | Path) -> None:
        """Write the model atomically as an .npz (no pickles)."""
        arrays: dict[str, np.ndarray] = {
            "meta": np.array([self.vocab_size, self.n, int(self.modified)], np.int64),
            "discounts": np.array(self.discounts, np.float64),
        }
        for k, order in enumerate(self.orders, start=1):
            arrays |= {f"keys_{k}": order.keys, f"alpha_{k}": order.alpha, f"gamma_{k}": order.gamma}
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> KneserNey:
        try:
            with np.load(path, allow_pickle=False) as z:
                vocab_size, n, modified = (int(x) for x in z["meta"])
                orders = [_Order(z[f"keys_{k}"], z[f"alpha_{k}"], z[f"gamma_{k}"]) for k in range(1, n + 1)]
                discounts = [tuple(float(x) for x in row) for row in z["discounts"]]
        except FileNotFoundError:
            raise DataError(f"{path}: n-gram model not found; fit one first") from None
        except (KeyError, ValueError) as e:
            raise DataError(f"{path}: not an n-gram model file ({e}); fit it again") from None
        return cls(vocab_size, n, bool(modified), discounts, orders)
