"""Sharded preprocessing: corpus → tokens → vocabulary, one independent task per piece of the input.

    python -m pipeline.sharded          # the pieces one after another, in this process (the reference)
    python -m flows.preprocess          # the same pieces fanned out over Dask workers (docs/scaling.md)

Both write what the ``corpus``, ``tokenize@word``, ``tokenize@char``, ``vocab@word`` and
``vocab@char`` stages write, at the same paths and in the same formats; ``vocab.json``,
the metrics, and every row (doc ids, splits, texts, tokens) are identical to those
stages' output, so ``windows`` and training downstream are unchanged. Only the cut of
the Parquet folders into files differs: one set of files per piece.

A **piece** is input that can be read alone:

* a multistream Wikipedia dump (``corpus.wikipedia.index_url``): consecutive bz2 streams
  (~100 pages each) grouped to about ``preprocess.range_mb`` compressed MB;
* a folder of text files (``corpus.text``): one file.

The steps, with their outputs under ``preprocess.work_dir`` (each piece's folder is
written atomically and carries a ``manifest.json``: its key and the sha256 of each file)::

    plan                     the pieces, in corpus order
    extract(piece)           extract/<i>/part.parquet      documents without ids        in parallel
    offsets                  piece i's first doc_id = rows of pieces < i (a prefix sum)
    tokenize(piece, offset)  tokenize/<i>/docs/, tokens/{word,char}/ Parquet shards,    in parallel
                             counts-{word,char}.parquet (split, token, count)
    publish                  hard links into data/corpus/docs and data/tokens/<level>; the counts
                             merged (a sum: associative, so any grouping gives the same table)
                             into data/vocab/<level>.json, ranked as pipeline.vocab ranks them

A piece whose folder exists, whose manifest key matches (the piece, the params it reads,
the code) and whose files still have their recorded sha256 is reused, not recomputed: a
killed or failed run redoes only what it had not finished.

This module imports neither Prefect nor Dask: flows/preprocess.py does the fan-out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import codedeps, corpus, docs, paths, stage
from pipeline.download import fetch, fetch_source
from pipeline.errors import ParamsError
from pipeline.io import atomic_dir, read_json, sha256_file, write_json
from pipeline.params import (
    LEVELS,
    Params,
    PreprocessParams,
    TextParams,
    TokenizeParams,
    VocabParams,
    WikipediaParams,
    read_params,
)
from pipeline.progress import Progress
from pipeline.shards import COMPRESSION, ShardWriter
from pipeline.sources import text as text_source
from pipeline.sources import wikipedia as wiki
from pipeline.tokenize import BATCH_ROWS, TOKENS_SCHEMA, tokenizer_for
from pipeline.vocab import MERGE_ROWS, count_table, merge_counts, split_counts, write_vocab

logger = logging.getLogger(f"rnnlab.{__name__}")
PIECE_WIDTH = 6  # part-000123-…: names sort in corpus order up to a million pieces
DOC_BATCH = 1000  # documents per staged row group


@dataclass(frozen=True)
class Piece:
    """One independently readable part of the input, numbered in corpus order."""

    index: int
    kind: str  # "wikipedia" | "text"
    path: str  # absolute: workers of a remote cluster must see the same file
    name: str = ""  # text: the file as the corpus stage names it (its documents' source_id)
    split: str = "train"  # text: the split of its documents ("train": holdouts drawn later)
    streams: tuple[int, ...] = ()  # wikipedia: byte offsets of its bz2 streams, then the end

    @property
    def label(self) -> str:
        """Its folder name under the work dir, and its shards' prefix."""
        return f"{self.index:0{PIECE_WIDTH}d}"

    def describe(self) -> str:
        if self.kind == "wikipedia":
            return f"{self.path} bytes {self.streams[0]}-{self.streams[-1]} ({len(self.streams) - 1} streams)"
        return self.name


