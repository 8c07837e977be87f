"""Batches from the windows datasets: layouts, determinism by step, and full coverage in evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import IGNORE, PaddedBatches, StreamBatches, WindowBatches, eval_batches, padded_batch, segments
from pipeline.vocab import EOS, PAD


def _save(folder: Path, **arrays: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", a)
    return folder


def test_stream_batches_are_batchify_and_carry_across_steps(tmp_path: Path) -> None:
    stream = np.arange(26, dtype=np.uint16)  # 26 tokens, 3 rows of 8 (2 dropped)
    data = StreamBatches(_save(tmp_path, stream=stream), batch_size=3, bptt=3)
    assert data.steps_per_pass == 3  # targets 1..7 of each row, 3 at a time
    b0, b1, b2 = (data.batch(s) for s in range(3))
    assert b0.inputs.dtype == torch.int64 and b0.inputs.shape == (3, 3)  # (T, B)
    assert b0.inputs[:, 1].tolist() == [8, 9, 10] and b0.targets[:, 1].tolist() == [9, 10, 11]
    assert b1.inputs[:, 0].tolist() == [3, 4, 5]  # continues where b0 stopped: the state carries
    assert b2.inputs.shape == (1, 3) and b2.targets[:, 2].tolist() == [23]
    assert b0.fresh and not b1.fresh and data.batch(3).fresh  # a new pass resets the state
    assert torch.equal(data.batch(4).inputs, b1.inputs)


def test_window_and_padded_orders_depend_only_on_seed_and_pass(tmp_path: Path) -> None:
    windows = np.arange(50 * 6, dtype=np.uint16).reshape(50, 6)
    data = WindowBatches(_save(tmp_path, windows=windows), batch_size=8, seed=3)
    assert data.steps_per_pass == 7
    epoch0 = [data.rows(s) for s in range(7)]
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(50))  # every window once per pass
    again = WindowBatches(tmp_path, batch_size=8, seed=3)
    assert all(np.array_equal(again.rows(s), r) for s, r in enumerate(epoch0))  # no hidden RNG state
    assert not np.array_equal(np.concatenate([data.rows(s) for s in range(7, 14)]), np.concatenate(epoch0))
    b = data.batch(0)
    assert torch.equal(b.inputs[1:], b.targets[:-1])  # targets are inputs shifted by one


def test_padded_batch_feeds_eos_first_and_ignores_padding() -> None:
    rows = np.array([[5, 6, EOS, PAD, PAD], [7, EOS, PAD, PAD, PAD]], dtype=np.uint16)
    b = padded_batch(rows, np.array([3, 2]))
    assert b.inputs.T.tolist() == [[EOS, 5, 6], [EOS, 7, EOS]]  # columns past the longest row dropped
    assert b.targets.T.tolist() == [[5, 6, EOS], [7, EOS, IGNORE]]
    assert b.tokens == 5


def test_padded_batches_cover_every_document(tmp_path: Path) -> None:
    rows = np.tile(np.array([[4, EOS, 0]], np.uint16), (10, 1))
    folder = _save(tmp_path, padded=rows, lengths=np.full(10, 2, np.int32))
    data = PaddedBatches(folder, batch_size=4, seed=0)
    assert sum(data.batch(s).tokens for s in range(data.steps_per_pass)) == 20


@pytest.mark.parametrize(("seg_len", "warmup"), [(1, 0), (3, 2), (4, 100), (50, 5)])
def test_segments_score_every_target_exactly_once(seg_len: int, warmup: int) -> None:
    stream = np.arange(1, 24, dtype=np.uint16)  # 23 tokens: 22 targets
    inputs, targets = segments(stream, seg_len, warmup)
    scored = targets[targets != IGNORE]
    assert sorted(scored.tolist()) == list(range(2, 24))
    # wherever a target is scored, its input is the token before it in the stream
    rows, cols = np.nonzero(targets != IGNORE)
    assert np.array_equal(inputs[rows, cols] + 1, targets[rows, cols])


@pytest.mark.parametrize(("seg_len", "warmup"), [(1, 0), (3, 2), (7, 100)])
def test_a_block_of_segments_is_computed_alone_and_equals_the_whole(tmp_path: Path, seg_len: int, warmup: int) -> None:
    # Evaluation cuts each batch from the memory map on its own: memory of one batch, not of the split.
    stream = np.load(_save(tmp_path, stream=np.arange(3, 60, dtype=np.uint16)) / "stream.npy", mmap_mode="r")
    inputs, targets = segments(stream, seg_len, warmup)
    for rows, cols in ((slice(0, 2), slice(None)), (slice(3, 5), slice(1, 4)), (slice(None), slice(2, 200))):
        block_in, block_tgt = segments(stream, seg_len, warmup, rows=rows, cols=cols)
        assert np.array_equal(block_in, inputs[rows, cols]) and np.array_equal(block_tgt, targets[rows, cols])


@pytest.mark.parametrize("mode", ["stream", "window", "padded"])
def test_eval_batches_score_each_token_once(lm_data: Path, mode: str) -> None:
    folder = lm_data / "data/windows/word/valid"
    stream = np.load(folder / "stream.npy")
    lengths = np.load(folder / "lengths.npy")
    total = sum(b.tokens for b in eval_batches(mode, folder, batch_size=7, window=35, stride=17, chunk=50))
    assert total == (lengths.sum() if mode == "padded" else len(stream) - 1)
