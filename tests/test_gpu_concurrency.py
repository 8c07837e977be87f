"""A `gpu` tag concurrency limit on a real Prefect server: with limit 1, two trainings never overlap.

Each flow runs in its own process, as two trainings on one GPU host would. Without the
limit the same pair overlaps, so the check can fail.
"""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import PREFECT_HTTP, VENV_BIN, tool_env
from flows import common, train

# A flow whose one task holds the `gpu` tag: the smallest stand-in for a training. Both processes
# meet at a barrier (files in a folder) before the task, so their tasks ask for the slot at about
# the same moment however long each took to import Prefect on a busy machine. An untagged warm-up
# task first loads the task engine, which alone can take seconds on 2 busy cores. Every wait polls
# with a deadline of minutes: on a busy machine it only takes longer.
#
# Without a limit, each task also waits inside its slot until its peer's task has started too
# ("meet"), so the overlap does not depend on timing; with limit 1 that wait would deadlock (the
# peer cannot start until the slot is free), so the limited pair just holds for HOLD_SECONDS.
JOB = """
import os, sys, time
from pathlib import Path
from prefect import flow, task

DEADLINE = 300  # seconds

def wait_for(folder: Path, parties: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while len(os.listdir(folder)) < parties:
        if time.monotonic() > deadline:
            sys.exit(f"waited {DEADLINE} s for {parties} processes in {folder}, in vain")
        time.sleep(0.05)

@task(name="hold-gpu", tags=["gpu"])
def hold(seconds: float, meet: str, parties: int) -> None:
    if meet:
        (Path(meet) / str(os.getpid())).touch()
        wait_for(Path(meet), parties)
    time.sleep(seconds)

@task(name="warm-up")
def warm_up() -> None:
    pass

@flow(name="gpu-job")
def job(seconds: float, barrier: str, parties: int, meet: str) -> None:
    warm_up()
    (Path(barrier) / str(os.getpid())).touch()
    wait_for(Path(barrier), parties)
    hold(seconds, meet, parties)

if __name__ == "__main__":
    job(float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "")
"""
HOLD_SECONDS = 1.0  # each limited task holds the slot this long: their intervals are then easy to tell apart


def test_the_training_task_carries_the_gpu_tag() -> None:
    assert "gpu" in train.fit.tags
    assert "gpu" not in common.train_epoch.tags  # nested in fit: tagged, it would wait on its own parent


@pytest.fixture
def gpu_limit(prefect_api: str) -> Iterator[None]:
    """``prefect concurrency-limit create gpu 1``, through the API; removed afterwards."""
    r = PREFECT_HTTP.post(f"{prefect_api}/concurrency_limits/", json={"tag": "gpu", "concurrency_limit": 1}, timeout=10)
    r.raise_for_status()
    try:
        yield
    finally:
        PREFECT_HTTP.delete(f"{prefect_api}/concurrency_limits/tag/gpu", timeout=10)


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

    deadline = time.monotonic() + 300
    while True:
        runs = PREFECT_HTTP.post(f"{api}/task_runs/filter", json=body, timeout=10).json()
        mine = [r for r in runs if re.fullmatch(rf"{re.escape(name)}-[0-9a-f]+", r["name"])]  # not "fit-ngram-..."
        done = sorted((t(r["start_time"]), t(r["end_time"])) for r in mine if r["end_time"])
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
    return [
        str(VENV_BIN / "python"),
        str(tmp_path / "gpu_job.py"),
        str(HOLD_SECONDS),
        str(tmp_path / "barrier"),
        "2",
    ], env


@pytest.mark.slow
def test_without_a_limit_two_gpu_tasks_overlap(
    job: tuple[list[str], dict[str, str]], prefect_api: str, tmp_path: Path
) -> None:
    cmd, env = job
    (tmp_path / "meet").mkdir()
    cmd = [*cmd, str(tmp_path / "meet")]  # each task waits in its slot for the other's to start
    since = now()
    run_pair([cmd, cmd], [tmp_path, tmp_path], env)
    a, b = task_intervals(prefect_api, "hold-gpu", since)
    assert overlap(a, b), f"expected the unlimited tasks to overlap: {a} {b}"


@pytest.mark.slow
def test_with_limit_1_two_gpu_tasks_take_turns(
    job: tuple[list[str], dict[str, str]], prefect_api: str, tmp_path: Path, gpu_limit: None
) -> None:
    cmd, env = job
    since = now()
    run_pair([cmd, cmd], [tmp_path, tmp_path], env)
    a, b = task_intervals(prefect_api, "hold-gpu", since)
    assert not overlap(a, b), f"limit 1, yet the tasks overlapped: {a} {b}"
    assert b[0] >= a[1] - 0.5  # the second started once the first had released its slot


@pytest.mark.slow
def test_two_real_trainings_share_one_gpu_slot(
    lm_data: Path, tmp_path: Path, prefect_api: str, gpu_limit: None
) -> None:
    """The real lm stage, twice at once in two workspaces: its `fit` tasks take turns and both finish."""
    works = [tmp_path / "a", tmp_path / "b"]
    for w in works:
        shutil.copytree(lm_data, w)
    cmd = [str(VENV_BIN / "python"), "-m", "flows.lm", "--level", "word"]
    since = now()
    procs = [
        # Separate homes: separate result storage, so neither hits the other's training cache.
        subprocess.Popen(
            cmd,
            cwd=w,
            env=tool_env(PREFECT_HOME=str(w / ".prefect"), PREFECT_API_URL=prefect_api),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for w in works
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    intervals = task_intervals(prefect_api, "fit", since)
    assert len(intervals) == 2, intervals
    assert not overlap(*intervals), f"limit 1, yet two trainings overlapped: {intervals}"
    for w in works:
        assert (w / "artifacts/word/checkpoints/last.pt").is_file()
