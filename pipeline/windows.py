"""Stage ``windows``: encode token shards to ids and cut ready-to-train datasets.

    python -m pipeline.windows --level word

For each split, ``data/windows/<level>/<split>/`` gets the modes listed in
``windows.<level>.modes`` as ``.npy`` arrays (uint16 when the vocabulary fits,
else int32) that models/ memory-map:

``stream.npy`` (T,)
    every document followed by <eos>, after one leading <eos>, so that every
    token, the first included, has a context and is predicted exactly once::

        <eos> d0 d0 d0 <eos> d1 d1 <eos> d2 ... <eos>

    TBPTT training batchifies it as pytorch/examples' word_language_model does.
``windows.npy`` (N, L + 1)
    windows of the stream with stride S (default L // 2, as in Abrahams, Hafner,
    Erwitt & Scarpinelli, *TensorFlow for Machine Intelligence*, Bleeding Edge
    Press, 2016, chapter 6); inputs are ``w[:, :-1]`` and targets ``w[:, 1:]``.
``padded.npy`` (R, max_length), ``lengths.npy`` (R,), ``doc_ids.npy`` (R,)
    one row per document (or sentence): its tokens then <eos>, truncated to
    ``max_length`` and right-padded with <pad> = 0. ``labels.npy`` (R,) holds
    class ids when the documents have labels (names in ``meta.json``).

``meta.json`` records the vocabulary it encoded with and the sha256 of every
array, which is the content hash that training caches on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import paths, stage
from pipeline.codedeps import code_deps
from pipeline.errors import DataError
from pipeline.io import NpyAppender, atomic_dir, sha256_file, write_json
from pipeline.params import SPLITS, WindowsParams, load_params
from pipeline.progress import Progress, parquet_rows
from pipeline.shards import iter_batches, schema_of, shard_files
from pipeline.vocab import EOS, PAD, TOKEN_SHARDS, TOKENS_REQUIRED, UNK, Vocab

logger = logging.getLogger(f"rnnlab.{__name__}")

WINDOW_CHUNK = 65_536  # windows written per block: bounded memory for any stream length


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class _Encoder:
    """Token strings → ids, vectorized through Arrow's hash lookup."""

    def __init__(self, vocab: Vocab, dtype: np.dtype):
        self.value_set = pa.array(vocab.tokens, pa.string())
        self.dtype = dtype

    def __call__(self, tokens: pa.Array) -> np.ndarray:
        ids = pc.fill_null(pc.index_in(tokens, value_set=self.value_set), UNK)
        return ids.to_numpy(zero_copy_only=False).astype(self.dtype)


def with_separators(ids: np.ndarray, unit_lengths: np.ndarray, sep: int) -> np.ndarray:
    """Concatenated units, each followed by ``sep``: [u0, sep, u1, sep, ...]."""
    unit = np.repeat(np.arange(len(unit_lengths)), unit_lengths)
    out = np.full(len(ids) + len(unit_lengths), sep, dtype=ids.dtype)
    out[np.arange(len(ids)) + unit] = ids  # token j moves right by the separators before it
    return out


