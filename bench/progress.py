"""The cost of progress reporting (pipeline/progress.py) on the default run, as a ratio to the same work without it.

    .venv/bin/python -m bench.progress                # corpus, tokenize, vocab, windows, training: ~3 minutes
    .venv/bin/python -m bench.progress --rounds 5 --steps 400

Builds params.yaml's default data (the grammar corpus) in a temporary folder, in this process,
then times each piece of work with progress off (``RNNLAB_PROGRESS=off``) and on, as a terminal
user sees it (``bar``: tqdm, drawing into /dev/null) and as CI or a log does (``lines``: a log
line every RNNLAB_PROGRESS_SECONDS, here 1 s so that lines are really written). Rounds alternate
the modes back to back, so that a load spike on a shared machine hits all of them; a ratio is
the median over rounds of (time with progress / time without, in the same round).

The pieces: the corpus, tokenize (word), vocab (word) and windows (word) stages' own functions
on the default params, and the default word model's training (``train.word``, 1 thread) over
``--steps`` steps and one validation of the valid split (which reports its progress too).
It also prints what one ``Progress.update`` costs in each mode, and that times the number of
updates the default run makes: the overhead in seconds, whatever the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline import log, paths
from pipeline.progress import MODE_ENV, SECONDS_ENV, Progress

ROOT = Path(__file__).resolve().parents[1]

MODES = ("off", "bar", "lines")


@contextlib.contextmanager
def progress_mode(mode: str) -> Iterator[None]:
    """RNNLAB_PROGRESS=mode, with stderr sent to /dev/null (bars and lines are written, not shown)."""
    saved = sys.stderr
    with open(os.devnull, "w") as devnull:
        os.environ[MODE_ENV] = mode
        sys.stderr = devnull
        try:
            yield
        finally:
            sys.stderr = saved
            del os.environ[MODE_ENV]


def timed(work: Callable[[], object], mode: str) -> float:
    with progress_mode(mode):
        start = time.perf_counter()
        work()
        return time.perf_counter() - start


def update_cost(mode: str, n: int = 200_000) -> float:
    """Seconds per ``Progress.update()`` in ``mode`` (a bar draws into /dev/null)."""
    with progress_mode(mode):
        p = Progress("bench", n, unit="steps", logger=logging.getLogger("rnnlab.bench"))
        start = time.perf_counter()
        for _ in range(n):
            p.update()
        seconds = time.perf_counter() - start
        p.close()
    return seconds / n


def phase_cost(mode: str, n: int = 500) -> float:
    """Seconds to start and end one long phase in ``mode``, at most: its bar made, drawn and closed, or
    a line and the closing line written. (A phase under BAR_DELAY seconds or RNNLAB_PROGRESS_SECONDS
    makes no bar and writes no line: the clock here moves a second per reading, so that this one does.)"""
    logger = logging.getLogger("rnnlab.bench")
    with progress_mode(mode):
        start = time.perf_counter()
        for _ in range(n):
            p = Progress("bench", 10, unit="steps", logger=logger, every=1.0, clock=itertools.count(0.0).__next__)
            p.update(10)
            p.close()
        seconds = time.perf_counter() - start
    return seconds / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every mode (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=300, help="training steps per timing (default: %(default)s)")
    args = ap.parse_args()

    import torch

    from models.lm import lm_trainer
    from pipeline import corpus, tokenize, vocab, windows
    from pipeline.params import read_params
    from pipeline.sources import grammar
    from pipeline.vocab import Vocab

    torch.set_num_threads(1)
    os.environ[SECONDS_ENV] = "1"  # lines are written during the work, not only at its end
    log.setup()
    params = read_params(ROOT / "params.yaml")
    work_dir = Path(tempfile.mkdtemp(prefix="rnnlab-bench-progress-"))
    os.chdir(work_dir)  # the stages' paths are relative to the repository root

    def build_corpus() -> None:
        stats = corpus.write_documents(grammar.read(params.corpus.grammar), paths.DOCS, "grammar")
        corpus.write_metrics(stats, "grammar")

    def build_tokens() -> None:
        tok = tokenize.tokenizer_for("word", params.tokenize.word)
        tokenize.tokenize_table(paths.DOCS, paths.tokens("word"), tok, 50_000, 1, "tokenize word")

    def build_vocab() -> None:
        counts, docs = vocab.count_tokens(paths.tokens("word"), "vocab word")
        vocab.write_vocab("word", counts, docs, params.vocab.word)

    def build_windows() -> None:
        windows.build(
            "word",
            params.windows.word,
            paths.tokens("word"),
            Vocab.load(paths.vocab("word")),
            paths.windows("word"),
        )

    train_params = params.train.word.model_copy(update={"epochs": 1, "epoch_size": args.steps, "device": "cpu"})
    runs = [0]

    def train() -> None:
        runs[0] += 1  # a fresh checkpoint folder each time: every timing trains from scratch
        run = {"fingerprint": "bench", "tokenizer": None, "vocab_path": str(paths.vocab("word"))}
        vocab_ = Vocab.load(paths.vocab("word"))
        lm_trainer(train_params, paths.windows("word"), Path(f"ckpt/{runs[0]}"), vocab_, run).fit()

    pieces = {
        "corpus (grammar)": build_corpus,
        "tokenize word": build_tokens,
        "vocab word": build_vocab,
        "windows word": build_windows,
        f"train.word, {args.steps} steps + validation": train,
    }
    for name, work in pieces.items():  # once, so that every output exists and the imports are warm
        timed(work, "off")
        print(f"warm-up: {name}", flush=True)

    # How many phases and updates each piece makes (progress.set counts as an update): for the estimate.
    phases, updates = {}, {}
    plain_init, plain_update = Progress.__init__, Progress.update

    def counted_init(self: Progress, *a: Any, **k: Any) -> None:
        counter[0] += 1
        plain_init(self, *a, **k)

    def counted_update(self: Progress, n: float = 1) -> None:
        counter[1] += 1
        plain_update(self, n)

    Progress.__init__, Progress.update = counted_init, counted_update  # type: ignore[method-assign]
    for name, work in pieces.items():
        counter = [0, 0]
        timed(work, "off")
        phases[name], updates[name] = counter
    Progress.__init__, Progress.update = plain_init, plain_update  # type: ignore[method-assign]

    times: dict[str, dict[str, list[float]]] = {name: {m: [] for m in MODES} for name in pieces}
    ratios: dict[str, dict[str, list[float]]] = {name: {m: [] for m in MODES[1:]} for name in pieces}
    for _ in range(args.rounds):
        for name, work in pieces.items():
            got = {m: timed(work, m) for m in MODES}
            for m in MODES:
                times[name][m].append(got[m])
            for m in MODES[1:]:
                ratios[name][m].append(got[m] / got["off"])
    cost = {m: update_cost(m) for m in MODES}  # seconds per Progress.update()
    start_end = {m: phase_cost(m) for m in MODES}  # seconds per phase, made and closed

    print(f"\n{args.rounds} rounds; {torch.get_num_threads()} torch thread(s)")
    print(
        f"Progress.update(): off {cost['off'] * 1e9:.0f} ns, bar {cost['bar'] * 1e9:.0f} ns, "
        f"lines {cost['lines'] * 1e9:.0f} ns per call (the mean of 200,000 calls)"
    )
    print(
        f"a long phase, made and closed: off {start_end['off'] * 1e6:.0f} µs, bar {start_end['bar'] * 1e6:.0f} µs, "
        f"lines {start_end['lines'] * 1e6:.0f} µs (at most: counted for every phase below, even those under 0.5 s)"
    )
    print(
        "\nmeasured: the fastest of the rounds per mode, and the median over rounds of (time / time off in that round);"
        "\nestimated: (phases x their extra cost + updates x theirs) / time off, which no load spike can blur"
    )
    head = f"{'work':<38} {'off':>7} {'bar':>7} {'lines':>7} {'bar/off':>15} {'lines/off':>15} {'updates':>8}"
    print(head + f" {'estimated bar':>14} {'lines':>8}")
    for name in pieces:
        t = {m: min(times[name][m]) for m in MODES}
        r = {m: statistics.median(ratios[name][m]) for m in MODES[1:]}
        est = {
            m: (phases[name] * (start_end[m] - start_end["off"]) + updates[name] * (cost[m] - cost["off"])) / t["off"]
            for m in MODES[1:]
        }
        print(
            f"{name:<38} {t['off']:6.2f}s {t['bar']:6.2f}s {t['lines']:6.2f}s "
            f"{t['bar'] / t['off']:7.3f} {r['bar']:7.3f} {t['lines'] / t['off']:7.3f} {r['lines']:7.3f} "
            f"{updates[name]:8,} {est['bar']:14.4%} {est['lines']:8.4%}",
            flush=True,
        )
    steps = params.train.word.epochs * lm_trainer_steps(params)
    print(
        f"\nthe default run trains train.word for {steps:,} steps ({params.train.word.epochs} epochs): "
        f"{cost['bar'] * steps * 1e3:.2f} ms of updates with a bar, {cost['lines'] * steps * 1e3:.2f} ms with lines"
    )
    os.chdir(ROOT)
    shutil.rmtree(work_dir)


def lm_trainer_steps(params: object) -> int:
    """Steps per epoch of the default word model on the data built here (as the Trainer counts them)."""
    from models.data import train_batches

    p = params.train.word  # type: ignore[attr-defined]
    if p.epoch_size:
        return int(p.epoch_size)
    return train_batches(p.mode, paths.windows("word") / "train", p.batch_size, p.bptt, p.seed).steps_per_pass


if __name__ == "__main__":
    main()
