"""Session-wide fixtures. Outputs go to tmp_path; shared corpora are read in place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from bench.harness import SHARED_DATA, SMALL_CORPUS, run_data_stages, write_params

# Tests write only to temporary folders: hypothesis would keep its example database and a cache
# of constants in ./.hypothesis, inside the repository (and copy_repo would copy them).
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="rnnlab-hypothesis-"))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """Torch in a test process runs as in a stage: one intra-op thread (models/device.py DEFAULT_THREADS).
    With two threads, on two cores shared with the other worker and the processes tests start, torch's
    threads wait on each other: a busy run took tests/test_models_real_corpora.py from 25 s to 690 s."""
    from models.device import set_threads

    set_threads()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real public corpora (see its SOURCES.md). Read only."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: tests need ../shared beside the repository")
    return SHARED_DATA


# --- language models (models/, flows/) ------------------------------------------------------

# Prefect reads its settings when first imported: keep its home (database, results) out
# of the repository and the telemetry off, for every test in this process.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="rnnlab-test-prefect-")  # never the project's .prefect/
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# The real params, shrunk: models of a few thousand weights, a few steps.
LM_PARAMS = {
    **SMALL_CORPUS,
    "train": {
        "word": {
            "emb_dim": 16,
            "hidden": 32,
            "batch_size": 8,
            "bptt": 12,
            "epochs": 2,
            "epoch_size": 10,
            "checkpoint_every": 5,
        },
        "char": {
            "emb_dim": 8,
            "hidden": 32,
            "batch_size": 8,
            "bptt": 30,
            "epochs": 2,
            "epoch_size": 10,
            "checkpoint_every": 5,
        },
    },
    "evaluate": {"batch_size": 16},
    "sample": {"word": {"count": 2, "max_tokens": 12}, "char": {"count": 2, "max_tokens": 30}},
    "skipgram": {"emb_dim": 16, "negatives": 8, "batch_size": 64, "valid_pairs": 500, "epochs": 2, "epoch_size": 10},
}


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small grammar corpus run through corpus → tokenize → vocab → windows at both levels.

    Read only: tests that write use ``lm_workdir``, a copy.
    """
    root = tmp_path_factory.mktemp("lm-data")
    write_params(root / "params.yaml", LM_PARAMS)
    return run_data_stages(root)


@pytest.fixture
def lm_workdir(lm_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of ``lm_data``, made the working directory (stages use relative paths)."""
    work = tmp_path / "work"
    shutil.copytree(lm_data, work)
    monkeypatch.chdir(work)
    return work


@pytest.fixture(scope="session")
def prefect_flows(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Flows called in this process record to the session's real server (``prefect_api``, which
    stage processes started by tests use too: one server per session), with results (the task
    cache) in a tmp folder, and heartbeats off as in a stage (flows/common.py without_heartbeats)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    from flows.common import HEARTBEATS

    storage = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings(
        {PREFECT_API_URL: prefect_api, PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage, HEARTBEATS: None}
    ):
        yield storage
        # What this process has yet to send goes now, while the server runs (as Prefect's test harness does).
        with contextlib.suppress(RuntimeError):  # no log was ever sent: no worker to drain
            APILogWorker.instance().drain()
        EventsWorker.drain_all()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real ``prefect server`` on 127.0.0.1 for the session (each xdist worker has its own);
    yields its API URL. Tests where the server itself is the point start their own."""
    from bench.harness import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as api:
        yield api


# --- teams: a Prefect server on PostgreSQL (tests/test_postgres_server.py) --------------------------


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the session; yields Prefect's database URL.

    Skips, saying how to install them, when PostgreSQL's server programs are missing (`make postgres`).
    """
    from bench.harness import NO_POSTGRES, postgres_bin, postgres_cluster

    if postgres_bin() is None:
        pytest.skip(NO_POSTGRES)
    with postgres_cluster(tmp_path_factory.mktemp("postgres")) as url:
        yield url


# --- order: the longest files first ---------------------------------------------------------------

# The files that take longest, longest first (per-file sums of `pytest --durations=0`, measured on a
# quiet 2-core machine). `make test` runs with --no-loadscope-reorder: its workers take whole files
# in this order, so the long ones start at once and the many short ones fill in at the end. A file
# missing here only runs later; a stale order costs minutes, never a result.
LONGEST_FIRST = (
    "test_stop.py",
    "test_own_text.py",
    "test_lm_dvc.py",
    "test_postgres_server.py",
    "test_schedule_server.py",
    "test_tasks_dvc.py",
    "test_ssh_remote.py",
    "test_dask_preprocess.py",
    "test_ddp.py",
    "test_recipes.py",
    "test_gpu_concurrency.py",
    "test_spine_dvc.py",
    "test_resume.py",
    "test_server.py",
    "test_exit_codes.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