@dataclass(frozen=True)
class Job:
    """What every piece needs to know: the params it reads and where to write (absolute paths)."""

    source: str
    source_params: WikipediaParams | TextParams
    tokenize: TokenizeParams
    vocab: VocabParams
    root: Path  # the repository: data/… is written under it
    work: Path  # preprocess.work_dir
    drop_prefixes: frozenset[str] = wiki.DROP_LINK_PREFIXES
    code: str = ""  # sha256 over code_files()
    carve: tuple[str, ...] = ()  # text: the splits held out of train ("valid", "test")
    inputs: dict[str, Any] = field(default_factory=dict)  # identity of the input files (size, mtime)


# --- plan ------------------------------------------------------------------------------------


def code_files() -> tuple[str, ...]:
    """The code whose behaviour shapes the outputs: every project file this module loads (less
    messages, paths and logging), as the corpus, tokenize and vocab stages list theirs."""
    return codedeps.code_deps("pipeline.sharded")


def _code_hash() -> str:
    return hashlib.sha256("".join(sha256_file(codedeps.ROOT / f) for f in code_files()).encode()).hexdigest()


def _identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def check(params: Params) -> None:
    """Fail, naming the key and the fix, unless the corpus params describe input that splits into pieces."""
    source = params.corpus.source
    if source == "wikipedia":
        p = params.corpus.wikipedia
        if p.index_url is None:
            raise ParamsError(
                "corpus.wikipedia.index_url is null: a plain dump is one bz2 stream and cannot be split; point it at "
                "the dump's …-multistream-index.txt.bz2 (and url at the …-multistream.xml.bz2), or run `dvc repro`"
            )
        if p.max_articles is not None:
            raise ParamsError(
                f"corpus.wikipedia.max_articles is {p.max_articles}: the sharded flow reads every piece; set it to "
                "null, or run `dvc repro` for a cut-down corpus"
            )
    elif source != "text":
        raise ParamsError(
            f"corpus.source is {source!r}: the sharded flow splits multistream Wikipedia dumps "
            "(corpus.wikipedia.index_url) and folders of text files (corpus.text); run `dvc repro` for this source"
        )


def make_job(params_file: str | Path = "params.yaml") -> tuple[Job, PreprocessParams]:
    """Read the params, fetch a dump and its index when needed, and say what to build.

    Relative paths are read from the current directory, the repository root, as the stages
    read them; the Job holds them absolute, for workers in other processes or machines.
    """
    params = read_params(params_file)
    check(params)
    root = Path.cwd().resolve()
    prep = params.preprocess
    work = (root / prep.work_dir).resolve()
    common = {"tokenize": params.tokenize, "vocab": params.vocab, "root": root, "code": _code_hash()}
    if params.corpus.source == "text":
        p = params.corpus.text
        carve = tuple(s for s in ("valid", "test") if getattr(p, s) is None)
        if text_source.holdout_mode(p, carve)[0] == "characters":
            raise ParamsError(
                f"{p.train}: too few documents to hold out {', '.join(carve)} by documents, and sharded "
                "preprocessing splits by documents only; run the corpus stage instead (`dvc repro`), which holds "
                "out the tail of the text, or give corpus.text.valid and test files"
            )
        return Job("text", p, work=work / "text", carve=carve, **common), prep
    w = params.corpus.wikipedia
    assert w.index_url is not None  # check()
    dump = fetch_source(w)
    index = fetch(w.index_url, w.cache_dir, retries=w.retries, timeout=w.timeout)
    drop = wiki.drop_prefixes_from(wiki.read_siteinfo(dump))
    inputs = {"dump": str(Path(dump).resolve()), "index": str(Path(index).resolve()), **_identity(Path(dump))}
    return Job("wikipedia", w, work=work / "wikipedia", drop_prefixes=drop, inputs=inputs, **common), prep


def plan(job: Job, range_mb: float) -> list[Piece]:
    """The pieces of the input, in corpus order."""
    if job.source == "wikipedia":
        dump, index = job.inputs["dump"], job.inputs["index"]
        return [
            Piece(i, "wikipedia", dump, streams=tuple(s))
            for i, s in enumerate(group_streams(wiki.stream_ranges(index, dump), int(range_mb * 1e6)))
        ]
    p = job.source_params
    assert isinstance(p, TextParams)
    pieces: list[Piece] = []
    for split in ("train", "valid", "test"):
        where = getattr(p, split)
        if where is None:
            continue
        for file in text_source.files_of(Path(where), p.glob):  # as the corpus stage lists (and names) them
            pieces.append(Piece(len(pieces), "text", str((job.root / file).resolve()), name=str(file), split=split))
    return pieces


