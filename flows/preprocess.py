"""Flow ``preprocess``: the corpus, tokenize and vocab stages' outputs, one Dask task per piece of input.

    python -m flows.preprocess [--params params.yaml] [--commit]

For inputs too big for one process: a multistream Wikipedia dump (``corpus.wikipedia.url``
and its ``index_url``), cut into ranges of whole bz2 streams, or a folder of text files
(``corpus.text``), one file per piece. pipeline/sharded.py holds the per-piece functions
and defines the output; this flow only fans them out with Prefect's ``DaskTaskRunner``:

    extract-<i>   one task per piece, in parallel     documents of the piece
    tokenize-<i>  one task per piece, in parallel     doc ids, splits, word and char tokens, counts
    publish       in this process                     data/corpus/docs, data/tokens/<level>,
                                                      data/vocab/<level>.json and their metrics

``preprocess.scheduler`` names a running Dask scheduler (its workers must see the same
paths: a shared filesystem); null starts a LocalCluster of ``preprocess.workers``
processes with one thread each. Processes, not threads: markup stripping and XML
parsing hold the GIL.

Failures: a task that raises is retried by Prefect (``preprocess.retries``); a task whose
worker process dies (killed, out of memory) is rerun by Dask on another worker. Each
piece's folder under ``preprocess.work_dir`` is written atomically with a manifest
(its key and the sha256 of its files), so a rerun, in the same flow or a later one,
reuses every finished piece and computes only the rest.

One Prefect server: every Dask worker reports its task runs to the server this flow
uses. Without ``PREFECT_API_URL`` the flow starts one temporary server and hands its
address to the workers; otherwise each worker process would start a server of its own.

The outputs are those of the DVC stages (same paths and formats; vocabularies, metrics
and every row identical: tests/test_dask_preprocess.py), so ``dvc repro`` goes on from
them once they are recorded: ``--commit`` runs ``dvc commit -f corpus tokenize vocab``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from pipeline import sharded, stage
from pipeline.errors import RnnlabError
from pipeline.params import PreprocessParams, read_params
from pipeline.progress import Progress

logger = logging.getLogger(f"rnnlab.{__name__}")
DVC_STAGES = ("corpus", "tokenize", "vocab")  # whose outputs this flow writes


class CommitError(RnnlabError):
    """``dvc commit`` of the flow's outputs failed."""


def transient(_task: object, _run: object, state: Any) -> bool:
    """Retry a failure that may pass (an interrupted read, a worker's full disk), not a user error
    (a bad index, invalid UTF-8), which would only fail again."""
    return not isinstance(state.data, RnnlabError)


@task(name="extract", cache_policy=NO_CACHE, task_run_name="extract-{piece.index}")
def extract_piece(piece: sharded.Piece, job: sharded.Job) -> dict[str, Any]:
    """The documents of one piece (reused when already extracted and intact)."""
    out = sharded.extract(piece, job)
    get_run_logger().info(f"{piece.describe()}: {out['rows']} documents ({'reused' if out['reused'] else 'computed'})")
    return out


@task(name="tokenize", cache_policy=NO_CACHE, task_run_name="tokenize-{piece.index}")
def tokenize_piece(piece: sharded.Piece, offset: int, extracted: dict[str, Any], job: sharded.Job) -> dict[str, Any]:
    """Doc ids from ``offset``, splits, tokens at both levels and token counts of one piece."""
    out = sharded.tokenize(piece, offset, extracted, job)
    get_run_logger().info(f"piece {piece.index}: doc ids from {offset} ({'reused' if out['reused'] else 'computed'})")
    return out


@task(name="publish", cache_policy=NO_CACHE)
def publish(pieces: list[sharded.Piece], tokenized: list[dict[str, Any]], job: sharded.Job) -> dict[str, Any]:
    """Link the pieces' shards into the stages' folders; merge the counts into the vocabularies."""
    return sharded.publish(pieces, tokenized, job)


