"""Skip-gram pair generation (pipeline/skipgram/pairs.py) against a plain-Python generator, and training speed.

    .venv/bin/python -m bench.skipgram               # WikiText-2 valid, max_context 10, subsampling 1e-3
    .venv/bin/python -m bench.skipgram --reps 5 --train-steps 100

Corpus: ../shared/data/wikitext-2/valid.txt (217k words; read in place), one document
per non-empty line, laid out as the windows stage does (<eos> d0 <eos> d1 ... <eos>),
vocabulary = the 10,000 most frequent words (the rest <unk>), as skipgram's defaults.

Generation: one pass (subsampling, a random window in 1..max_context per word, every
pair within a document), as batches of 1,000 pairs, by the vectorized PassPlan and by a
plain-Python reference in the style of Abrahams, Hafner, Erwitt & Scarpinelli,
*TensorFlow for Machine Intelligence* (Bleeding Edge Press, 2016), chapter 6 (a loop over
words, random.randint for the window, a loop over the window), in the same run on the
same stream. Both give the same pairs for the same kept words and windows; the run
checks it on the first 2,000.
Reported: pairs/s, words/s (stream words consumed per second) and their ratio, median of
``--reps`` interleaved repetitions.

Training: optimizer steps of models/skipgram.py at that chapter's size (V = 10,000,
D = 200, 100 shared noise words, batch 1,000, SGD with momentum), pairs/s and the
words/s it implies (pairs per word in this pass), one thread.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.harness import reference_pairs
from pipeline.skipgram.pairs import PassPlan, clip_ids, keep_probabilities, stream_counts

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
PAD, UNK, EOS = 0, 1, 2


def stream(vocab_size: int) -> np.ndarray:
    docs = [line.split() for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    counts = Counter(w for d in docs for w in d if w != "<unk>")
    ids = {w: i for i, (w, _) in enumerate(counts.most_common(vocab_size - 3), start=3)}
    out = [EOS]
    for d in docs:
        out += [ids.get(w, UNK) for w in d] + [EOS]
    return np.array(out, np.int64)


def python_pass(ids: list[int], keep: list[float], max_context: int, batch: int, seed: int) -> int:
    """The generator of Abrahams et al. (2016, ch. 6) in plain Python: per document, per kept word, a random
    window; batches of pairs."""
    rng = random.Random(seed)
    pairs, batches = [], 0
    doc: list[int] = []
    for token in ids + [EOS]:
        if token != EOS:
            if rng.random() < keep[token]:
                doc.append(token)
            continue
        for i, center in enumerate(doc):
            b = rng.randint(1, max_context)
            for j in range(max(0, i - b), min(len(doc), i + b + 1)):
                if j != i:
                    pairs.append((center, doc[j]))
            while len(pairs) >= batch:
                pairs = pairs[batch:]
                batches += 1
        doc = []
    return batches * batch + len(pairs)


def vector_pass(ids: np.ndarray, keep: np.ndarray, max_context: int, batch: int, seed: int) -> int:
    plan = PassPlan.build(ids, keep, max_context, np.random.default_rng(seed))
    for k in range(-(-plan.total // batch)):
        plan.span(k * batch, min((k + 1) * batch, plan.total))
    return plan.total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=10_000)
    ap.add_argument("--max-context", type=int, default=10)
    ap.add_argument("--subsample", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    ids = clip_ids(stream(args.vocab), args.vocab)
    words = int((ids != EOS).sum())
    keep = keep_probabilities(stream_counts(ids, args.vocab), args.subsample)
    # Same pairs: the vectorized enumeration equals the plain loops over the same kept words and windows.
    head = PassPlan.build(ids[:2000], keep, args.max_context, np.random.default_rng(0), shuffle=False)
    c, o = head.all_pairs()
    reference = reference_pairs(head.tokens.tolist(), head.lo.tolist(), head.hi.tolist())
    assert list(zip(c.tolist(), o.tolist())) == reference

    ids_list, keep_list = ids.tolist(), keep.tolist()
    t_py, t_np, n_py, n_np = [], [], 0, 0
    for rep in range(args.reps):
        t0 = time.perf_counter()
        n_np = vector_pass(ids, keep, args.max_context, args.batch, rep)
        t_np.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_py = python_pass(ids_list, keep_list, args.max_context, args.batch, rep)
        t_py.append(time.perf_counter() - t0)
    py, vec = statistics.median(t_py), statistics.median(t_np)
    print(
        f"skip-gram pairs: WikiText-2 valid, {words:,} words, V={args.vocab:,}, max_context {args.max_context}, "
        f"subsample {args.subsample}, batches of {args.batch:,}; median of {args.reps} reps"
    )
    print(f"{'generator':<22} {'pairs/pass':>11} {'s/pass':>8} {'pairs/s':>12} {'words/s':>12}")
    for name, n, t in (("plain Python", n_py, py), ("pipeline.skipgram.pairs", n_np, vec)):
        print(f"{name:<22} {n:>11,} {t:>8.3f} {n / t:>12,.0f} {words / t:>12,.0f}")
    print(f"ratio (words/s, vectorized / plain Python): {py / vec:.1f}x")

    if args.train_steps:
        import torch

        from models.skipgram import SkipGram, SkipgramConfig

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        model = SkipGram(SkipgramConfig(args.vocab, 200, "negative_sampling"))
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
        plan = PassPlan.build(ids, keep, args.max_context, np.random.default_rng(0))
        noise = torch.randint(3, args.vocab, (args.train_steps + 5, 100))
        for warm in (True, False):
            t0 = time.perf_counter()
            steps = 5 if warm else args.train_steps
            for k in range(steps):
                cc, oo = plan.span(k * args.batch, (k + 1) * args.batch)
                loss = model(torch.from_numpy(cc), torch.from_numpy(oo), noise[k])
                opt.zero_grad()
                (loss / args.batch).backward()
                opt.step()
            took = time.perf_counter() - t0
        per_word = plan.total / max(len(plan.tokens), 1)
        rate = args.train_steps * args.batch / took
        print(
            f"training (V={args.vocab:,}, D=200, 100 noise, batch {args.batch:,}, SGD momentum, "
            f"{torch.get_num_threads()} thread): {rate:,.0f} pairs/s = {rate / per_word:,.0f} kept words/s "
            f"({per_word:.1f} pairs per kept word)"
        )


if __name__ == "__main__":
    main()
