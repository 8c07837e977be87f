"""Stage ``vocab``: count tokens, keep the top ones, report out-of-vocabulary rates.

    python -m pipeline.vocab --level word

The vocabulary is built from the train split: ``<pad>`` = 0, ``<unk>`` = 1,
``<eos>`` = 2, then tokens with at least ``min_count`` occurrences, by count
descending, then by token (code point order) ascending, up to ``max_size``
entries in all. Writes ``data/vocab/<level>.json`` (tokens and counts, which
models load and never rebuild) and ``data/metrics/vocab-<level>.json`` (size
and OOV rate per split).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import paths, stage
from pipeline.codedeps import code_deps
from pipeline.errors import DataError
from pipeline.io import write_json
from pipeline.params import SPECIALS, VocabLevelParams, load_params
from pipeline.progress import Progress, parquet_rows
from pipeline.shards import iter_batches, shard_files

logger = logging.getLogger(f"rnnlab.{__name__}")
PAD, UNK, EOS = 0, 1, 2
NUM_SPECIALS = len(SPECIALS)  # ids below this are the specials above; the first real token has this id
TOKEN_SHARDS = "token shard folder"  # how messages name a tokenize stage's output
TOKENS_REQUIRED = {
    "doc_id": (pa.int64(),),
    "split": (pa.string(), pa.large_string()),
    "tokens": (pa.list_(pa.string()), pa.large_list(pa.string())),
}


@dataclass(frozen=True)
class Vocab:
    """An id ↔ token mapping with the training counts. Specials occupy ids 0-2."""

    level: str
    tokens: tuple[str, ...]
    counts: tuple[int, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.tokens[: len(SPECIALS)]) != SPECIALS:
            raise DataError(f"vocabulary ({self.level}) must start with {SPECIALS}, got {self.tokens[:NUM_SPECIALS]}")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        return self._index.get(token, UNK)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self._index.get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "specials": list(SPECIALS),
            "tokens": list(self.tokens),
            "counts": list(self.counts),
        }

    @property
    def sha256(self) -> str:
        """Identity of the id mapping (tokens in order; counts excluded)."""
        return hashlib.sha256(json.dumps(self.tokens, ensure_ascii=False).encode()).hexdigest()

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Vocab:
        return cls(level=obj["level"], tokens=tuple(obj["tokens"]), counts=tuple(obj["counts"]))

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: vocabulary not found; run `dvc repro` (stage vocab) first") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not a vocabulary file ({e})") from None
        return cls.from_json(obj)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())


# (split, token, count): the token counts of one batch, one piece or a whole token folder.
COUNTS_SCHEMA = pa.schema([("split", pa.string()), ("token", pa.string()), ("count", pa.int64())])
MERGE_ROWS = 2_000_000  # sum the pending partial counts once they hold this many rows


def count_table(splits: pa.Array, tokens: pa.ListArray) -> pa.Table:
    """(split, token, count) of one batch of token lists."""
    parts = []
    for split in pc.unique(splits).to_pylist():
        flat = pc.list_flatten(tokens.filter(pc.equal(splits, split)))
        vc = pc.value_counts(flat)
        parts.append(
            pa.table(
                {
                    "split": pa.array([split] * len(vc), pa.string()),
                    "token": vc.field("values"),
                    "count": vc.field("counts"),
                }
            )
        )
    return pa.concat_tables(parts) if parts else COUNTS_SCHEMA.empty_table()


def merge_counts(tables: Iterable[pa.Table]) -> pa.Table:
    """Sum (split, token, count) tables, sorted by split then token.

    A sum per key: associative and commutative, so merging per batch or per piece, in any
    grouping or order, gives the same table; memory tracks the distinct tokens, not the corpus.
    """
    pending: list[pa.Table] = []
    rows = merged = 0  # rows pending, rows of the last partial sum
    for table in tables:
        pending.append(table.cast(COUNTS_SCHEMA))
        rows += table.num_rows
        # Sum once the pending rows double the last sum (or pass MERGE_ROWS): the work stays
        # proportional to the input, however many pieces a large corpus has.
        if rows > max(MERGE_ROWS, 2 * merged):
            pending = [_sum(pending)]
            rows = merged = pending[0].num_rows
    return _sum(pending).sort_by([("split", "ascending"), ("token", "ascending")])


def _sum(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables) if tables else COUNTS_SCHEMA.empty_table()
    out = table.group_by(["split", "token"]).aggregate([("count", "sum")]).rename_columns(["split", "token", "count"])
    return out.select(COUNTS_SCHEMA.names)


def split_counts(counts: pa.Table, splits: Iterable[str]) -> dict[str, pa.Table]:
    """Per split, its (token, count) table from merged counts; a split without tokens gets an empty one."""
    return {s: counts.filter(pc.equal(counts["split"], s)).select(["token", "count"]) for s in splits}


def count_tokens(tokens_dir: Path, progress: str = "vocab") -> tuple[dict[str, pa.Table], dict[str, int]]:
    """Per split: (token, count) tables, and the number of documents. ``progress`` names the work."""
    parts: list[pa.Table] = []
    docs: dict[str, int] = {}
    columns = ["split", "tokens"]
    total = parquet_rows(shard_files(tokens_dir, TOKEN_SHARDS))
    batches = iter_batches(tokens_dir, columns, required=TOKENS_REQUIRED, kind=TOKEN_SHARDS, batch_rows=8192)
    with Progress(progress, total, unit="documents", logger=logger) as shown:
        for batch in batches:
            splits = batch.column("split")
            for split in pc.unique(splits).to_pylist():
                docs[split] = docs.get(split, 0) + (pc.sum(pc.equal(splits, split).cast(pa.int64())).as_py() or 0)
            parts.append(count_table(splits, batch.column("tokens")))
            if sum(t.num_rows for t in parts) > MERGE_ROWS:  # bounded memory for a large folder
                parts = [merge_counts(parts)]
            shown.update(batch.num_rows)
    if "train" not in docs:
        raise DataError(f"{tokens_dir}: no train documents; the vocabulary is built from the train split")
    return split_counts(merge_counts(parts), docs), docs


def build_vocab(level: str, train_counts: pa.Table, max_size: int, min_count: int, train_docs: int) -> Vocab:
    """Top tokens by (count desc, token asc); specials first."""
    counts = train_counts.filter(pc.invert(pc.is_in(train_counts["token"], pa.array(SPECIALS))))
    counts = counts.filter(pc.greater_equal(counts["count"], min_count))
    order = pc.sort_indices(counts, sort_keys=[("count", "descending"), ("token", "ascending")])
    top = counts.take(order).slice(0, max_size - len(SPECIALS))
    total = pc.sum(train_counts["count"]).as_py() or 0
    unk = total - (pc.sum(top["count"]).as_py() or 0)
    tokens = (*SPECIALS, *top["token"].to_pylist())
    assert len(set(tokens)) == len(tokens), "vocabulary tokens must be unique"
    return Vocab(level, tokens, (0, unk, train_docs, *top["count"].to_pylist()))


def check_not_empty(vocab: Vocab, train_counts: pa.Table, train_docs: int, min_count: int) -> None:
    """Fail unless the vocabulary holds a token besides the specials, naming the key that emptied it."""
    if len(vocab) > NUM_SPECIALS:
        return
    level = vocab.level
    # Specials in the text ("<unk>" in a pre-tokenized corpus) are not tokens of the vocabulary.
    train_counts = train_counts.filter(pc.invert(pc.is_in(train_counts["token"], pa.array(SPECIALS))))
    tokens = pc.sum(train_counts["count"]).as_py() or 0
    seen = f"{train_docs} train document{'s' if train_docs != 1 else ''}"
    if tokens == 0:
        key = "tokenize.word.pattern" if level == "word" else f"tokenize.{level}"
        fix = (
            "set tokenize.word.pattern: unicode, or a pattern that matches this text"
            if level == "word"
            else "check the corpus: its train split has no characters"
        )
        raise DataError(
            f"vocab ({level}): {key} found no token besides {', '.join(SPECIALS)} in {seen}, "
            f"so the vocabulary would be empty; {fix}"
        )
    top = pc.max(train_counts["count"]).as_py()
    raise DataError(
        f"vocab ({level}): vocab.{level}.min_count is {min_count}, above every count in {seen} "
        f"({tokens} tokens of {train_counts.num_rows} types, the most frequent seen {top} times), "
        f"so the vocabulary would be empty; lower vocab.{level}.min_count to {top} or less"
    )


def oov_metrics(vocab: Vocab, counts: dict[str, pa.Table], docs: dict[str, int]) -> dict[str, Any]:
    known = pa.array(vocab.tokens[len(SPECIALS) :])
    out: dict[str, Any] = {"size": len(vocab), "splits": {}}
    for split, table in sorted(counts.items()):
        total = pc.sum(table["count"]).as_py() or 0
        hit = pc.sum(table.filter(pc.is_in(table["token"], known))["count"]).as_py() or 0
        out["splits"][split] = {
            "docs": docs[split],
            "tokens": total,
            "types": table.num_rows,
            "oov_tokens": total - hit,
            "oov_rate": (total - hit) / total if total else 0.0,
        }
    return out


def spec(level: str) -> stage.StageSpec:
    return stage.StageSpec(
        params=(f"vocab.{level}",),
        deps=(
            *code_deps("pipeline.vocab"),
            str(paths.tokens(level)),
        ),
        outs=(str(paths.vocab(level)), str(paths.vocab_metrics(level))),
    )


def write_vocab(
    level: str, counts: dict[str, pa.Table], docs: dict[str, int], cfg: VocabLevelParams, root: Path = Path(".")
) -> Vocab:
    """Build ``level``'s vocabulary from per-split counts; write it and its OOV metrics under ``root``."""
    vocab = build_vocab(level, counts["train"], cfg.max_size, cfg.min_count, docs["train"])
    check_not_empty(vocab, counts["train"], docs["train"], cfg.min_count)  # before anything is written
    vocab.save(root / paths.vocab(level))
    write_json(root / paths.vocab_metrics(level), oov_metrics(vocab, counts, docs))
    return vocab


def run(level: str, params_file: str) -> None:
    cfg = load_params(spec(level).params, params_file)[f"vocab.{level}"]
    write_vocab(level, *count_tokens(paths.tokens(level), f"vocab {level}"), cfg)


def main(argv: Sequence[str] | None = None) -> int:
    args = stage.parser(__doc__, level=True).parse_args(argv)
    return stage.run(lambda: run(args.level, args.params))


if __name__ == "__main__":
    raise SystemExit(main())
