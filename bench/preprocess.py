"""Sharded preprocessing throughput: the Dask flow with 1 and 2 worker processes, and the scaling ratio.

    .venv/bin/python -m bench.preprocess                 # the enwiki fragment x 10: ~60 MB of XML
    .venv/bin/python -m bench.preprocess --copies 16 --rounds 3

Input: a real multistream dump (bench/harness.py ``build_multistream``) built from the gensim enwiki fragment in
../shared/data, its 206 pages repeated ``--copies`` times with distinct page ids, 100 pages
per bz2 stream as dumps.wikimedia.org cuts them, grouped into pieces of ``--range-mb``.

* ``serial``: pipeline.sharded.run_serial's steps in this process, extract (bz2 + XML +
  markup stripping) and tokenize (ids, splits, word and char tokens, counts) timed apart:
  the per-core rates docs/scaling.md's scale plan multiplies out.
* ``dask-1``, ``dask-2``: flows/preprocess.py on a LocalCluster of 1 and 2 worker processes
  (one thread each), started before the clock and passed as ``preprocess.scheduler``; one
  Prefect server for the whole bench. Wall time of the flow: planning, every task with
  Prefect's per-task overhead, publishing.

Every run starts from an empty work folder (nothing reused). Rounds alternate 1 and 2
workers, so a load spike on a shared machine hits both; the ratio is the median over
rounds of (2-worker MB/s / 1-worker MB/s in the same round).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rnnlab-bench-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the bench prints its own lines
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read by the workers too

from bench.harness import SHARED_DATA, build_multistream, write_params
from pipeline import sharded
from pipeline.params import read_params

ENWIKI = SHARED_DATA / "wikipedia-xml" / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def params(root: Path, dump: Path, index: Path, range_mb: float, scheduler: str | None = None) -> Path:
    root.mkdir(parents=True)
    write_params(
        root / "params.yaml",
        {
            "corpus": {
                "source": "wikipedia",
                "wikipedia": {
                    "url": str(dump),
                    "index_url": str(index),
                    "holdout": 0.01,
                    "cache_dir": str(root / "cache"),
                },
            },
            "preprocess": {"range_mb": range_mb, "work_dir": "work", "scheduler": scheduler},
        },
    )
    return root


def serial(root: Path) -> dict[str, float]:
    """run_serial's steps, timed: seconds for plan, extract, tokenize, publish."""
    with contextlib.chdir(root):
        t0 = time.perf_counter()
        job, prep = sharded.make_job("params.yaml")
        pieces = sharded.plan(job, prep.range_mb)
        t1 = time.perf_counter()
        extracted = [sharded.extract(p, job) for p in pieces]
        t2 = time.perf_counter()
        starts = sharded.offsets(extracted)
        tokenized = [sharded.tokenize(p, o, e, job) for p, o, e in zip(pieces, starts, extracted)]
        t3 = time.perf_counter()
        sharded.publish(pieces, tokenized, job)
        t4 = time.perf_counter()
    return {
        "plan": t1 - t0,
        "extract": t2 - t1,
        "tokenize": t3 - t2,
        "publish": t4 - t3,
        "total": t4 - t0,
        "pieces": len(pieces),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=10, help="repeats of the fragment's 206 pages (~6 MB of XML each)")
    ap.add_argument("--range-mb", type=float, default=1.0, help="compressed MB per piece (preprocess.range_mb)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from distributed import LocalCluster

    from flows import preprocess

    tmp = Path(tempfile.mkdtemp(prefix="rnnlab-bench-preprocess-"))
    try:
        dump, index, xml = build_multistream(ENWIKI, tmp / "dump", per_stream=100, copies=args.copies)
        mb, cmb = xml / 1e6, dump.stat().st_size / 1e6
        print(f"input: {mb:.1f} MB of XML, {cmb:.1f} MB bz2 ({args.copies} x 206 pages), pieces of {args.range_mb} MB")

        s = serial(params(tmp / "serial", dump, index, args.range_mb))
        print(
            f"serial: {s['pieces']} pieces, {s['total']:.1f} s = {mb / s['total']:.2f} MB XML/s on one core "
            f"(extract {s['extract']:.1f} s = {mb / s['extract']:.2f} MB/s, {cmb / s['extract']:.2f} bz2 MB/s; "
            f"tokenize {s['tokenize']:.1f} s = {mb / s['tokenize']:.1f} MB/s; publish {s['publish']:.1f} s)"
        )

        rates: dict[int, list[float]] = {1: [], 2: []}
        with preprocess.one_server():
            for r in range(args.rounds):
                for workers in (1, 2):
                    t0 = time.perf_counter()
                    with LocalCluster(
                        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                    ) as cluster:
                        start = time.perf_counter() - t0
                        root = params(
                            tmp / f"dask-{workers}-{r}", dump, index, args.range_mb, cluster.scheduler_address
                        )
                        with contextlib.chdir(root):
                            t1 = time.perf_counter()
                            out = preprocess.preprocess.with_options(
                                task_runner=preprocess.task_runner(read_params("params.yaml").preprocess)
                            )("params.yaml", 0)
                            seconds = time.perf_counter() - t1
                    assert out["computed"]["extract"] == out["pieces"]
                    rates[workers].append(mb / seconds)
                    print(
                        f"round {r + 1}: dask-{workers}: {seconds:.1f} s = {mb / seconds:.2f} MB XML/s "
                        f"(cluster start {start:.1f} s, not counted)",
                        flush=True,
                    )
        ratio = statistics.median(b / a for a, b in zip(rates[1], rates[2]))
        print(
            f"dask-1 {statistics.median(rates[1]):.2f} MB/s, dask-2 {statistics.median(rates[2]):.2f} MB/s: "
            f"2 workers / 1 worker = {ratio:.2f}x (median of {args.rounds} rounds); "
            f"dask-1 / serial = {statistics.median(rates[1]) / (mb / s['total']):.2f}x"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
