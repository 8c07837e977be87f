"""Large vocabularies: the full softmax against the adaptive softmax (``output: adaptive``), per vocabulary size.

    .venv/bin/python -m bench.vocab                           # V = 10k, 100k, 267k on a 2M-token Zipf corpus
    .venv/bin/python -m bench.vocab --vocab 10000 --train-seconds 5 --rounds 3
    .venv/bin/python -m bench.vocab --wikitext                # WikiText-2 validation perplexity, adaptive vs full

Zipf corpus: ``--tokens`` (2,000,000) ids drawn from a Zipf law over the V words (p(rank r) ∝ 1 / r),
generated at run time from a seed, ids in frequency order as the vocab stage writes them, plus a
held-out stream of ``--eval-tokens``. Each (V, output) runs in its own process, so that each peak RSS
(ru_maxrss: training and evaluation together) is its own: it writes the windows layout to a temp
folder, runs the Trainer's real ``train_step`` for ``--train-seconds`` after 2 warm-up steps, then
``score_split`` on the held-out stream (evaluate.batch_size 64); both at the default logits_mb (64).
The model is pytorch/examples' word_language_model (emb 200, 2 x 200 LSTM, dropout 0.2, SGD lr 20,
clip 0.25, batch 20, bptt 35); adaptive uses models.config's default cutoffs (20% and 50% of V, at most [20000, 60000]).
Full and adaptive alternate within each V and round, so a load spike on the shared machine hits
both; the ratios are medians over rounds of adaptive / full in the same round.

``--wikitext``: the same model, full and adaptive (default cutoffs), trained for ``--epochs`` on
WikiText-2 test.txt (../shared/data has no train split) and validated after each epoch on
valid.txt, one vocabulary over both (as data.Corpus); one process each, the same seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.train_throughput import (
    BPTT,
    WIKITEXT,
    child,
    corpus,
    examples_params,
    peak_rss_mb,
    write_windows,
)
from models.config import default_cutoffs
from models.device import set_threads
from models.evaluate import score_split
from models.lm import lm_trainer
from pipeline.vocab import Vocab

VOCABS = (10_000, 100_000, 267_735)  # 267,735: WikiText-103's vocabulary
SPECIALS = ("<pad>", "<unk>", "<eos>")
META = {"params": {"length": BPTT, "stride": None}}


def zipf_ids(vocab_size: int, n: int, seed: int) -> np.ndarray:
    """``n`` ids drawn i.i.d. with p(id) ∝ 1 / (id - 2) over the non-special ids 3 .. V - 1."""
    p = 1.0 / np.arange(1, vocab_size - len(SPECIALS) + 1)
    return np.random.default_rng(seed).choice(len(p), size=n, p=p / p.sum()) + len(SPECIALS)


def synthetic_vocab(vocab_size: int) -> Vocab:
    tokens = (*SPECIALS, *(f"w{i}" for i in range(len(SPECIALS), vocab_size)))
    return Vocab("word", tokens, (0,) * vocab_size)


# --- one (V, output) measurement, in its own process ----------------------------------------


def zipf_child(spec: dict[str, Any]) -> dict[str, Any]:
    vocab = synthetic_vocab(spec["vocab"])
    ids = zipf_ids(spec["vocab"], spec["tokens"] + spec["eval_tokens"], seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_windows(root, {"train": ids[: spec["tokens"]], "valid": ids[spec["tokens"] :]}, vocab)
        del ids
        p = examples_params(output=spec["output"])
        run = {"fingerprint": "vocab", "vocab_path": "-"}
        trainer = lm_trainer(p, root, root / "ckpt", vocab, run)
        trainer.model.train()
        for _ in range(2):  # warm-up: allocator, first-call overheads
            trainer.train_step()
        count0, steps, t0 = trainer.count, 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - t0 < spec["train_seconds"]:
            trainer.train_step()
            steps += 1
        train_rate = (trainer.count - count0) / (time.perf_counter() - t0)
        trainer.optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        scores = score_split(trainer.model, "stream", root, META, "valid", 64, torch.device("cpu"), p.logits_mb)
        eval_rate = scores.tokens / (time.perf_counter() - t0)
    train = {"train_tokens_per_s": train_rate, "train_steps": steps}
    return {**train, "eval_tokens_per_s": eval_rate, "eval_tokens": scores.tokens, "peak_rss_mb": peak_rss_mb()}


def wikitext_child(spec: dict[str, Any]) -> dict[str, Any]:
    tokens, train = corpus(WIKITEXT / "test.txt")
    tokens, valid = corpus(WIKITEXT / "valid.txt", tokens)
    vocab = Vocab("word", tuple(tokens), (0,) * len(tokens))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_windows(root, {"train": train, "valid": valid}, vocab)
        p = examples_params(output=spec["output"], epochs=spec["epochs"], plateau_factor=0.25)
        t0 = time.perf_counter()
        run = {"fingerprint": "wikitext", "vocab_path": "-"}
        trainer = lm_trainer(p, root, root / "ckpt", vocab, run)
        history = trainer.fit()
    out = {"valid_ppl": [h["valid_perplexity"] for h in history], "seconds": time.perf_counter() - t0}
    return {**out, "vocab": len(vocab), "cutoffs": list(trainer.task.cfg.cutoffs), "peak_rss_mb": peak_rss_mb()}


# --- the parent: interleaved runs, tables --------------------------------------------------


def zipf_main(args: argparse.Namespace) -> None:
    base = {"tokens": args.tokens, "eval_tokens": args.eval_tokens, "train_seconds": args.train_seconds}
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for v in args.vocab:
        for _ in range(args.rounds):
            for output in ("full", "adaptive"):  # back to back: the ratio compares like with like
                spec = {**base, "task": "zipf", "vocab": v, "output": output}
                runs.setdefault((v, output), []).append(child("bench.vocab", spec, args.threads))
    print(
        f"Zipf corpus: {args.tokens:,} training tokens, {args.eval_tokens:,} held out; 2x200 LSTM, SGD lr 20, "
        f"batch 20, bptt 35, logits_mb 64; {args.threads} thread(s); training timed for {args.train_seconds:g} s "
        f"after 2 warm-up steps; median of {args.rounds} round(s), one process per cell"
    )
    print("| V | output | cutoffs | train tokens/s | eval tokens/s | peak RSS (train + eval) |")
    print("|---|---|---|---|---|---|")
    for v in args.vocab:
        for output in ("full", "adaptive"):
            rs = runs[(v, output)]
            cut = str(list(default_cutoffs(v))) if output == "adaptive" else "-"
            train = statistics.median(r["train_tokens_per_s"] for r in rs)
            evals = statistics.median(r["eval_tokens_per_s"] for r in rs)
            rss = statistics.median(r["peak_rss_mb"] for r in rs)
            print(f"| {v:,} | {output} | {cut} | {train:,.0f} | {evals:,.0f} | {rss / 1024:.2f} GB |")
    print("\n| V | adaptive / full, training tokens/s | adaptive / full, eval tokens/s |")
    print("|---|---|---|")
    for v in args.vocab:
        full, ada = runs[(v, "full")], runs[(v, "adaptive")]
        train = statistics.median(a["train_tokens_per_s"] / f["train_tokens_per_s"] for a, f in zip(ada, full))
        evals = statistics.median(a["eval_tokens_per_s"] / f["eval_tokens_per_s"] for a, f in zip(ada, full))
        print(f"| {v:,} | {train:.1f}x | {evals:.1f}x |")
    largest = max(args.vocab)
    pairs = zip(runs[(largest, "adaptive")], runs[(largest, "full")])
    ratio = statistics.median(a["train_tokens_per_s"] / f["train_tokens_per_s"] for a, f in pairs)
    worst = max(r["peak_rss_mb"] for rs in runs.values() for r in rs)
    print(
        f"\ntargets: adaptive trains at {ratio:.1f}x full softmax's tokens/s at V = {largest:,} (target >= 3x); "
        f"largest peak RSS {worst / 1024:.2f} GB (target < 4 GB)"
    )


def wikitext_main(args: argparse.Namespace) -> None:
    spec = {"task": "wikitext", "epochs": args.epochs}
    full, ada = (child("bench.vocab", {**spec, "output": o}, args.threads) for o in ("full", "adaptive"))
    print(
        f"WikiText-2: train test.txt, validate valid.txt; vocabulary {full['vocab']:,}; 2x200 LSTM, dropout 0.2, "
        f"SGD lr 20 (/4 when validation stalls), clip 0.25, batch 20, bptt 35; {args.threads} thread(s); "
        f"adaptive cutoffs {ada['cutoffs']}"
    )
    print("| epoch | full softmax valid ppl | adaptive valid ppl | adaptive / full |")
    print("|---|---|---|---|")
    for e, (f, a) in enumerate(zip(full["valid_ppl"], ada["valid_ppl"]), 1):
        print(f"| {e} | {f:.1f} | {a:.1f} | {a / f:.3f} |")
    print(f"| wall | {full['seconds']:.0f} s | {ada['seconds']:.0f} s | {ada['seconds'] / full['seconds']:.2f} |")
    gap = ada["valid_ppl"][-1] / full["valid_ppl"][-1] - 1
    # The target bounds the cost of the approximation: adaptive at most 3% above full softmax (lower is better).
    verdict = "met" if gap <= 0.03 else "not met"
    print(
        f"after {args.epochs} epochs adaptive's validation perplexity is {gap:+.1%} from full softmax's "
        f"(target: at most +3%; {verdict})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--vocab", type=int, nargs="+", default=list(VOCABS), help="vocabulary sizes (default: %(default)s)"
    )
    ap.add_argument("--tokens", type=int, default=2_000_000, help="training tokens (default: %(default)s)")
    ap.add_argument("--eval-tokens", type=int, default=10_000, help="held-out tokens (default: %(default)s)")
    ap.add_argument("--train-seconds", type=float, default=20.0, help="timed training (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wikitext", action="store_true", help="WikiText-2 validation perplexity, adaptive vs full")
    ap.add_argument("--epochs", type=int, default=2, help="--wikitext: epochs each (default: %(default)s)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        set_threads()  # RNNLAB_THREADS, which the parent sets from --threads
        torch.manual_seed(0)
        print(json.dumps(zipf_child(spec) if spec["task"] == "zipf" else wikitext_child(spec)))
        return
    (wikitext_main if args.wikitext else zipf_main)(args)


if __name__ == "__main__":
    main()
