"""Stateful sampling (models.sampling) against re-running the whole prefix for every new token.

    .venv/bin/python -m bench.sample_speed                    # 500 tokens, 1 thread
    .venv/bin/python -m bench.sample_speed --tokens 200 --threads 2

The stateful path is ``LanguageModel.generate``: the prime is fed once, then each
token is one recurrent step on the carried state. The reference recomputes the
model over prime + everything generated so far at every step (what a generator
without state must do), so its cost grows with the square of the length. Both draw
from the same distributions with the same seeded generator, and the bench checks
that they produce the same tokens. Models: the default word LSTM (1x128, the grammar
vocabulary) and pytorch/examples' 2x200 LSTM over a 10k vocabulary, untrained (<eos>
is masked so that every sample runs to full length).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models.config import ModelConfig
from models.device import set_threads
from models.rnn import RNNLanguageModel
from models.sampling import LanguageModel, draw, next_token_probs
from pipeline.params import SPECIALS
from pipeline.vocab import EOS, Vocab

PLAIN = {"dropout": 0.0, "tie_weights": False, "output": "full", "cutoffs": ()}  # untied, full softmax
CONFIGS = {
    "word default (1x128 LSTM, V=49)": ModelConfig(49, "lstm", 32, 128, 1, **PLAIN),
    "examples (2x200 LSTM, V=10000)": ModelConfig(10_000, "lstm", 200, 200, 2, **PLAIN),
}


def language_model(cfg: ModelConfig) -> LanguageModel:
    torch.manual_seed(0)
    model = RNNLanguageModel(cfg).eval()
    with torch.no_grad():
        model.decoder.bias[EOS] = -1e9  # never end early: both paths generate every token
    tokens = (*SPECIALS, *(f"w{i}" for i in range(cfg.vocab_size - len(SPECIALS))))
    vocab = Vocab("word", tokens, (0,) * len(tokens))
    tokenizer = {"level": "word", "pattern": r"w\d+", "lowercase": False}
    return LanguageModel(model, vocab, tokenizer, torch.device("cpu"), logits_mb=None)  # generation only: no scoring


@torch.inference_mode()
def rerun_prefix(lm: LanguageModel, prime: str, n: int, seed: int, between=lambda: None) -> tuple[list[str], float]:
    """The stateless reference: the whole sequence goes through the model for every new token.

    Returns the tokens and the seconds they took, not counting ``between()``, which runs
    every n/10 tokens: the stateful timings interleave with this long run, so both sample
    the same load on a shared machine.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = lm.encode(prime)
    spent = 0.0
    for i in range(n):
        if i % max(1, n // 10) == 0:
            between()
        t0 = time.perf_counter()
        logits, _ = lm.model(torch.tensor(ids).view(-1, 1))  # (len, 1, V): all of it, again
        ids.append(draw(next_token_probs(logits[-1, 0]), gen))
        spent += time.perf_counter() - t0
    return lm.vocab.decode(ids[-n:]), spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    print(f"{args.tokens} new tokens after a 3-token prime; {torch.get_num_threads()} thread(s)")
    for name, cfg in CONFIGS.items():
        compare(name, cfg, args.tokens)


def compare(name: str, cfg: ModelConfig, tokens: int) -> None:
    """Time both paths on one untrained model and print the speed-up (one function per model, so
    that ``stateful`` closes over this call's model and lists, not over a loop's variables)."""
    lm = language_model(cfg)
    lm.generate("w1 w2 w3", 10, seed=0)  # warm-up
    fast_s: list[float] = []
    fast: list[list[str]] = []

    def stateful() -> None:
        t0 = time.perf_counter()
        fast.append(lm.generate("w1 w2 w3", tokens, seed=1).tokens)
        fast_s.append(time.perf_counter() - t0)

    slow, slow_s = rerun_prefix(lm, "w1 w2 w3", tokens, seed=1, between=stateful)
    same = sum(a == b for a, b in zip(fast[0], slow))
    assert len(fast[0]) == tokens and same >= 0.9 * tokens, (len(fast[0]), same)
    f = statistics.median(fast_s)
    print(
        f"{name}: stateful {tokens / f:,.0f} tokens/s (median of {len(fast_s)} runs interleaved with "
        f"the reference), re-run prefix {tokens / slow_s:,.0f} tokens/s; speed-up {slow_s / f:.1f}x "
        f"(target >= 20); {same}/{tokens} tokens identical"
    )


if __name__ == "__main__":
    main()