def group_streams(ranges: Iterable[tuple[int, int]], target: int) -> Iterator[list[int]]:
    """Consecutive stream ranges grouped into at most ``target`` bytes (a larger stream alone):
    each group as its streams' starts followed by its end, ``[s0, s1, …, end]``. A stream is never cut."""
    group: list[int] = []
    for start, end in ranges:
        if group and end - group[0] > target:
            yield [*group, start]
            group = []
        group.append(start)
        last = end
    if group:
        yield [*group, last]


# --- manifests -------------------------------------------------------------------------------


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _params_json(model: Any) -> Any:
    return model.model_dump(mode="json")


def reuse(folder: Path, key: str) -> dict[str, Any] | None:
    """A piece folder's manifest if it was written for ``key`` and its files are intact, else None."""
    try:
        manifest = read_json(folder / "manifest.json")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("key") != key:
        return None
    for rel, digest in manifest["files"].items():
        path = folder / rel
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return manifest


def _finish(tmp: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record every file's sha256 in the manifest, written last inside the atomic folder."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest["files"] = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files}
    write_json(tmp / "manifest.json", manifest)
    return manifest


def _clear_stale(folder: Path) -> None:
    """Remove temporary folders a killed task left beside ``folder`` (atomic_dir's ``.name.*.tmp``)."""
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


# --- extract: documents of one piece ---------------------------------------------------------


def extract_key(piece: Piece, job: Job) -> str:
    inputs = job.inputs if piece.kind == "wikipedia" else _identity(Path(piece.path))
    return _key("extract", asdict(piece), inputs, _params_json(job.source_params), sorted(job.drop_prefixes), job.code)


def _wikipedia_tables(piece: Piece, job: Job, stats: wiki.Stats) -> Iterator[pa.Table]:
    p = job.source_params
    assert isinstance(p, WikipediaParams)
    batch: list[wiki.Article] = []
    for start, end in zip(piece.streams, piece.streams[1:]):  # one stream at a time: bounded memory
        chunk = wiki.pages_in_range(
            piece.path, start, end, namespaces=p.namespaces, min_chars=p.min_chars, drop_prefixes=job.drop_prefixes
        )
        stats.add(chunk.stats)
        batch.extend(chunk.articles)
        if len(batch) >= DOC_BATCH:
            yield wiki.articles_table(batch, p.holdout, p.seed)
            batch = []
    yield wiki.articles_table(batch, p.holdout, p.seed)  # last (maybe empty: it carries the schema)


def _text_tables(piece: Piece, job: Job) -> Iterator[pa.Table]:
    p = job.source_params
    assert isinstance(p, TextParams)
    path = Path(piece.path)
    if p.unit == "file":
        text = text_source.decode_utf8(path.read_bytes(), Path(piece.name), 0, p.errors)
        docs_ = [(piece.name, text)] if text.strip() else []
    else:
        docs_ = ((f"{piece.name}:{lineno}", line) for lineno, line in text_source.iter_lines(path, p.errors))
    ids: list[str] = []
    texts: list[str] = []
    for source_id, text in docs_:
        ids.append(source_id)
        texts.append(text)
        if len(texts) == DOC_BATCH:
            yield text_source.text_table([piece.split] * len(texts), ids, texts)
            ids, texts = [], []
    yield text_source.text_table([piece.split] * len(texts), ids, texts)


def extract(piece: Piece, job: Job) -> dict[str, Any]:
    """Parse one piece into ``extract/<i>/part.parquet`` (document rows without ids); its manifest.

    Returns the manifest with ``reused`` set when a finished, intact folder was kept.
    """
    folder = job.work / "extract" / piece.label
    key = extract_key(piece, job)
    if (kept := reuse(folder, key)) is not None:
        return {**kept, "reused": True}
    _clear_stale(folder)
    stats = wiki.Stats()
    rows = 0
    with atomic_dir(folder) as tmp:
        tables = _wikipedia_tables(piece, job, stats) if piece.kind == "wikipedia" else _text_tables(piece, job)
        writer: pq.ParquetWriter | None = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(tmp / "part.parquet", table.schema, compression=COMPRESSION)
                if table.num_rows or rows == 0:
                    writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        manifest = _finish(tmp, {"key": key, "piece": piece.describe(), "rows": rows, "pages": asdict(stats)})
    return {**manifest, "reused": False}


def offsets(manifests: Sequence[dict[str, Any]]) -> list[int]:
    """Each piece's first doc_id: the documents of the pieces before it (the corpus stage numbers 0, 1, …)."""
    rows = np.array([m["rows"] for m in manifests], dtype=np.int64)
    return (np.cumsum(rows) - rows).tolist()


# --- tokenize: doc ids, splits, tokens and counts of one piece --------------------------------


def tokenize_key(piece: Piece, offset: int, extracted: dict[str, Any], job: Job) -> str:
    p = job.source_params
    split_rule = {"carve": job.carve, "holdout": p.holdout, "seed": p.seed} if piece.kind == "text" else None
    return _key(
        "tokenize",
        piece.label,
        offset,
        extracted["files"]["part.parquet"],
        split_rule,
        _params_json(job.tokenize),
        job.code,
    )


def _documents(piece: Piece, offset: int, job: Job) -> Iterator[pa.Table]:
    """The staged rows in batches, with their doc ids (and, for text train files, their held-out splits)."""
    staged = pq.ParquetFile(job.work / "extract" / piece.label / "part.parquet")
    first = offset
    for batch in staged.iter_batches(batch_size=BATCH_ROWS):  # the tokenize stage's batch size
        table = pa.Table.from_batches([batch])
        ids = np.arange(first, first + table.num_rows, dtype=np.int64)
        first += table.num_rows
        if piece.kind == "text" and piece.split == "train" and job.carve:
            # As pipeline.sources.text.read: a hash of (seed, train document number); train files
            # come first, so that number is the doc id.
            p = job.source_params
            split = text_source.holdout_splits(p.seed, ids, p.holdout, job.carve)
            table = table.set_column(table.schema.get_field_index("split"), "split", pa.array(split, pa.string()))
        yield table.add_column(0, "doc_id", pa.array(ids))


def tokenize(piece: Piece, offset: int, extracted: dict[str, Any], job: Job) -> dict[str, Any]:
    """Number, split and tokenize one piece at both levels into ``tokenize/<i>/``; its manifest.

    ``docs/`` and ``tokens/<level>/`` hold Parquet shards named ``part-<i>-<k>.parquet``,
    ``counts-<level>.parquet`` the piece's token counts per split.
    """
    folder = job.work / "tokenize" / piece.label
    key = tokenize_key(piece, offset, extracted, job)
    if (kept := reuse(folder, key)) is not None:
        return {**kept, "reused": True}
    _clear_stale(folder)
    staged_schema = pq.read_schema(job.work / "extract" / piece.label / "part.parquet")
    doc_schema = docs.schema_for(staged_schema.empty_table())
    has_label = "label" in staged_schema.names
    token_schema = TOKENS_SCHEMA.append(pa.field("label", pa.string())) if has_label else TOKENS_SCHEMA
    tokenizers = {level: tokenizer_for(level, getattr(job.tokenize, level)) for level in LEVELS}
    stats: dict[str, dict[str, Any]] = {}
    counts: dict[str, list[pa.Table]] = {level: [] for level in LEVELS}
    rows = 0
    with atomic_dir(folder) as tmp, contextlib.ExitStack() as stack:
        for sub in ("docs", *(f"tokens/{level}" for level in LEVELS)):
            (tmp / sub).mkdir(parents=True)
        doc_writer = stack.enter_context(
            ShardWriter(tmp / "docs", doc_schema, corpus.DOCS_PER_SHARD, prefix=f"part-{piece.label}")
        )
        writers = {
            level: stack.enter_context(
                ShardWriter(
                    tmp / "tokens" / level,
                    token_schema,
                    getattr(job.tokenize, level).shard_rows,
                    prefix=f"part-{piece.label}",
                )
            )
            for level in LEVELS
        }
        for table in _documents(piece, offset, job):
            rows += table.num_rows
            doc_writer.write(table)
            corpus.accumulate(stats, table)  # per split: docs and chars, summed as the corpus stage sums them
            for level in LEVELS:
                tokens = tokenizers[level](table["text"].combine_chunks())
                writers[level].write(table.drop_columns(["text"]).append_column("tokens", tokens))
                counts[level].append(count_table(table["split"].combine_chunks(), tokens))
                if sum(t.num_rows for t in counts[level]) > MERGE_ROWS:  # bounded memory for a big file
                    counts[level] = [merge_counts(counts[level])]
        stack.close()  # the shards are whole before they are hashed
        for level in LEVELS:
            pq.write_table(merge_counts(counts[level]), tmp / f"counts-{level}.parquet", compression=COMPRESSION)
        manifest = _finish(
            tmp, {"key": key, "piece": piece.describe(), "offset": offset, "rows": rows, "splits": stats}
        )
    return {**manifest, "reused": False}


# --- publish: the stages' outputs ------------------------------------------------------------


def _link_into(folder: Path, sources: Iterable[Path]) -> None:
    """Hard-link (or copy, across filesystems) each file into ``folder``, atomically as a whole."""
    with atomic_dir(folder) as tmp:
        for src in sources:
            try:
                os.link(src, tmp / src.name)
            except OSError:
                shutil.copy2(src, tmp / src.name)


def corpus_stats(manifests: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per split sums over the pieces (what the corpus stage's write_documents returns)."""
    total: dict[str, dict[str, Any]] = {}
    for m in manifests:
        for split, s in m["splits"].items():
            t = total.setdefault(split, {"docs": 0, "chars": 0})
            t["docs"] += s["docs"]
            t["chars"] += s["chars"]
    return total


def publish(pieces: Sequence[Piece], manifests: Sequence[dict[str, Any]], job: Job) -> dict[str, Any]:
    """Write the corpus, tokenize and vocab stages' outputs from the tokenized pieces; return a summary."""
    describe = f"source {job.source!r}"
    stats = corpus_stats(manifests)
    corpus.check_splits(stats, describe)  # before anything is published, as the corpus stage does
    folders = [job.work / "tokenize" / p.label for p in pieces]
    root = job.root
    _link_into(root / paths.DOCS, [f for d in folders for f in sorted((d / "docs").glob("*.parquet"))])
    corpus.write_metrics(stats, job.source, root)
    docs_per_split = {s: v["docs"] for s, v in stats.items()}
    sizes = {}
    for level in LEVELS:
        _link_into(root / paths.tokens(level), [f for d in folders for f in sorted((d / "tokens" / level).glob("*"))])
        merged = merge_counts(pq.read_table(d / f"counts-{level}.parquet") for d in folders)
        # Every split with documents, as pipeline.vocab counts them (a split may have no tokens).
        by_split = split_counts(merged, sorted(stats))
        sizes[level] = len(write_vocab(level, by_split, docs_per_split, getattr(job.vocab, level), root))
    return {"pieces": len(pieces), "docs": {k: v["docs"] for k, v in sorted(stats.items())}, "vocab": sizes}


# --- the reference: every piece in this process ------------------------------------------------


def run_serial(job: Job, range_mb: float) -> dict[str, Any]:
    """The sharded build with the pieces one after another in this process: the single-process output."""
    pieces = plan(job, range_mb)
    extracted = []
    with Progress("sharded extract", len(pieces), unit="pieces", logger=logger) as progress:
        for p in pieces:
            extracted.append(extract(p, job))
            progress.update()
    starts = offsets(extracted)
    tokenized = []
    with Progress("sharded tokenize", len(pieces), unit="pieces", logger=logger) as progress:
        for p, o, e in zip(pieces, starts, extracted):
            tokenized.append(tokenize(p, o, e, job))
            progress.update()
    summary = publish(pieces, tokenized, job)
    summary["computed"] = {
        "extract": sum(not m["reused"] for m in extracted),
        "tokenize": sum(not m["reused"] for m in tokenized),
    }
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = stage.parser(__doc__).parse_args(argv)

    def body() -> None:
        job, prep = make_job(args.params)
        print(json.dumps(run_serial(job, prep.range_mb)))

    return stage.run(body)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
