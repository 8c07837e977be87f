"""Fit and score throughput of models/ngram.py against a plain-Python dict implementation.

    .venv/bin/python -m bench.ngram            # trigram, interpolated KN, WikiText-2 valid -> test
    .venv/bin/python -m bench.ngram --n 4

Corpus: ../shared/data/wikitext-2 (read in place): valid.txt (217k tokens) is the
training stream and test.txt the held-out one, one document per non-empty line,
as the windows stage lays them out (<eos> d0 <eos> d1 ... <eos>). Both
implementations compute the same model; the run checks that their total nats agree.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from models.ngram import KneserNey

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT.parent / "shared" / "data" / "wikitext-2"
PAD, UNK, EOS = 0, 1, 2


def streams() -> tuple[np.ndarray, np.ndarray, int]:
    """(train ids, held-out ids, V): whitespace tokens, vocabulary = every train token."""
    docs = {
        name: [line.split() for line in (DATA / f"{name}.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
        for name in ("valid", "test")
    }
    words = sorted({w for doc in docs["valid"] for w in doc} - {"<unk>"})
    ids = {"<unk>": UNK} | {w: i for i, w in enumerate(words, start=3)}

    def encode(split: str) -> np.ndarray:
        out = [EOS]
        for doc in docs[split]:
            out += [ids.get(w, UNK) for w in doc] + [EOS]
        return np.array(out, np.uint16)

    return encode("valid"), encode("test"), len(words) + 3


class DictKN:
    """Interpolated Kneser–Ney with Counters and dicts: the reference the numpy version is timed against."""

    def __init__(self, stream: list[int], V: int, n: int):
        self.V, self.n = V, n
        grams = [
            Counter(zip(*(stream[i:] for i in range(k)), strict=False)) for k in range(1, n + 1)
        ]  # ragged: stops at the shortest
        self.alpha: list[dict[tuple[int, ...], float]] = []
        self.gamma: list[dict[tuple[int, ...], float]] = []
        for k in range(1, n + 1):
            if k == n:
                a = grams[k - 1]
            else:
                a = Counter(g[1:] for g in grams[k])  # continuation counts N1+(•g)
            cc = Counter(a.values())
            d = cc[1] / (cc[1] + 2 * cc[2]) if cc[1] else 0.5
            den: dict[tuple[int, ...], int] = defaultdict(int)
            types: dict[tuple[int, ...], int] = defaultdict(int)
            for g, c in a.items():
                den[g[:-1]] += c
                types[g[:-1]] += 1
            self.alpha.append({g: (c - d) / den[g[:-1]] for g, c in a.items()})
            self.gamma.append({h: d * types[h] / den[h] for h in den})

    def logprobs(self, stream: list[int]) -> list[float]:
        out = []
        for t in range(1, len(stream)):
            w = stream[t]
            p = 1.0 / self.V
            for k in range(1, self.n + 1):
                if t < k - 1:
                    break  # history too short for this order
                h = tuple(stream[t - k + 1 : t])
                gamma = self.gamma[k - 1].get(h)
                if gamma is None:
                    continue  # unseen context: this order passes the lower one through
                p = self.alpha[k - 1].get(h + (w,), 0.0) + gamma * p
            out.append(math.log(p))
        return out


def timed(reps: int, fn, *args):  # type: ignore[no-untyped-def]
    """(result, best wall time of ``reps`` runs): the best run is the least disturbed by other load."""
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3, help="runs of each; the best time counts")
    args = ap.parse_args()
    train, test, V = streams()
    KneserNey.fit(train[:1000], V, args.n).logprobs(test[:1000])  # warm-up: first-call costs are not throughput
    model, fit_np = timed(args.reps, KneserNey.fit, train, V, args.n)
    nats_np, score_np = timed(args.reps, lambda s: -float(model.logprobs(s).sum()), test)
    train_l, test_l = train.tolist(), test.tolist()
    ref, fit_py = timed(args.reps, DictKN, train_l, V, args.n)
    nats_py, score_py = timed(args.reps, lambda s: -math.fsum(ref.logprobs(s)), test_l)
    targets = len(test) - 1
    print(
        f"ngram: n={args.n} interpolated KN, V={V}, train {len(train)} tokens (WikiText-2 valid), "
        f"held-out {targets} targets (test); perplexity {math.exp(nats_np / targets):.2f}, "
        f"dict reference {math.exp(nats_py / targets):.2f} (|Δ nats| = {abs(nats_np - nats_py):.2e}); "
        f"best of {args.reps} runs"
    )
    print(f"{'':<6} {'numpy tok/s':>12} {'dict tok/s':>12} {'speed-up':>9}")
    print(f"{'fit':<6} {len(train) / fit_np:>12,.0f} {len(train) / fit_py:>12,.0f} {fit_py / fit_np:>8.1f}x")
    print(f"{'score':<6} {targets / score_np:>12,.0f} {targets / score_py:>12,.0f} {score_py / score_np:>8.1f}x")


if __name__ == "__main__":
    main()
