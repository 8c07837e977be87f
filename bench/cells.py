"""Forward + backward time per batch of the cell variants against the fused nn.LSTM / nn.GRU.

    .venv/bin/python -m bench.cells                  # T=35, B=20, input = hidden = 200, 1 and 2 layers, 1 thread
    .venv/bin/python -m bench.cells --threads 2 --layers 2

Each repetition times every model once, back to back, so a load spike on a shared
machine hits the reference and the variants alike; the ratio is the median over
repetitions of (variant / fused reference of the same repetition). "lstm (loop)"
and "gru (loop)" are VariantLSTM / VariantGRU with every extra off: they show
what the Python time loop itself costs, before any extra.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from models.cells import VariantGRU, VariantLSTM, make_recurrent


def step_time(model: nn.Module, x: torch.Tensor) -> float:
    """Seconds for one forward and backward pass (the loss is the output's sum)."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out, _ = model(x)  # (T, B, H)
    out.sum().backward()
    return time.perf_counter() - start


def models_for(layers: int, size: int) -> dict[str, tuple[str, Callable[[], nn.Module]]]:
    """name -> (name of its fused reference, constructor)."""
    return {
        "nn.LSTM": ("nn.LSTM", lambda: nn.LSTM(size, size, layers)),
        "lstm (loop)": ("nn.LSTM", lambda: VariantLSTM(size, size, layers)),
        "lstm_peephole": ("nn.LSTM", lambda: make_recurrent("lstm_peephole", size, size, layers)),
        "lstm_cifg": ("nn.LSTM", lambda: make_recurrent("lstm_cifg", size, size, layers)),
        "lstm_ln": ("nn.LSTM", lambda: make_recurrent("lstm_ln", size, size, layers)),
        "nn.GRU": ("nn.GRU", lambda: nn.GRU(size, size, layers)),
        "gru (loop)": ("nn.GRU", lambda: VariantGRU(size, size, layers)),
        "gru_ln": ("nn.GRU", lambda: make_recurrent("gru_ln", size, size, layers)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: see ENVIRONMENT.md)")
    ap.add_argument("--steps", type=int, default=35, help="T")
    ap.add_argument("--batch", type=int, default=20, help="B")
    ap.add_argument("--hidden", type=int, default=200, help="input size = hidden size")
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"cells: fwd+bwd per batch, T={args.steps} B={args.batch} input=hidden={args.hidden}, float32, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {args.reps} interleaved reps"
    )
    print(f"{'layers':>6}  {'model':<14} {'ms/batch':>9} {'x fused':>8}")
    for layers in args.layers:
        specs = models_for(layers, args.hidden)
        models = {name: make() for name, (_, make) in specs.items()}
        x = torch.randn(args.steps, args.batch, args.hidden)  # (T, B, I)
        times: dict[str, list[float]] = {name: [] for name in models}
        for rep in range(args.warmup + args.reps):
            for name, model in models.items():
                t = step_time(model, x)
                if rep >= args.warmup:
                    times[name].append(t)
        for name, (ref, _) in specs.items():
            ratio = statistics.median(a / b for a, b in zip(times[name], times[ref], strict=True))
            print(f"{layers:>6}  {name:<14} {1e3 * statistics.median(times[name]):>9.2f} {ratio:>8.2f}")


if __name__ == "__main__":
    main()