def results(futures: list[PrefectFuture[Any]], desc: str) -> list[Any]:
    """The futures' results in their order, with the progress of the pieces as they finish (in any order)."""
    with Progress(desc, len(futures), unit="pieces", logger=logger) as progress:
        for _ in as_completed(futures):
            progress.update()
    return [f.result() for f in futures]


@flow(name="preprocess")
def preprocess(params_file: str = "params.yaml", retries: int = 2) -> dict[str, Any]:
    """Build the corpus, tokens and vocabularies of ``params_file``'s corpus, one task per piece."""
    log = get_run_logger()
    job, prep = sharded.make_job(params_file)
    pieces = sharded.plan(job, prep.range_mb)
    log.info(f"{len(pieces)} pieces of {job.source} input; work folder {job.work}")
    again = {"retries": retries, "retry_delay_seconds": 1, "retry_condition_fn": transient}
    extract, tokenize = extract_piece.with_options(**again), tokenize_piece.with_options(**again)
    extracted = results([extract.submit(p, job) for p in pieces], "preprocess extract")
    starts = sharded.offsets(extracted)  # needs every piece's document count: the one barrier
    tokenized = results(
        [tokenize.submit(p, o, e, job) for p, o, e in zip(pieces, starts, extracted)], "preprocess tokenize"
    )
    summary = publish(pieces, tokenized, job)
    summary["computed"] = {
        "extract": sum(not m["reused"] for m in extracted),
        "tokenize": sum(not m["reused"] for m in tokenized),
    }
    summary["flow_run_id"] = runtime.flow_run.id
    pages = {k: sum(m.get("pages", {}).get(k, 0) for m in extracted) for k in ("pages", "kept", "redirects")}
    log.info(
        f"published {summary['docs']} documents from {len(pieces)} pieces ({pages['pages']} pages read, "
        f"{pages['kept']} kept); computed {summary['computed']}, the rest reused; vocab {summary['vocab']}"
    )
    return summary


def task_runner(prep: PreprocessParams) -> DaskTaskRunner:
    """A running scheduler when ``preprocess.scheduler`` names one, else a LocalCluster of worker processes."""
    if prep.scheduler:
        return DaskTaskRunner(address=prep.scheduler)
    return DaskTaskRunner(cluster_kwargs={"n_workers": prep.workers, "threads_per_worker": 1, "processes": True})


@contextlib.contextmanager
def one_server() -> Iterator[None]:
    """Make sure the flow and every Dask worker report to one Prefect server.

    Workers get the flow's settings with each task; without ``PREFECT_API_URL`` those name
    no server, and each worker process would start a temporary one of its own (8 tiny
    tasks took 30 s that way, against 7 s with one server: ../shared/ENVIRONMENT.md). So
    start the temporary server here, once, and name it in the settings the workers receive.
    """
    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer  # the one ephemeral mode would start

    server = SubprocessASGIServer()
    server.start()  # stopped at exit (Prefect registers it)
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def run(params_file: str, commit: bool = False) -> dict[str, Any]:
    params = read_params(params_file)
    sharded.check(params)  # before any server or cluster starts
    prep = params.preprocess
    with one_server():
        summary = preprocess.with_options(task_runner=task_runner(prep))(params_file, prep.retries)
    if commit:
        # Record the outputs as those stages' own, so `dvc repro` goes on from them.
        argv = [sys.executable, "-m", "dvc", "commit", "-f", *DVC_STAGES]
        if subprocess.run(argv).returncode != 0:
            raise CommitError(
                f"the outputs are written, but `dvc commit -f {' '.join(DVC_STAGES)}` failed (its message is above); "
                "run it from the repository root once fixed, before `dvc repro`"
            )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = stage.parser(__doc__)
    p.add_argument(
        "--commit",
        action="store_true",
        help=f"then `dvc commit -f {' '.join(DVC_STAGES)}`: record the outputs for `dvc repro`",
    )
    args: argparse.Namespace = p.parse_args(argv)
    return stage.run(lambda: run(args.params, args.commit))


if __name__ == "__main__":
    raise SystemExit(main())
