"""Labelled text datasets for the classifiers, built from the spine's own stage functions under their own paths.

    stats = build_text_dataset(imdb.read(cfg.source), paths.IMDB_DATA, "word",
                               cfg.tokenize, cfg.vocab, cfg.windows, "IMDB")
    class_windows(paths.IMDB_DATA.tokens, vocab, cfg.windows, paths.IMDB_DATA.lm)

The classifiers' data (tasks/dvc.yaml) goes through exactly the steps of the root
pipeline (``corpus.write_documents`` → ``tokenize.tokenize_table`` →
``vocab.count_tokens``/``build_vocab`` → ``windows.build``), called with other
paths and params, so nothing here re-implements them and nothing collides with
``data/corpus``, ``data/tokens``, ``data/vocab`` or ``data/windows``::

    data/imdb/docs/        document table (Parquet)      data/imdb/vocab.json   the reviews' vocabulary
    data/imdb/tokens/      word token shards             data/imdb/windows/     padded rows + labels.npy
    data/imdb/metrics.json sizes, labels per split, OOV  data/imdb/lm/<label>/  one class's windows (LMs)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import windows
from pipeline.corpus import split_metrics, write_documents
from pipeline.errors import DataError
from pipeline.io import atomic_dir
from pipeline.params import SPLITS, VocabLevelParams, WindowsParams, WordTokenizeParams
from pipeline.paths import TextDataset
from pipeline.shards import ShardWriter, iter_batches, schema_of
from pipeline.tokenize import tokenize_table, tokenizer_for
from pipeline.vocab import TOKEN_SHARDS, TOKENS_REQUIRED, Vocab, build_vocab, count_tokens, oov_metrics


def build_text_dataset(
    batches: Iterable[pa.Table],
    where: TextDataset,
    level: str,
    tokenize: WordTokenizeParams,
    vocab: VocabLevelParams,
    windows_cfg: WindowsParams,
    describe: str,
) -> dict[str, Any]:
    """Documents → tokens → vocabulary → windows under ``where``; return the metrics."""
    stats = write_documents(batches, where.docs, describe)
    tokenize_table(where.docs, where.tokens, tokenizer_for(level, tokenize), tokenize.shard_rows)
    counts, docs = count_tokens(where.tokens)
    v = build_vocab(level, counts["train"], vocab.max_size, vocab.min_count, docs["train"])
    v.save(where.vocab)
    meta = windows.build(level, windows_cfg, where.tokens, v, where.windows)
    return {
        "splits": split_metrics(stats),
        "labels": label_counts(where.tokens),
        "vocab": oov_metrics(v, counts, docs),
        "windows": windows.stats(meta),
    }


def label_counts(tokens_dir: Path) -> dict[str, dict[str, int]] | None:
    """Documents per split and label (None when the documents have no labels)."""
    if "label" not in schema_of(tokens_dir, TOKEN_SHARDS).names:
        return None
    out: dict[str, dict[str, int]] = {}
    for batch in iter_batches(tokens_dir, ["split", "label"], required=TOKENS_REQUIRED, kind=TOKEN_SHARDS):
        table = pa.Table.from_batches([batch]).group_by(["split", "label"]).aggregate([("split", "count")])
        for split, label, n in zip(*(table[c].to_pylist() for c in ("split", "label", "split_count"))):
            per = out.setdefault(split, {})
            key = label if label is not None else "(none)"
            per[key] = per.get(key, 0) + n
    return {s: dict(sorted(v.items())) for s, v in sorted(out.items())}


def check_classes(counts: dict[str, dict[str, int]] | None, where: Path, splits: Iterable[str] = SPLITS) -> list[str]:
    """The class names, after checking every class has documents in every split; else a DataError naming it."""
    if not counts:
        raise DataError(f"{where}: the documents have no labels; a classifier needs a labelled source such as IMDB")
    labels = sorted({label for per in counts.values() for label in per if label != "(none)"})
    if len(labels) < 2:
        raise DataError(f"{where}: only the class {labels} is present; a classifier needs at least two classes")
    for split in splits:
        empty = [label for label in labels if counts.get(split, {}).get(label, 0) == 0]
        if empty:
            raise DataError(
                f"{where}: class {', '.join(map(repr, empty))} has no {split} documents; every class needs "
                "documents in every split (check the source's folders and its holdout)"
            )
    return labels


def class_windows(
    tokens_dir: Path, vocab: Vocab, cfg: WindowsParams, out_dir: Path, level: str = "word"
) -> dict[str, Any]:
    """One windows dataset per label under ``out_dir/<label>/``, encoded with the shared ``vocab``.

    Each class's token shards are filtered from ``tokens_dir`` into a temporary folder and
    cut by ``windows.build``, so a class's language model trains with the shared LM trainer
    on its own windows, and every class model scores the same test ids.
    """
    labels = check_classes(label_counts(tokens_dir), tokens_dir)
    schema = schema_of(tokens_dir, TOKEN_SHARDS)
    out: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for label in labels:
            shards = tmp / f".tokens-{label}"
            with atomic_dir(shards) as part, ShardWriter(part, schema, 50_000) as writer:
                for batch in iter_batches(tokens_dir, schema.names, required=TOKENS_REQUIRED, kind=TOKEN_SHARDS):
                    writer.write(batch.filter(pc.equal(batch.column("label"), label)))
            meta = windows.build(level, cfg, shards, vocab, tmp / label)
            out[label] = windows.stats(meta)
            for f in sorted(shards.iterdir()):
                f.unlink()
            shards.rmdir()
    return out