def sentence_lengths(ids: np.ndarray, doc_lengths: np.ndarray, end_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split documents into sentences ending at ``end_ids`` tokens: (lengths, owning doc index)."""
    doc_ends = np.cumsum(doc_lengths)
    cuts = np.union1d(np.flatnonzero(np.isin(ids, end_ids)) + 1, doc_ends)
    cuts = cuts[cuts > 0]
    starts = np.concatenate([[0], cuts[:-1]])
    lengths = cuts - starts
    owner = np.searchsorted(doc_ends, starts, side="right")
    keep = lengths > 0
    return lengths[keep], owner[keep]


def pad_rows(ids: np.ndarray, lengths: np.ndarray, max_length: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Units (each given its <eos>) as a (rows, max_length) <pad>-filled matrix, and the kept lengths."""
    seq = with_separators(ids, lengths, EOS)
    full = lengths + 1
    starts = np.concatenate([[0], np.cumsum(full)[:-1]])
    kept = np.minimum(full, max_length)
    row = np.repeat(np.arange(len(full)), kept)
    col = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
    out = np.full((len(full), max_length), PAD, dtype=dtype)
    out[row, col] = seq[np.repeat(starts, kept) + col]
    return out, kept


class _SplitWriter:
    """Appends one split's encoded documents to its open ``.npy`` files."""

    def __init__(self, folder: Path, cfg: WindowsParams, dtype: np.dtype, end_ids: np.ndarray, labelled: bool):
        folder.mkdir(parents=True)
        self.cfg, self.dtype, self.end_ids = cfg, dtype, end_ids
        self.docs = 0
        self.truncated = 0
        self.files: dict[str, NpyAppender] = {}
        if "stream" in cfg.modes or "window" in cfg.modes:
            self.files["stream"] = NpyAppender(folder / "stream.npy", dtype)
            self.files["stream"].append(np.array([EOS], dtype))
        if "padded" in cfg.modes:
            self.files["padded"] = NpyAppender(folder / "padded.npy", dtype, (cfg.max_length,))
            self.files["lengths"] = NpyAppender(folder / "lengths.npy", np.int32)
            self.files["doc_ids"] = NpyAppender(folder / "doc_ids.npy", np.int64)
            if labelled:
                self.files["labels"] = NpyAppender(folder / "labels.npy", np.int32)

    def add(self, ids: np.ndarray, doc_lengths: np.ndarray, doc_ids: np.ndarray, labels: np.ndarray | None) -> None:
        self.docs += len(doc_lengths)
        if "stream" in self.files:
            self.files["stream"].append(with_separators(ids, doc_lengths, EOS))
        if "padded" in self.files:
            if self.cfg.unit == "sentence":
                lengths, owner = sentence_lengths(ids, doc_lengths, self.end_ids)
            else:
                lengths, owner = doc_lengths, np.arange(len(doc_lengths))
            rows, kept = pad_rows(ids, lengths, self.cfg.max_length, self.dtype)
            self.truncated += int((kept < lengths + 1).sum())
            self.files["padded"].append(rows)
            self.files["lengths"].append(kept.astype(np.int32))
            self.files["doc_ids"].append(doc_ids[owner])
            if labels is not None:
                self.files["labels"].append(labels[owner])

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def abort(self) -> None:
        for f in self.files.values():
            f.abort()


def write_windows(stream_path: Path, out_path: Path, length: int, stride: int, split: str, key: str) -> int:
    """Cut the stream into (N, length + 1) windows with the given stride; return N."""
    stream = np.load(stream_path, mmap_mode="r")
    if len(stream) < length + 1:
        raise DataError(
            f"{key}.length={length} is longer than the {split} stream ({len(stream)} tokens with separators); "
            f"lower {key}.length, or drop 'window' from {key}.modes"
        )
    view = np.lib.stride_tricks.sliding_window_view(stream, length + 1)[::stride]
    with NpyAppender(out_path, stream.dtype, (length + 1,)) as out:
        for start in range(0, len(view), WINDOW_CHUNK):
            out.append(view[start : start + WINDOW_CHUNK])
    return len(view)


def label_names(tokens_dir: Path) -> list[str] | None:
    """Sorted label names over every split, or None when documents are unlabelled."""
    if "label" not in schema_of(tokens_dir, TOKEN_SHARDS).names:
        return None
    names: set[str] = set()
    for batch in iter_batches(tokens_dir, ["label"], required=TOKENS_REQUIRED, kind=TOKEN_SHARDS):
        names.update(x for x in pc.unique(batch.column("label")).to_pylist() if x is not None)
    return sorted(names)


def build(level: str, cfg: WindowsParams, tokens_dir: Path, vocab: Vocab, out_dir: Path) -> dict[str, Any]:
    """Write every split's datasets under ``out_dir`` atomically; return meta.json's content."""
    key = f"windows.{level}"
    dtype = id_dtype(len(vocab))
    encode = _Encoder(vocab, dtype)
    end_ids = np.array([vocab.id(t) for t in cfg.sentence_end if vocab.id(t) != UNK], dtype)
    labels = label_names(tokens_dir)
    label_ids = pa.array(labels or [], pa.string())
    columns = ["doc_id", "split", "tokens"] + (["label"] if labels is not None else [])
    meta: dict[str, Any] = {
        "level": level,
        "vocab_size": len(vocab),
        "vocab_sha256": vocab.sha256,
        "dtype": dtype.name,
        "specials": {"pad": PAD, "unk": UNK, "eos": EOS},
        "labels": labels,
        "params": cfg.model_dump(mode="json"),
        "splits": {},
        "files": {},
    }
    total = parquet_rows(shard_files(tokens_dir, TOKEN_SHARDS))
    with atomic_dir(out_dir) as tmp:
        writers: dict[str, _SplitWriter] = {}
        try:
            batches = iter_batches(tokens_dir, columns, required=TOKENS_REQUIRED, kind=TOKEN_SHARDS, batch_rows=8192)
            with Progress(f"windows {level}", total, unit="documents", logger=logger) as progress:
                for batch in batches:
                    splits = batch.column("split")
                    for split in pc.unique(splits).to_pylist():
                        part = batch.filter(pc.equal(splits, split))
                        tokens = part.column("tokens")
                        if split not in writers:
                            writers[split] = _SplitWriter(tmp / split, cfg, dtype, end_ids, labels is not None)
                        lab = None
                        if labels is not None:
                            lab = pc.index_in(part.column("label"), value_set=label_ids)
                            lab = pc.fill_null(lab, -1).to_numpy(zero_copy_only=False).astype(np.int32)
                        writers[split].add(
                            encode(pc.list_flatten(tokens)),
                            pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64),
                            part.column("doc_id").to_numpy(zero_copy_only=False),
                            lab,
                        )
                    progress.update(batch.num_rows)
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        for w in writers.values():
            w.close()
        for split in SPLITS:
            if split not in writers:
                raise DataError(f"{tokens_dir}: no {split} documents; every split needs at least one")
        for split, w in sorted(writers.items()):
            info: dict[str, Any] = {"docs": w.docs}
            folder = tmp / split
            if "stream" in w.files:
                info["stream_tokens"] = int(np.load(folder / "stream.npy", mmap_mode="r").shape[0])
            if "window" in cfg.modes:
                info["windows"] = write_windows(
                    folder / "stream.npy", folder / "windows.npy", cfg.length, cfg.effective_stride, split, key
                )
            if "stream" not in cfg.modes and "stream" in w.files:
                (folder / "stream.npy").unlink()  # only built to cut windows from
            if "padded" in w.files:
                info["padded_rows"] = w.files["padded"].rows
                info["truncated_rows"] = w.truncated
            meta["splits"][split] = info
        for f in sorted(tmp.rglob("*.npy")):
            meta["files"][f.relative_to(tmp).as_posix()] = sha256_file(f)
        write_json(tmp / "meta.json", meta)
    return meta


def stats(meta: dict[str, Any]) -> dict[str, Any]:
    """The metrics file: sizes per split."""
    return {"vocab_size": meta["vocab_size"], "splits": meta["splits"]}


def spec(level: str) -> stage.StageSpec:
    return stage.StageSpec(
        params=(f"windows.{level}",),
        deps=(
            *code_deps("pipeline.windows"),
            str(paths.tokens(level)),
            str(paths.vocab(level)),
        ),
        outs=(str(paths.windows(level)), str(paths.windows_metrics(level))),
    )


def run(level: str, params_file: str) -> None:
    cfg = load_params(spec(level).params, params_file)[f"windows.{level}"]
    meta = build(level, cfg, paths.tokens(level), Vocab.load(paths.vocab(level)), paths.windows(level))
    write_json(paths.windows_metrics(level), stats(meta))


def main(argv: Sequence[str] | None = None) -> int:
    args = stage.parser(__doc__, level=True).parse_args(argv)
    return stage.run(lambda: run(args.level, args.params))


if __name__ == "__main__":
    raise SystemExit(main())
