"""Stage ``corpus``: run the chosen source and write the document table.

    python -m pipeline.corpus            # reads corpus.source and corpus.<source>

Writes ``data/corpus/docs/`` (Parquet shards, schema in ``pipeline.docs``),
``data/corpus/oracle.json`` (the true entropy per split when the source knows
it, as the grammar does) and ``data/metrics/corpus.json``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import docs, paths, stage
from pipeline.codedeps import code_deps
from pipeline.errors import DataError
from pipeline.io import atomic_dir, write_json
from pipeline.params import SPLITS, load_params, read_params
from pipeline.shards import ShardWriter
from pipeline.sources import reader

DOCS_PER_SHARD = 50_000


def spec(source: str) -> stage.StageSpec:
    return stage.StageSpec(
        params=("corpus.source", f"corpus.{source}"),
        deps=(*code_deps("pipeline.corpus", lazy=("pipeline.sources",)),),
        # Statistics are plain outputs, not DVC metrics: `dvc metrics show` stays the models' table.
        outs=(str(paths.DOCS), str(paths.ORACLE), str(paths.CORPUS_METRICS)),
    )


def write_documents(batches: Iterable[pa.Table], folder: Path, describe: str) -> dict[str, dict[str, Any]]:
    """Number the rows, write the shards atomically, and return per-split sums."""
    stats: dict[str, dict[str, Any]] = {}
    next_id = 0
    # The first batch is read before any folder is made: a source that rejects its input
    # (most check the whole file, or its head, first) then fails without creating even the
    # empty parent folder that atomic_dir would leave behind.
    batches = iter(batches)
    first = next(batches, None)
    with atomic_dir(folder) as tmp:
        writer: ShardWriter | None = None
        for table in itertools.chain([] if first is None else [first], batches):
            if table.num_rows == 0:
                continue
            table = table.add_column(
                0, "doc_id", pa.array(np.arange(next_id, next_id + table.num_rows, dtype=np.int64))
            )
            next_id += table.num_rows
            if writer is None:
                writer = ShardWriter(tmp, docs.schema_for(table), DOCS_PER_SHARD)
            writer.write(table)
            accumulate(stats, table)
            if holdout_by := (table.schema.metadata or {}).get(b"holdout_by"):  # a source's note on its splits
                for split in pc.unique(table["split"]).to_pylist():
                    stats[split]["holdout_by"] = holdout_by.decode()
        if writer is not None:
            writer.close()
        check_splits(stats, describe)  # before the folder is published: no half-usable table is left behind
    return stats


# The fix for a missing split, where a source has a more precise one than the general advice.
MISSING_SPLIT_FIX = {
    "source 'text'": (
        "give those splits their own files (rnnlab recipe --valid/--test, or corpus.text.valid/test) "
        "or raise corpus.text.holdout above 0 (e.g. 0.05): a corpus with too few documents "
        "is then held out by characters"
    ),
}


def check_splits(stats: dict[str, dict[str, Any]], describe: str) -> None:
    """Fail unless every split has documents, naming the source, what it read and the fix."""
    if not stats:
        raise DataError(f"corpus: {describe} produced no documents; check its path and settings in params.yaml")
    missing = [s for s in SPLITS if s not in stats]
    if missing:
        total = sum(s["docs"] for s in stats.values())
        read = ", ".join(f"{split} {s['docs']}" for split, s in sorted(stats.items()))
        fix = MISSING_SPLIT_FIX.get(describe, "give those splits their own files or a holdout fraction in params.yaml")
        raise DataError(
            f"corpus: {describe} produced no documents for split(s) {', '.join(missing)} "
            f"(read {total} document{'s' if total != 1 else ''}: {read}); {fix}"
        )


def split_metrics(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Documents and characters per split, as the metrics files record them."""
    return {k: {"docs": v["docs"], "chars": v["chars"]} for k, v in sorted(stats.items())}


def write_metrics(stats: dict[str, dict[str, Any]], source: str, root: Path = Path(".")) -> None:
    """The corpus stage's oracle.json and metrics under ``root``."""
    write_json(root / paths.ORACLE, oracle(stats, source))
    metrics: dict[str, Any] = {"source": source, "splits": split_metrics(stats)}
    # How the held-out splits were made, when a source says ("characters": the text source's tail).
    if by := sorted({s["holdout_by"] for s in stats.values() if "holdout_by" in s}):
        metrics["holdout_by"] = by[0] if len(by) == 1 else by
    write_json(root / paths.CORPUS_METRICS, metrics)


def accumulate(stats: dict[str, dict[str, Any]], table: pa.Table) -> None:
    """Add one batch of documents to the per-split sums (docs, chars, and the oracle's when present)."""
    has_oracle = "oracle_logprob" in table.column_names
    for split in pc.unique(table["split"]).to_pylist():
        part = table.filter(pc.equal(table["split"], split))
        s = stats.setdefault(split, {"docs": 0, "chars": 0})
        s["docs"] += part.num_rows
        s["chars"] += pc.sum(pc.utf8_length(part["text"])).as_py() or 0
        if has_oracle:
            s["oracle_nats"] = s.get("oracle_nats", 0.0) - pc.sum(part["oracle_logprob"]).as_py()
            s["oracle_words"] = s.get("oracle_words", 0) + pc.sum(part["oracle_tokens"]).as_py()


def oracle(stats: dict[str, dict[str, Any]], source: str) -> dict[str, Any]:
    """Entropy per predicted token, per level and split.

    Available when the source wrote ``oracle_logprob`` and ``oracle_tokens``
    for every document. Each document is followed by <eos>, which is also predicted (with
    probability 1 under the grammar, since "." always ends a document), so a
    split of D documents has words + D word-level targets and chars + D
    character-level targets.
    """
    if not all("oracle_nats" in s for s in stats.values()):
        return {"available": False, "source": source}
    out: dict[str, Any] = {"available": True, "source": source}
    for level, count in (("word", "oracle_words"), ("char", "chars")):
        out[level] = {}
        for split, s in stats.items():
            targets = s[count] + s["docs"]
            nats = s["oracle_nats"] / targets
            out[level][split] = {
                "targets": targets,
                "total_nats": s["oracle_nats"],
                "nats_per_token": nats,
                "bits_per_token": nats / math.log(2),
                "perplexity": math.exp(nats),
            }
    return out


def run(params_file: str) -> None:
    source = read_params(params_file).corpus.source
    cfg = load_params(spec(source).params, params_file)
    stats = write_documents(reader(source)(cfg[f"corpus.{source}"]), paths.DOCS, f"source {source!r}")
    write_metrics(stats, source)


def main(argv: list[str] | None = None) -> int:
    args = stage.parser(__doc__).parse_args(argv)
    return stage.run(lambda: run(args.params))


if __name__ == "__main__":
    raise SystemExit(main())
