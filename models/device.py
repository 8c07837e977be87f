"""Where tensors live: ``device: auto`` picks CUDA when present, where the forward pass runs in bf16."""

from __future__ import annotations

import contextlib
import os

import torch

from pipeline.errors import ParamsError

DEFAULT_THREADS = 1  # measured on 2 shared cores: 2 threads ran ~6x slower under contention (docs/performance.md)


def resolve_device(name: str = "auto", key: str = "device") -> torch.device:
    """``auto`` -> cuda if available, else cpu; ``cuda`` without a GPU is an error naming ``key``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"{key} is 'cuda' but torch sees no CUDA device; set it to auto or cpu")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); a no-op on CPU, so CPU runs stay bit-exact fp32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int | None = None) -> int:
    """Fix torch's intra-op threads (``RNNLAB_THREADS`` or DEFAULT_THREADS); return the count.

    Results on CPU are bit-exact only for a fixed count, so checkpoints record it.
    """
    n = threads or int(os.environ.get("RNNLAB_THREADS", DEFAULT_THREADS))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
