"""Data-parallel training throughput: steps/s with 2 torchrun processes against 1 process, same global batch.

    .venv/bin/python -m bench.ddp                     # both models, 2 rounds
    .venv/bin/python -m bench.ddp --steps 30 --rounds 3

Data: the grammar corpus (4,000 training documents, word level) built into a temp folder.
Models, each at the same global batch (32 rows x bptt 35 = 1,120 tokens per step):

* ``small``: the default word LSTM (emb 32, 1 x 128): communication-bound;
* ``medium``: Zaremba et al.'s medium LSTM (emb 650, 2 x 650); the grammar's 49-word
  vocabulary makes its decoder negligible, so this times the recurrent layers:
  ~40 MFLOP per token for forward + backward (4 gates x (650 + 650) x 650 x 2 FLOP x
  2 layers x 3), which is what docs/scaling.md's scale plan extrapolates from.

1 process: bench/ddp_job.py in this process; 2 processes: the same job under
``torchrun --standalone --nproc_per_node 2`` (gloo), one thread each. Timed: N train steps
after 2 warm-up steps, between barriers (start-up, validation and checkpoints excluded).
Rounds alternate 1 and 2 processes; the ratio is the median over rounds of (2-process
steps/s / 1-process steps/s). On 2 cores a speed-up is not expected: each process computes
half the batch, but the small per-step work leaves gloo's all-reduce and the second
process's share of the 2 cores (with anything else running) to decide.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.ddp_job import run_job
from bench.harness import ROOT, SMALL_CORPUS, merge, write_params
from models import distributed
from models.device import set_threads

MODELS = {
    "small": {"emb_dim": 32, "hidden": 128, "layers": 1},
    "medium": {"emb_dim": 650, "hidden": 650, "layers": 2},
}
COMMON = {"batch_size": 32, "bptt": 35, "lr": 0.003, "seed": 0, "device": "cpu", "epochs": 1}


def build_data(root: Path) -> None:
    from pipeline import corpus, tokenize, vocab, windows

    corpus_params = merge(
        SMALL_CORPUS, {"corpus": {"grammar": {"train_docs": 4000, "valid_docs": 100, "test_docs": 100}}}
    )
    write_params(root / "params.yaml", corpus_params)
    with contextlib.chdir(root):
        corpus.run("params.yaml")
        tokenize.run("word", "params.yaml", 1)
        vocab.run("word", "params.yaml")
        windows.run("word", "params.yaml")


def two_processes(job: dict[str, Any], folder: Path) -> dict[str, float]:
    spec, out = folder / "job.json", folder / "timing.json"
    spec.write_text(json.dumps([job]))
    argv = distributed.torchrun(2, "bench.ddp_job", [str(spec), str(out)])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RNNLAB_THREADS": "1"}
    subprocess.run(argv, env=env, check=True, capture_output=True, start_new_session=True, timeout=900)
    return json.loads(out.read_text())[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = ap.parse_args()
    set_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="rnnlab-bench-ddp-"))
    try:
        build_data(tmp)
        tokens = COMMON["batch_size"] * COMMON["bptt"]
        for name in args.models:
            rates: dict[int, list[float]] = {1: [], 2: []}
            for r in range(args.rounds):
                for nproc in (1, 2):
                    job = {
                        "data": str(tmp),
                        "checkpoints": str(tmp / f"ck-{name}-{nproc}-{r}"),
                        "train": {**COMMON, **MODELS[name]},
                        "time_steps": args.steps,
                    }
                    t = run_job(job) if nproc == 1 else two_processes(job, tmp)
                    rates[nproc].append(t["steps"] / t["seconds"])
                    print(
                        f"{name} round {r + 1}: {nproc} process{'es' if nproc > 1 else ''}: "
                        f"{rates[nproc][-1]:.2f} steps/s = {rates[nproc][-1] * tokens:,.0f} tokens/s",
                        flush=True,
                    )
            ratio = statistics.median(b / a for a, b in zip(rates[1], rates[2]))
            print(
                f"{name}: 1 process {statistics.median(rates[1]):.2f} steps/s, 2 processes "
                f"{statistics.median(rates[2]):.2f} steps/s: ratio {ratio:.2f}x (median of {args.rounds} rounds)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
