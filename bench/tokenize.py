"""Tokenizer throughput: rnnlab's word tokenizer against a per-line regex loop.

    python bench/tokenize.py [--mb 50] [--shared ../shared/data]

Builds ~50 MB of real text (WikiText-2 valid + test, repeated) once, then
times each variant in its own subprocess (so each reports its own peak RSS)
on the same input, in the same run:

- reference:  ``[t.lower() for t in re.findall(PAT, line)]`` per line (the loop of
              Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine
              Intelligence*, Bleeding Edge Press, 2016, chapter 6)
- reference': ``re.findall(PAT, line.lower())`` per line (a faster variant)
- kernel:     ``WordTokenizer`` on in-memory Arrow batches, 1 thread
- stage:      ``tokenize_table``: Parquet document table in, zstd token shards
              out, with 1 and 2 threads (what ``dvc repro`` runs)

Prints MB/s for each and the ratios against the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder leads sys.path, and its name would shadow the
# stdlib `tokenize` (which inspect and numpy import). Put the repo root there instead.
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse
import json
import os
import re
import resource
import subprocess
import tempfile
import time

PATTERN = r"[A-Za-z]+|[!?.:,()]"  # Abrahams et al. 2016, ch. 6


def build_corpus(shared: Path, mb: float, work: Path) -> tuple[Path, Path, int]:
    """Write the text file and the matching document table; return (text, docs, bytes)."""
    from pipeline.corpus import write_documents
    from pipeline.params import TextParams
    from pipeline.sources import text as text_source

    src = b"".join((shared / f).read_bytes() for f in ("wikitext-2/valid.txt", "wikitext-2/test.txt"))
    reps = max(1, round(mb * 1e6 / len(src)))
    text_file = work / "corpus.txt"
    text_file.write_bytes(src * reps)
    cfg = TextParams(train=str(text_file), valid=str(text_file), test=str(text_file), holdout=0.0)
    # One copy as train is enough for the stage timing; valid/test point at the same file.
    batches = (b for b in text_source.read(cfg) if b["split"][0].as_py() == "train")
    docs = work / "docs"
    write_documents(_with_splits(batches), docs, "bench corpus")
    return text_file, docs, len(src) * reps


def _with_splits(batches):
    """The corpus stage wants all three splits; give one document each to valid and test."""
    import pyarrow as pa

    yield from batches
    for split in ("valid", "test"):
        yield pa.table({"split": [split], "text": ["x"], "source_id": ["bench"]})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _count_shard_tokens(folder: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=["split", "tokens"])
    train = table.filter(pc.equal(table["split"], "train"))
    return pc.sum(pc.list_value_length(train["tokens"])).as_py()


def worker(variant: str, text_file: Path, docs: Path, out: Path) -> dict[str, float]:
    import pyarrow as pa

    from pipeline.tokenize import WordTokenizer, tokenize_table

    rx = re.compile(PATTERN)
    tokens = 0
    if variant in ("reference", "reference_linelower"):
        t0 = time.perf_counter()
        with open(text_file, encoding="utf-8") as f:
            for line in f:
                if variant == "reference":
                    tokens += len([t.lower() for t in rx.findall(line)])
                else:
                    tokens += len(rx.findall(line.lower()))
        seconds = time.perf_counter() - t0
    elif variant == "kernel":
        lines = text_file.read_text(encoding="utf-8").split("\n")
        batches = [pa.array(lines[i : i + 1024]) for i in range(0, len(lines), 1024)]
        del lines
        tok = WordTokenizer(PATTERN)
        t0 = time.perf_counter()
        for b in batches:
            tokens += len(tok(b).values)
        seconds = time.perf_counter() - t0
    else:
        workers = int(variant.split("_")[1])
        t0 = time.perf_counter()
        tokenize_table(docs, out / variant, WordTokenizer(PATTERN), shard_rows=50_000, workers=workers)
        seconds = time.perf_counter() - t0
        tokens = _count_shard_tokens(out / variant)
    return {"seconds": seconds, "tokens": tokens, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (default: %(default)s)")
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--paths", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, *args.paths)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        work = Path(tmp)
        text_file, docs, size = build_corpus(args.shared, args.mb, work)
        mb = size / 1e6
        print(f"corpus: {mb:.1f} MB of WikiText-2 (valid+test repeated), pattern {PATTERN!r}, {os.cpu_count()} cores")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        results = {}
        for variant in ("reference", "reference_linelower", "kernel", "stage_1", "stage_2"):
            cmd = [sys.executable, __file__, "--worker", variant, "--paths", str(text_file), str(docs), str(work)]
            results[variant] = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            )
        ref = mb / results["reference"]["seconds"]
        labels = {
            "reference": "reference: [t.lower() for t in re.findall] per line",
            "reference_linelower": "reference': re.findall(line.lower()) per line",
            "kernel": "rnnlab WordTokenizer kernel, 1 thread",
            "stage_1": "rnnlab tokenize stage (Parquet->shards), 1 thread",
            "stage_2": "rnnlab tokenize stage (Parquet->shards), 2 threads",
        }
        print(f"{'variant':<56} {'MB/s':>7} {'x ref':>6} {'x ref2':>6} {'peak RSS':>9}")
        ref2 = mb / results["reference_linelower"]["seconds"]
        counts = {r["tokens"] for r in results.values()}
        assert len(counts) == 1, f"variants disagree on the token count: {results}"
        for variant, r in results.items():
            speed = mb / r["seconds"]
            print(
                f"{labels[variant]:<56} {speed:7.1f} {speed / ref:6.2f} {speed / ref2:6.2f} {r['peak_rss_mb']:7.0f} MB"
            )


if __name__ == "__main__":
    main()
