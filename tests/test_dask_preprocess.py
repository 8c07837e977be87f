"""Sharded preprocessing: Dask workers, one task per piece, against the same pieces run in one process.

The input is a real multistream dump built here from the gensim enwiki fragment (206 pages:
bz2 streams of 10 pages, plus the header and footer streams, and the bz2 index of
``offset:page_id:title`` lines), cut into pieces of a few streams.

"The single-process output" is ``pipeline.sharded.run_serial``: the same per-piece functions,
one after another, in this process. The Dask runs must match it byte for byte, every file;
and it must match the ordinary DVC stages (corpus, tokenize, vocab, then windows): the same
vocabularies, metrics and windows bytes, and the same rows in the Parquet folders.

The Dask cluster runs worker *processes* (``processes=True``), as in production: that is what
needs the Prefect server address handed to other processes, arguments and manifests to
pickle, and a killed worker to be survived. Workers reach the session's Prefect test server
through the settings each task carries.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.harness import build_multistream, copy_repo, run, run_data_stages, tool_env, write_params
from pipeline import sharded, vocab, windows
from pipeline.errors import ParamsError

ENWIKI = "wikipedia-xml/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
RANGE_MB = 0.3  # ~6 pieces of ~4 streams out of the 1.76 MB dump
FAULTS = "faults"  # marker folder: a fault fires once, when its marker is not there yet


@pytest.fixture(scope="module")
def dump(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dump")
    d, index, _ = build_multistream(shared_data / ENWIKI, folder, per_stream=10)
    return d, index


def _params(root: Path, dump: tuple[Path, Path], **preprocess: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_params(
        root / "params.yaml",
        {
            "corpus": {
                "source": "wikipedia",
                "wikipedia": {
                    "url": str(dump[0]),
                    "index_url": str(dump[1]),
                    "holdout": 0.1,
                    "cache_dir": str(root / "cache"),
                },
            },
            "preprocess": {"range_mb": RANGE_MB, "work_dir": "work", **preprocess},
        },
    )
    return root


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root/data`` (the published outputs), by relative path."""
    data = root / "data"
    return {
        p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data.rglob("*"))
        if p.is_file()
    }


def mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def serial(dump: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process output: every piece in turn, in this process."""
    root = _params(tmp_path_factory.mktemp("serial"), dump)
    with contextlib.chdir(root):
        job, prep = sharded.make_job("params.yaml")
        summary = sharded.run_serial(job, prep.range_mb)
    assert summary["pieces"] >= 4 and summary["docs"] == {"test": 13, "train": 83, "valid": 10}
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A LocalCluster of 2 worker processes shared by the tests that pass its address as preprocess.scheduler."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c.scheduler_address


@pytest.mark.slow
def test_serial_output_equals_the_dvc_stages(serial: Path, dump: tuple[Path, Path], tmp_path: Path) -> None:
    stages = run_data_stages(_params(tmp_path / "stages", dump), windows=False)
    mine = shutil.copytree(serial, tmp_path / "serial")  # the fixture stays as it is for the other tests
    for root in (stages, mine):
        with contextlib.chdir(root):
            windows.run("word", "params.yaml")
    serial, (mine, theirs) = mine, (digests(mine), digests(stages))
    same = [
        "vocab/word.json",
        "vocab/char.json",
        "metrics/vocab-word.json",
        "metrics/vocab-char.json",
        "metrics/corpus.json",
        "corpus/oracle.json",
        "windows/word/meta.json",
        "metrics/windows-word.json",
    ]
    for rel in same:  # windows' meta.json holds the sha256 of every array it wrote
        assert mine[rel] == theirs[rel], rel
    for folder in ("corpus/docs", "tokens/word", "tokens/char"):  # same rows; one file set per piece
        assert pq.read_table(serial / "data" / folder).equals(pq.read_table(stages / "data" / folder)), folder
    assert len(list((serial / "data/tokens/word").glob("part-*.parquet"))) > 1


def test_a_folder_of_text_files_gives_the_text_source_rows(tmp_path: Path) -> None:
    files = tmp_path / "raw"
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "Epsilon", "zeta", "eta", "theta", "."]
    for k in range(5):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(0, 60))]
        (files / f"sub{k % 2}").mkdir(parents=True, exist_ok=True)
        (files / f"sub{k % 2}" / f"f{k}.txt").write_text("\n".join(lines) + "\n")
    over = {
        "corpus": {"source": "text", "text": {"train": "../raw", "holdout": 0.1, "seed": 4}},
        "preprocess": {"work_dir": "work"},
    }
    outs = {}
    for name in ("stages", "serial"):
        root = tmp_path / name
        root.mkdir()
        write_params(root / "params.yaml", over)
        with contextlib.chdir(root):
            if name == "stages":
                run_data_stages(root, windows=False)
            else:
                job, prep = sharded.make_job("params.yaml")
                assert len(sharded.plan(job, prep.range_mb)) == 5  # one piece per file
                sharded.run_serial(job, prep.range_mb)
        outs[name] = root
    a, b = digests(outs["stages"]), digests(outs["serial"])
    for rel in ("vocab/word.json", "vocab/char.json", "metrics/vocab-word.json", "metrics/corpus.json"):
        assert a[rel] == b[rel], rel
    for folder in ("corpus/docs", "tokens/word", "tokens/char"):
        x, y = (pq.read_table(outs[n] / "data" / folder) for n in ("stages", "serial"))
        assert x.equals(y), folder
    assert set(pq.read_table(outs["serial"] / "data/corpus/docs").column("split").to_pylist()) == {
        "train",
        "valid",
        "test",
    }


def test_count_merging_is_associative(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1)
    tables = []
    for _ in range(7):
        toks = [rng.choice("abcdefgh") * rng.randint(1, 3) for _ in range(rng.randint(0, 40))]
        splits = [rng.choice(["train", "valid"]) for _ in toks]
        tables.append(
            vocab.count_table(pa.array(splits, pa.string()), pa.array([[t] for t in toks], pa.list_(pa.string())))
        )
    whole = vocab.merge_counts(tables)
    grouped = vocab.merge_counts([vocab.merge_counts(tables[:3]), vocab.merge_counts(tables[3:])])
    shuffled = vocab.merge_counts(rng.sample(tables, len(tables)))
    assert whole.equals(grouped) and whole.equals(shuffled)
    monkeypatch.setattr(vocab, "MERGE_ROWS", 5)  # partial sums along the way: the same table
    assert vocab.merge_counts(tables).equals(whole)
    assert sum(whole["count"].to_pylist()) == sum(sum(t["count"].to_pylist()) for t in tables)


def test_streams_group_without_cutting_one() -> None:
    ranges = [(0, 10), (10, 30), (30, 35), (35, 80), (80, 81)]
    # At most 25 bytes a group, unless one stream alone is larger (35-80).
    assert list(sharded.group_streams(ranges, 25)) == [[0, 10], [10, 30, 35], [35, 80], [80, 81]]
    assert list(sharded.group_streams(ranges, 1000)) == [[0, 10, 30, 35, 80, 81]]


def test_user_errors_are_not_retried() -> None:
    from types import SimpleNamespace

    from flows.preprocess import transient
    from pipeline.errors import DataError

    assert transient(None, None, SimpleNamespace(data=OSError("connection reset")))
    assert not transient(None, None, SimpleNamespace(data=DataError("index.txt:2: expected offset:page_id:title")))


def test_sources_that_cannot_be_split_are_params_errors(dump: tuple[Path, Path], tmp_path: Path) -> None:
    root = tmp_path / "g"
    root.mkdir()
    write_params(root / "params.yaml", {})  # the grammar corpus
    with pytest.raises(ParamsError, match=r"corpus\.source is 'grammar'"):
        sharded.make_job(root / "params.yaml")
    write_params(root / "params.yaml", {"corpus": {"source": "wikipedia", "wikipedia": {"url": str(dump[0])}}})
    with pytest.raises(ParamsError, match=r"corpus\.wikipedia\.index_url is null"):
        sharded.make_job(root / "params.yaml")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_flows")
def test_the_flow_writes_the_single_process_bytes_and_dvc_repro_goes_on_from_them(
    serial: Path, dump: tuple[Path, Path], tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    repo = copy_repo(tmp_path / "repo")
    _params(repo, dump, workers=2)  # scheduler null: the flow starts a LocalCluster of 2 worker processes
    env = tool_env(PREFECT_HOME=str(repo / ".prefect"), PREFECT_API_URL=PREFECT_API_URL.value())
    out = run(repo, sys.executable, "-m", "flows.preprocess", "--commit", env=env, timeout=600)
    assert "computed {'extract': 8, 'tokenize': 8}" in out.stdout + out.stderr
    assert digests(repo) == digests(serial)

    # Committed as the corpus, tokenize and vocab stages' outputs: `dvc repro` goes on from them.
    status = run(repo, "dvc", "status", "corpus", "tokenize", "vocab", env=env).stdout
    assert "up to date" in status, status
    repro = run(repo, "dvc", "repro", "windows@word", env=env).stdout
    assert "Running stage 'windows@word'" in repro and "Running stage 'corpus'" not in repro, repro
    assert digests(repo)["vocab/word.json"] == digests(serial)["vocab/word.json"]


def task_runs(flow_run_id: str, expected: int, timeout: float = 30.0) -> dict[str, Any]:
    """The finished task runs of one flow run, by name, once ``expected`` of them are recorded.

    The server records task runs from the events the workers send, a moment after the flow
    returns. ``sort`` must be given (prefect 3.8.8's server rejects a null one); empty flow or
    deployment filters would exclude runs that have no deployment, so none are passed.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    only = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_task_runs(task_run_filter=only, sort=TaskRunSort.NAME_ASC, limit=200)
            done = {r.name: r for r in found if r.state is not None and r.state.is_final()}
            if len(done) >= expected or time.monotonic() > deadline:
                return done
            time.sleep(0.5)


def _install_faults(markers: str) -> None:
    """Run in each Dask worker: piece 1's extract raises on its first attempt, and piece 2's
    tokenize SIGKILLs its worker process on its first attempt (a marker file makes each fire once)."""
    import signal as _signal
    from pathlib import Path as _Path

    from pipeline import sharded as _sharded

    extract, tokenize_ = _sharded.extract, _sharded.tokenize

    def once(name: str) -> bool:
        try:
            (_Path(markers) / name).touch(exist_ok=False)
        except FileExistsError:
            return False
        return True

    def faulty_extract(piece, job):  # type: ignore[no-untyped-def]
        if piece.index == 1 and once("extract-1"):
            raise OSError("injected: the read was cut off")
        return extract(piece, job)

    def faulty_tokenize(piece, offset, extracted, job):  # type: ignore[no-untyped-def]
        if piece.index == 2 and once("tokenize-2"):
            (job.work / "tokenize").mkdir(parents=True, exist_ok=True)
            (job.work / "tokenize" / ".000002.half.tmp").mkdir(exist_ok=True)  # as a killed atomic_dir leaves
            os.kill(os.getpid(), _signal.SIGKILL)
        return tokenize_(piece, offset, extracted, job)

    _sharded.extract, _sharded.tokenize = faulty_extract, faulty_tokenize


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_flows")
def test_failed_and_killed_tasks_are_retried_and_finished_pieces_are_reused(
    serial: Path, dump: tuple[Path, Path], cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Client

    from flows import preprocess

    root = _params(tmp_path / "retry", dump, scheduler=cluster, retries=2)
    monkeypatch.chdir(root)
    markers = root / FAULTS
    markers.mkdir()
    with Client(cluster) as client:
        client.run(_install_faults, str(markers))

    first = preprocess.run("params.yaml")  # one raise (Prefect retries it), one SIGKILL (Dask reruns it)
    assert sorted(p.name for p in markers.iterdir()) == ["extract-1", "tokenize-2"]  # both faults fired
    runs = task_runs(first["flow_run_id"], 2 * first["pieces"] + 1)
    assert runs["extract-1"].run_count == 2 and runs["extract-0"].run_count == 1  # a Prefect retry
    assert all(r.state.is_completed() for r in runs.values()) and len(runs) == 2 * first["pieces"] + 1
    # Every piece extracted here; a tokenize result that the killed worker held in memory is lost
    # and recomputed by Dask, which then finds the piece finished on disk and reuses it.
    assert first["computed"]["extract"] == first["pieces"] and first["computed"]["tokenize"] >= 1
    assert digests(root) == digests(serial)
    assert not list((root / "work/wikipedia/tokenize").glob(".*.tmp"))  # the killed task's leftovers are gone

    work = root / "work/wikipedia"
    before = mtimes(work)
    again = preprocess.run("params.yaml")  # nothing to do: every piece verified and reused
    assert again["computed"] == {"extract": 0, "tokenize": 0}
    assert mtimes(work) == before

    shutil.rmtree(work / "extract/000003")  # as if killed before it finished
    shard = next((work / "tokenize/000001/tokens/word").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-7] + b"garbage")  # damaged: its sha256 no longer matches
    third = preprocess.run("params.yaml")
    # Piece 3's documents come out the same bytes, so its tokens are still valid and reused.
    assert third["computed"] == {"extract": 1, "tokenize": 1}
    assert digests(root) == digests(serial)
    untouched = {k: v for k, v in before.items() if not k.startswith(("extract/000003", "tokenize/000001"))}
    assert {k: v for k, v in mtimes(work).items() if k in untouched} == untouched
