"""Batches from the windows stage's memory-mapped ``.npy`` files (layout: pipeline/windows.py).

Training batches are a pure function of the global step: pass ``p = step //
steps_per_pass`` shuffles with a permutation drawn from ``(seed, p)`` alone, so
resuming at step s needs nothing but s (no consumed RNG, no iterator state).

    data = train_batches("stream", folder, batch_size=20, bptt=35, seed=0)
    batch = data.batch(step)              # inputs, targets (T, B) int64; IGNORE marks padding

Data parallel (models/distributed.py): ``train_batches(..., rank=r, world=W)`` gives
rank r its contiguous block ``block(b, r, W)`` of the b rows the single process
would read at that step, so the W ranks together read exactly that batch.

Every array is converted to int64 one batch at a time; no per-token Python.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.errors import DataError
from pipeline.params import WindowsParams
from pipeline.vocab import EOS, Vocab

IGNORE = -100  # target id that F.cross_entropy(ignore_index=IGNORE) skips: padding, warm-up context
STREAM_WARMUP = 128  # evaluation: tokens read before a segment's first scored target, so none lacks context
MODE_FILES = {"stream": ("stream.npy",), "window": ("windows.npy",), "padded": ("padded.npy", "lengths.npy")}


@dataclass(frozen=True)
class Batch:
    inputs: Tensor  # (T, B) int64
    targets: Tensor  # (T, B) int64; IGNORE where nothing is to be predicted
    tokens: int  # targets that count (not IGNORE)
    fresh: bool  # start from a zero state (a new pass in stream mode; always otherwise)


def read_meta(data_dir: Path, vocab: Vocab) -> dict[str, Any]:
    """The windows stage's meta.json, checked against the vocabulary the model will use."""
    path = Path(data_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro` (stage windows) first") from None
    if meta["vocab_sha256"] != vocab.sha256:
        raise DataError(f"{path}: encoded with another vocabulary than {vocab.level}'s; rerun `dvc repro`")
    return meta


def eval_window(meta: dict[str, Any]) -> tuple[int, int]:
    """(length, stride) of the windows a meta.json's dataset was cut with: held-out windows are scored alike."""
    cfg = WindowsParams.model_validate(meta["params"])
    return cfg.length, cfg.effective_stride


def open_array(folder: Path, name: str) -> np.ndarray:
    path = Path(folder) / name
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        mode = next((m for m, files in MODE_FILES.items() if name in files), "?")
        raise DataError(
            f"{path}: not found; run `dvc repro` (stage windows), and keep {mode!r} in windows.<level>.modes"
        ) from None


def _batch(inputs: np.ndarray, targets: np.ndarray, fresh: bool) -> Batch:
    """(B, T) arrays (any int dtype) -> a sequence-first int64 Batch."""
    tgt = torch.from_numpy(np.ascontiguousarray(targets.T, dtype=np.int64))
    inp = torch.from_numpy(np.ascontiguousarray(inputs.T, dtype=np.int64))
    return Batch(inp, tgt, int((targets != IGNORE).sum()), fresh)


def block(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous block ``[lo, hi)`` of ``n`` rows; block sizes differ by one at most.

    ``n = 5, world = 2``: rank 0 reads rows [0, 2), rank 1 rows [2, 5).
    """
    return n * rank // world, n * (rank + 1) // world


def empty_batch() -> Batch:
    """What a rank reads when its block of a step is empty (a short last batch, more ranks than rows):
    one position, IGNOREd. It still runs forward and backward, as DDP needs of every rank,
    and adds nothing to the loss, the count or the gradients."""
    return Batch(torch.zeros(1, 1, dtype=torch.int64), torch.full((1, 1), IGNORE, dtype=torch.int64), 0, True)


@functools.lru_cache(maxsize=2)
def permutation(seed: int, epoch_pass: int, n: int) -> np.ndarray:
    """The row order of one pass: depends on (seed, pass) only, never on RNG history.

    Cached (read-only): every step of a pass slices the same order, and drawing it is O(n).
    """
    order = np.random.default_rng([seed, epoch_pass]).permutation(n)
    order.flags.writeable = False
    return order


def shuffled_rows(seed: int, step: int, steps_per_pass: int, n: int, batch_size: int) -> np.ndarray:
    """The rows of step ``step``: its slice of the pass's order, sorted so reads are sequential."""
    order = permutation(seed, step // steps_per_pass, n)
    k = step % steps_per_pass
    return np.sort(order[k * batch_size : (k + 1) * batch_size])


class StreamBatches:
    """Contiguous TBPTT over ``stream.npy`` (pytorch/examples' batchify + get_batch).

    The stream is cut into B equal rows, read bptt columns at a time::

        stream  a b c d e f g h i j k l m n o p q r s t u v w x (y z dropped)
        rows    a b c d e f g h        batch k: inputs  rows[:, k*bptt : k*bptt + bptt]
                i j k l m n o p                 targets rows[:, k*bptt+1 : k*bptt + bptt + 1]
                q r s t u v w x        the state of row b carries from batch k to k+1

    Each pass reads the same order; the state is reset at the start of a pass. Rank r of
    W reads the rows ``block(batch_size, r, W)`` (and carries their state).
    """

    def __init__(self, folder: Path, batch_size: int, bptt: int, rank: int = 0, world: int = 1):
        stream = open_array(folder, "stream.npy")
        self.cols = len(stream) // batch_size
        if self.cols < 2:
            raise DataError(
                f"{folder}/stream.npy has {len(stream)} tokens: too few for batch_size={batch_size} "
                "(each of the batch_size rows needs 2); lower train.<level>.batch_size"
            )
        lo, hi = block(batch_size, rank, world)
        self.rows = stream[: self.cols * batch_size].reshape(batch_size, self.cols)[lo:hi]  # (b, n): a view
        self.bptt = bptt
        self.steps_per_pass = math.ceil((self.cols - 1) / bptt)

    def batch(self, step: int) -> Batch:
        k = step % self.steps_per_pass
        i = k * self.bptt
        n = min(self.bptt, self.cols - 1 - i)
        return _batch(self.rows[:, i : i + n], self.rows[:, i + 1 : i + 1 + n], fresh=k == 0)


class WindowBatches:
    """Shuffled rows of ``windows.npy`` (N, L + 1): inputs w[:, :-1], targets w[:, 1:] (the next token of each)."""

    def __init__(self, folder: Path, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.windows = open_array(folder, "windows.npy")
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world = rank, world
        self.steps_per_pass = math.ceil(len(self.windows) / batch_size)

    def rows(self, step: int) -> np.ndarray:
        """This rank's rows of step ``step``: its block of the single-process batch's sorted rows."""
        rows = shuffled_rows(self.seed, step, self.steps_per_pass, len(self.windows), self.batch_size)
        lo, hi = block(len(rows), self.rank, self.world)
        return rows[lo:hi]

    def batch(self, step: int) -> Batch:
        rows = self.rows(step)
        if len(rows) == 0:
            return empty_batch()
        w = self.windows[rows]  # (b, L + 1)
        return _batch(w[:, :-1], w[:, 1:], fresh=True)


def padded_batch(rows: np.ndarray, lengths: np.ndarray) -> Batch:
    """Documents (b, M) right-padded, each ending in <eos> within its length ->
    inputs [<eos>, row[:-1]] and targets row, with targets past each length IGNOREd.

    Columns past the longest length in the batch are dropped: they hold padding only.
    """
    width = int(lengths.max())
    rows = np.asarray(rows[:, :width], dtype=np.int64)  # (b, T)
    inputs = np.concatenate([np.full((len(rows), 1), EOS, np.int64), rows[:, :-1]], axis=1)
    targets = np.where(np.arange(width) < lengths[:, None], rows, IGNORE)
    return _batch(inputs, targets, fresh=True)


class PaddedBatches:
    """Shuffled documents of ``padded.npy`` (R, max_length) + ``lengths.npy``: one document per row."""

    def __init__(self, folder: Path, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.padded = open_array(folder, "padded.npy")
        self.lengths = np.asarray(open_array(folder, "lengths.npy"))
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world = rank, world
        self.steps_per_pass = math.ceil(len(self.padded) / batch_size)

    def batch(self, step: int) -> Batch:
        rows = shuffled_rows(self.seed, step, self.steps_per_pass, len(self.padded), self.batch_size)
        lo, hi = block(len(rows), self.rank, self.world)  # ranks' token counts differ: the Trainer all-reduces them
        rows = rows[lo:hi]
        if len(rows) == 0:
            return empty_batch()
        return padded_batch(self.padded[rows], self.lengths[rows])


TrainBatches = StreamBatches | WindowBatches | PaddedBatches


def train_batches(
    mode: str, folder: Path, batch_size: int, bptt: int, seed: int, rank: int = 0, world: int = 1
) -> TrainBatches:
    """Training batches of ``mode``; with ``world`` > 1, rank ``rank``'s block of each global batch."""
    if mode == "stream":
        return StreamBatches(folder, batch_size, bptt, rank, world)
    if mode == "window":
        return WindowBatches(folder, batch_size, seed, rank, world)
    if mode == "padded":
        return PaddedBatches(folder, batch_size, seed, rank, world)
    raise ValueError(f"unknown mode {mode!r}")


# --- evaluation: every target of a split scored exactly once -----------------------------


def segments(
    stream: np.ndarray, seg_len: int, warmup: int, rows: slice = slice(None), cols: slice = slice(None)
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a stream's T - 1 targets into segments of ``seg_len``, each read after up to
    ``warmup`` tokens of unscored context: (inputs, targets) (n_seg, warmup + seg_len),
    or the block ``[rows, cols]`` of them, computed alone (memory of that block only).

    Segment j scores targets at positions j*seg_len + 1 ... (j+1)*seg_len::

        stream   <eos> a b c d e f g h i      seg_len 3, warmup 2
        seg 0    in  <eos> a b        tgt  a b c
        seg 1    in  a b c d e        tgt  (b c) d e f      (..) = warm-up, IGNOREd
        seg 2    in  d e f g h        tgt  (e f) g h i

    ``stream`` may be a memory map: only the positions of the block are read.
    """
    n_targets = len(stream) - 1
    seg = np.arange(n_segments(len(stream), seg_len))[rows]  # segment ids of the block
    col = np.arange(warmup + seg_len)[cols]  # columns of the block
    first = seg * seg_len + 1  # first scored target position per segment
    start = np.maximum(first - 1 - warmup, 0)  # first input position
    pos = start[:, None] + col  # (rows, cols) input positions
    tgt_pos = pos + 1
    scored = (tgt_pos >= first[:, None]) & (tgt_pos < first[:, None] + seg_len) & (tgt_pos <= n_targets)
    inputs = np.where(tgt_pos <= n_targets, np.asarray(stream[np.minimum(pos, n_targets)], dtype=np.int64), 0)
    targets = np.where(scored, np.asarray(stream[np.minimum(tgt_pos, n_targets)], dtype=np.int64), IGNORE)
    return inputs, targets


def n_segments(n_tokens: int, seg_len: int) -> int:
    """How many segments of ``seg_len`` targets ``segments`` cuts a stream of ``n_tokens`` into."""
    return max(1, math.ceil((n_tokens - 1) / seg_len))


def eval_batches(
    mode: str, folder: Path, batch_size: int, window: int, stride: int, chunk: int = 64
) -> Iterator[Batch]:
    """Yield Batches covering every target of a split once.

    stream: ``batch_size`` long segments side by side, read ``chunk`` steps at a time
    with the state carried, each after 128 tokens of warm-up. window: segments of
    the training window length from a zero state, each after ``window - stride``
    tokens of warm-up, as training saw. padded: the documents from a zero state
    (tokens cut off by ``max_length`` are not scored, as in training).

    Each batch is cut from the memory-mapped arrays when it is needed, so memory stays
    that of one batch whatever the split's size. ``chunk`` 64 (it was 256): the same
    tokens/s on CPU, a quarter of the recurrent activations held per batch.
    """
    if mode == "padded":
        padded = open_array(folder, "padded.npy")
        lengths = np.asarray(open_array(folder, "lengths.npy"))
        for i in range(0, len(padded), batch_size):
            yield padded_batch(padded[i : i + batch_size], lengths[i : i + batch_size])
        return
    stream = open_array(folder, "stream.npy")
    if mode == "stream":
        seg_len = math.ceil((len(stream) - 1) / batch_size)
        for t in range(0, STREAM_WARMUP + seg_len, chunk):
            inputs, targets = segments(stream, seg_len, STREAM_WARMUP, cols=slice(t, t + chunk))
            yield _batch(inputs, targets, fresh=t == 0)
        return
    for i in range(0, n_segments(len(stream), window), batch_size):
        inputs, targets = segments(stream, window, window - stride, rows=slice(i, i + batch_size))
        yield _batch(inputs, targets, fresh=True)


def eval_batch_count(mode: str, folder: Path, batch_size: int, window: int, chunk: int = 64) -> int:
    """How many batches ``eval_batches`` yields (from the arrays' shapes: nothing is read)."""
    if mode == "padded":
        return math.ceil(len(open_array(folder, "padded.npy")) / batch_size)
    n = len(open_array(folder, "stream.npy"))
    if mode == "stream":
        return math.ceil((STREAM_WARMUP + math.ceil((n - 1) / batch_size)) / chunk)
    return math.ceil(n_segments(n, window) / batch_size)
