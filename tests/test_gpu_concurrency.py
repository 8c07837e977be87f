"""A `gpu` tag concurrency limit on a real Prefect server: with limit 1, two trainings never overlap.

Each flow runs in its own process, as two trainings on one GPU host would. Without the
limit the same pair overlaps, so the check can fail.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from flows import common, train
from tests.support import VENV_BIN, tool_env

# A flow whose one task holds the `gpu` tag for `seconds`: the smallest stand-in for a training.
# Both processes meet at a barrier (files in a folder) before the task, so their tasks ask for
# the slot at the same moment however long each took to import Prefect on a busy machine. An
# untagged warm-up task first loads the task engine, which alone can take seconds on 2 busy cores.
JOB = """
import os, sys, time
from pathlib import Path
from prefect import flow, task

@task(name="hold-gpu", tags=["gpu"])
def hold(seconds: float) -> None:
    time.sleep(seconds)

@task(name="warm-up")
def warm_up() -> None:
    pass

@flow(name="gpu-job")
def job(seconds: float, barrier: str, parties: int) -> None:
    warm_up()
    (Path(barrier) / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(barrier)) < parties and time.monotonic() < deadline:
        time.sleep(0.05)
    hold(seconds)

if __name__ == "__main__":
    job(float(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
"""
HOLD_SECONDS = 3.0


def test_the_training_task_carries_the_gpu_tag() -> None:
    assert "gpu" in train.fit.tags
    assert "gpu" not in common.train_epoch.tags  # nested in fit: tagged, it would wait on its own parent


@pytest.fixture
def gpu_limit(prefect_api: str) -> Iterator[None]:
    """``prefect concurrency-limit create gpu 1``, through the API; removed afterwards."""
    r = requests.post(f"{prefect_api}/concurrency_limits/", json={"tag": "gpu", "concurrency_limit": 1}, timeout=10)
    r.raise_for_status()
    try:
        yield
    finally:
        requests.delete(f"{prefect_api}/concurrency_limits/tag/gpu", timeout=10)


def run_pair(cmds: list[list[str]], cwds: list[Path], env: dict[str, str]) -> None:
    """Start the commands together, wait for both, fail with their output if one fails."""
    procs = [
        subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd, cwd in zip(cmds, cwds)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out


def task_intervals(api: str, name: str, since: datetime.datetime, expect: int = 2) -> list[tuple[float, float]]:
    """(start, end) in epoch seconds of the finished runs of task ``name`` that started after ``since``.

    The server records task runs from the events the clients send, a moment later: poll.
    """
    body = {  # a task run is named after its task plus a suffix: "fit-3a9"
        "task_runs": {"name": {"like_": f"{name}-"}, "start_time": {"after_": since.isoformat()}},
        "sort": "EXPECTED_START_TIME_ASC",
    }

    def t(s: str) -> float:
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    deadline = time.monotonic() + 30
    while True:
        runs = requests.post(f"{api}/task_runs/filter", json=body, timeout=10).json()
        done = sorted((t(r["start_time"]), t(r["end_time"])) for r in runs if r["end_time"])
        if len(done) >= expect or time.monotonic() > deadline:
            print(f"{name} task runs (start, end):", done)
            return done
        time.sleep(0.5)


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture
def job(tmp_path: Path, prefect_api: str) -> tuple[list[str], dict[str, str]]:
    (tmp_path / "gpu_job.py").write_text(JOB)
    (tmp_path / "barrier").mkdir()
    env = tool_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=prefect_api)
    return [str(VENV_BIN / "python"), str(tmp_path / "gpu_job.py"), str(HOLD_SECONDS), str(tmp_path / "barrier"),
            "2"], env  # fmt: skip


def test_without_a_limit_two_gpu_tasks_overlap(job: tuple[list[str], dict[str, str]], prefect_api: str,
                                               tmp_path: Path) -> None:  # fmt: skip
    cmd, env = job
    since = now()
    run_pair([cmd, cmd], [tmp_path, tmp_path], env)
    a, b = task_intervals(prefect_api, "hold-gpu", since)
    assert overlap(a, b), f"expected the unlimited tasks to overlap: {a} {b}"


def test_with_limit_1_two_gpu_tasks_take_turns(job: tuple[list[str], dict[str, str]], prefect_api: str,
                                               tmp_path: Path, gpu_limit: None) -> None:  # fmt: skip
    cmd, env = job
    since = now()
    run_pair([cmd, cmd], [tmp_path, tmp_path], env)
    a, b = task_intervals(prefect_api, "hold-gpu", since)
    assert not overlap(a, b), f"limit 1, yet the tasks overlapped: {a} {b}"
    assert b[0] >= a[1] - 0.5  # the second started once the first had released its slot


@pytest.mark.slow
def test_two_real_trainings_share_one_gpu_slot(lm_data: Path, tmp_path: Path, prefect_api: str,
                                               gpu_limit: None) -> None:  # fmt: skip
    """The real `train` flow, twice at once in two workspaces: its `fit` tasks take turns and both finish."""
    works = [tmp_path / "a", tmp_path / "b"]
    for w in works:
        shutil.copytree(lm_data, w)
    cmd = [str(VENV_BIN / "python"), "-m", "flows.train", "--level", "word"]
    since = now()
    procs = [
        # Separate homes: separate result storage, so neither hits the other's training cache.
        subprocess.Popen(cmd, cwd=w, env=tool_env(PREFECT_HOME=str(w / ".prefect"), PREFECT_API_URL=prefect_api),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for w in works
    ]  # fmt: skip
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    intervals = task_intervals(prefect_api, "fit", since)
    assert len(intervals) == 2, intervals
    assert not overlap(*intervals), f"limit 1, yet two trainings overlapped: {intervals}"
    for w in works:
        assert (w / "artifacts/word/checkpoints/last.pt").is_file()
