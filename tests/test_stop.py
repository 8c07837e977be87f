"""Stopping a run, whatever launched it: SIGINT or SIGTERM ends ``rnnlab repro`` (and ``make run``, a
retraining run, a cancelled served run) within 30 s, with one line and exit 130 or 143, no traceback,
no process left, the finished stages kept and the training resumable.

The launch contexts are those that change how a signal arrives: a terminal (Ctrl-C reaches the
whole foreground group), a script's background job and nohup (SIGINT ignored by inheritance),
``timeout`` (which forwards the signal it gets), a parent that ignores SIGINT, and make. The fast
tests check the mechanism (pipeline/procs.py, pipeline/stage.py) without DVC or Prefect.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from bench.harness import PREFECT_HTTP, ROOT, VENV_BIN, copy_repo, load_params, run, tool_env, write_params
from pipeline import procs
from tests.conftest import LM_PARAMS
from tests.procsupport import STOP_LIMIT, Launched, left, lock_outs, marked, none_left

RNNLAB = str(VENV_BIN / "rnnlab")
DATA_STAGES = {"corpus", "tokenize@word", "vocab@word", "windows@word"}
EPOCH = r"Task run '[\w-]*epoch-(\d+)' - Finished"  # a training epoch done (its number): the stage is at work
# Epochs of lm@word, which each test trains afresh (a new seed): a stop, sent after the first epoch,
# lands well before the end even where an epoch takes 0.1 s and the stop 1.6 s.
EPOCHS = 30
STOPPED = re.compile(
    r"^rnnlab: (SIGINT|SIGTERM) interrupted stage lm@\w+; (DVC, its stages and the Prefect server|DVC and its stages) "
    r"stopped in [0-9.]+ s\. Finished stages are kept \(dvc\.lock\); `rnnlab repro( lm@word)?` resumes"
)


# --- the mechanism, fast ------------------------------------------------------------------------

REPORT_SIGNALS = (
    "import signal; ign = signal.SIG_IGN; "
    "print(signal.getsignal(signal.SIGINT) is ign, signal.getsignal(signal.SIGTERM) is ign, "
    "sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))"
)


def test_children_start_with_default_signals_whatever_this_process_inherited() -> None:
    """A background job's shell ignores SIGINT and passes that on through exec; procs.start does not."""
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        plain = subprocess.run([sys.executable, "-c", REPORT_SIGNALS], capture_output=True, text=True, check=True)
        child = procs.start([sys.executable, "-c", REPORT_SIGNALS], stdout=subprocess.PIPE, text=True)
        ours, _ = child.communicate(timeout=60)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        signal.signal(signal.SIGINT, ignored)
    assert plain.stdout.split()[0] == "True"  # what the bug was: SIGINT ignored by inheritance
    assert ours.split() == ["False", "False", "[]"]  # SIGINT, SIGTERM at their defaults, nothing blocked


@pytest.mark.parametrize("stubborn", [False, True], ids=["polite", "ignores-SIGTERM"])
def test_stop_ends_the_whole_tree_even_a_new_session_under_it(stubborn: bool, tmp_path: Path) -> None:
    """What torchrun does (a session of its own under the stage) and what a stage retrying a dead API
    does (not exiting on SIGTERM): stop() reaches both, the second by SIGKILL after the grace."""
    trap = "trap '' TERM; " if stubborn else ""
    env, mark = marked(tool_env())
    proc = procs.start(["bash", "-c", f"{trap}sleep 300 & setsid sleep 300 & wait"], env=env)
    deadline = time.monotonic() + 60
    while len(left(mark)) < 3:
        assert time.monotonic() < deadline, f"the tree did not start: {left(mark)}"
        time.sleep(0.1)
    start = time.monotonic()
    killed = procs.stop(proc, grace=1.0)
    assert none_left(mark) == []
    assert bool(killed) == stubborn and time.monotonic() - start < 1.0 + procs.KILL_WAIT + 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stage_body_stops_quietly_with_128_plus_the_signal(sig: int) -> None:
    code = (
        "import os, signal, sys, time\n"
        "from pipeline import stage\n"
        f"sys.exit(stage.run(lambda: (os.kill(os.getpid(), {int(sig)}), time.sleep(60))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (128 + sig, "", "")


def test_a_stop_during_a_checkpoint_write_takes_effect_once_the_file_is_whole(tmp_path: Path) -> None:
    """SIGTERM while torch.save writes (sent by an object as it is pickled): the checkpoint is still
    written whole, then the stage stops quietly. Interrupted inside its zip writer, torch.save raised
    a RuntimeError instead ("unexpected pos"), which a stop must never become."""
    path = tmp_path / "last.pt"
    code = (
        "import os, signal, sys, torch\n"
        "from models import checkpoint\n"
        "from pipeline import stage\n"
        "class Term:\n"
        "    def __reduce__(self):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        return (int, (0,))\n"
        "state = {'a': torch.zeros(10**5), 'term': Term(), 'b': torch.ones(10**5)}\n"
        f"save = lambda: checkpoint.save(state, {str(path)!r})\n"
        "sys.exit(stage.run(lambda: (save(), print('went on after the stop'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (128 + signal.SIGTERM, "", "")
    with zipfile.ZipFile(path) as saved:  # torch's format: a zip whose every member reads back whole
        assert saved.testzip() is None and len(saved.namelist()) >= 4


# --- rnnlab repro, make run and retraining, end to end (slow) -----------------------------------


@dataclass(frozen=True)
class Repo:
    path: Path
    env: dict[str, str]  # for rnnlab: Prefect's home from the repo's prefect.toml, no API configured
    data: dict[str, list[tuple[str, str]]]  # the data stages' outputs in dvc.lock

    def recording_to(self, api: str, **extra: str) -> dict[str, str]:
        """The environment for a run that records to ``api`` (the session's server), starting none."""
        return {**self.env, "PREFECT_API_URL": api, **extra}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """The data stages built; lm@word trains long enough (EPOCHS) for every test to stop it."""
    path = copy_repo(tmp_path_factory.mktemp("stop") / "repo")
    params = {
        **LM_PARAMS,
        "train": {**LM_PARAMS["train"], "word": {**LM_PARAMS["train"]["word"], "epochs": EPOCHS, "epoch_size": 40}},
        "retrain": {"levels": ["word"]},
        "schedule": {"deployment": "on-demand", "cron": "0 0 1 1 *", "interval": None},  # runs on demand only
    }
    write_params(path / "params.yaml", params)
    env = tool_env()
    for name in ("PREFECT_HOME", "PREFECT_API_URL"):
        env.pop(name, None)
    run(path, str(VENV_BIN / "dvc"), "repro", "windows@word", env=env)
    return Repo(path, env, lock_outs(path, DATA_STAGES))


VENV = VENV_BIN.parent
# name: (how it is launched, the signal, where it goes: "group" as a terminal's Ctrl-C, "pid" the
# rnnlab process a script's `$!` names, "proc" the launched command itself)
CONTEXTS = {
    "terminal": (lambda rn, pid: ["bash", "-c", f"exec {rn}"], signal.SIGINT, "group"),
    "script-background": (lambda rn, pid: ["bash", "-c", f"{rn} & echo $! > {pid}; wait $!"], signal.SIGINT, "pid"),
    "nohup": (lambda rn, pid: ["bash", "-c", f"nohup {rn} & echo $! > {pid}; wait $!"], signal.SIGTERM, "pid"),
    "timeout": (lambda rn, pid: ["timeout", "3600", *rn.split()], signal.SIGTERM, "proc"),
    "parent-ignores-SIGINT": (lambda rn, pid: ["bash", "-c", f"trap '' INT; exec {rn}"], signal.SIGINT, "proc"),
    "make-run": (
        lambda rn, pid: ["make", "--no-print-directory", "-o", f"{VENV}/.installed", "run", f"VENV={VENV}"],
        signal.SIGTERM,
        "proc",
    ),
}


# Where rnnlab starts the run's Prefect server itself, as `make run` does; the other contexts record to
# the session's server (PREFECT_API_URL), which spares a server start each: how a signal arrives is theirs.
OWN_SERVER = {"terminal", "make-run"}


@pytest.mark.slow
@pytest.mark.parametrize("context", list(CONTEXTS))
def test_a_signal_stops_the_run_in_every_launch_context(
    context: str, repo: Repo, prefect_api: str, tmp_path: Path
) -> None:
    launch, sig, target = CONTEXTS[context]
    pid_file = tmp_path / "pid"
    command = f"{RNNLAB} repro" + ("" if context == "make-run" else " lm@word")
    _force_training(repo)
    env = repo.env if context in OWN_SERVER else repo.recording_to(prefect_api)
    run_ = Launched.start(launch(command, pid_file), repo.path, env, tmp_path / "out.log")
    run_.wait_for(EPOCH)  # lm@word is training
    pid = int(pid_file.read_text()) if target == "pid" else None
    code, took, after = run_.stop_with(sig, pid=pid, group=target == "group")

    print(f"{context}: {signal.Signals(sig).name} stopped the run in {took:.1f} s")
    out = run_.output()
    assert code == (-sig if context == "make-run" else 128 + sig), out[-4000:]  # make ends by the signal
    assert took < STOP_LIMIT
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-6000:]
    lines = [x for x in after.splitlines() if x.strip()]
    if context == "make-run":  # make's own last word follows ours (make[1] when the tests run under make)
        assert re.match(rf"make(\[\d+\])?: \*\*\* \[.*run\] Error {128 + sig}$", lines.pop()), after
    assert STOPPED.match(lines[-1]) and lines[-1].startswith(f"rnnlab: {signal.Signals(sig).name}"), after
    assert ("the Prefect server stopped" in lines[-1]) == (context in OWN_SERVER), after
    # one line: an epoch that ended as the signal came may still report, but nothing else speaks of the stop
    assert not [x for x in lines[:-1] if x.startswith(("error:", "ERROR")) or "interrupt" in x.lower()], after
    assert none_left(run_.mark) == []  # dvc, the stage and the Prefect server are gone
    assert lock_outs(repo.path, DATA_STAGES) == repo.data  # the finished stages are kept


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_checkpoint(repo: Repo, prefect_api: str, tmp_path: Path) -> None:
    _force_training(repo)
    env = repo.recording_to(prefect_api)  # no server start per run
    first = Launched.start([RNNLAB, "repro", "lm@word"], repo.path, env, tmp_path / "first.log")
    first.wait_for(EPOCH, count=3)
    code, _, _ = first.stop_with(signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    again = Launched.start([RNNLAB, "repro", "lm@word"], repo.path, env, tmp_path / "again.log")
    assert again.proc.wait(600) == 0, again.output()[-6000:]
    assert first_epoch(again.output()) > 1, again.output()[-6000:]  # resumed, not started over
    assert lock_outs(repo.path, {"lm@word"})["lm@word"] and lock_outs(repo.path, DATA_STAGES) == repo.data
    assert none_left(again.mark) == []


@pytest.mark.slow
def test_a_retraining_run_in_a_script_stops_on_sigint(repo: Repo, prefect_api: str, tmp_path: Path) -> None:
    """`python -m flows.retrain &` from a script (SIGINT ignored by inheritance): its dvc and stage stop too."""
    env = repo.recording_to(prefect_api)
    _force_training(repo, epochs=8)  # a retraining run trains, evaluates and promotes: fewer epochs
    pid_file = tmp_path / "pid"
    cmd = ["bash", "-c", f"{VENV_BIN}/python -m flows.retrain --level word & echo $! > {pid_file}; wait $!"]
    run_ = Launched.start(cmd, repo.path, env, tmp_path / "out.log")
    run_.wait_for(EPOCH)
    code, took, after = run_.stop_with(signal.SIGINT, pid=int(pid_file.read_text()))
    print(f"retraining run: SIGINT stopped it in {took:.1f} s")
    out = run_.output()
    assert code == 130 and took < STOP_LIMIT, out[-6000:]
    assert "Traceback" not in out, out[-6000:]
    last = [x for x in after.splitlines() if x.strip()][-1]
    assert last.startswith("rnnlab: SIGINT interrupted the retraining run; its dvc and stage processes stopped")
    assert none_left(run_.mark) == []
    assert lock_outs(repo.path, DATA_STAGES) == repo.data


def first_epoch(output: str) -> int:
    """The number of the first training epoch a run's output shows (each epoch is a task run "epoch-N")."""
    found = re.search(EPOCH, output)
    assert found, output[-6000:]
    return int(found[1])


def _force_training(repo: Repo, epochs: int = EPOCHS) -> None:
    """Make lm@word train again, from its first epoch: another seed is another fingerprint (the
    checkpoint starts over). Before each stop: what earlier tests trained is no guide to what is left."""
    params = load_params(repo.path / "params.yaml")
    params["train"]["word"]["seed"] += 1
    params["train"]["word"]["epochs"] = epochs
    write_params(repo.path / "params.yaml", {}, base=params)


@pytest.fixture
def serving(repo: Repo, prefect_api: str, tmp_path: Path) -> Iterator[tuple[Launched, str]]:
    """``python -m ops.serve`` (the retrain deployment, on demand), with SIGINT ignored as a script's
    background job has it; stopped with SIGINT after, which it takes as SIGTERM."""
    env = repo.recording_to(prefect_api, PREFECT_RUNNER_POLL_FREQUENCY="2")
    cmd = ["bash", "-c", f"trap '' INT; exec {VENV_BIN}/python -m ops.serve"]
    serve = Launched.start(cmd, repo.path, env, tmp_path / "serve.log")
    try:
        serve.wait_for(r"serving retrain/on-demand")
        url = f"{prefect_api}/deployments/name/retrain/on-demand"
        deadline = time.monotonic() + 120
        while not (r := PREFECT_HTTP.get(url, timeout=10)).ok:
            assert time.monotonic() < deadline, f"no deployment: {r.status_code}\n{serve.output()[-4000:]}"
            time.sleep(0.5)
        yield serve, r.json()["id"]
    finally:
        code, _, _ = serve.stop_with(signal.SIGINT)
    assert code == 0, serve.output()[-4000:]  # the runner's graceful shutdown
    assert none_left(serve.mark) == []  # the runner took everything with it


def _state(api: str, run_id: str) -> str:
    r = PREFECT_HTTP.get(f"{api}/flow_runs/{run_id}", timeout=10)
    r.raise_for_status()
    return str(r.json()["state"]["type"])


def _wait_state(api: str, run_id: str, states: set[str], serve: Launched, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while (state := _state(api, run_id)) not in states:
        assert time.monotonic() < deadline, f"run {run_id} is {state}, not {states}:\n{serve.output()[-6000:]}"
        time.sleep(0.5)
    return state


@pytest.mark.slow
def test_cancelling_a_served_retraining_run_stops_its_dvc_and_stage(
    repo: Repo, prefect_api: str, serving: tuple[Launched, str]
) -> None:
    """`prefect flow-run cancel` (what the UI's Cancel does): the run shows Cancelled, its dvc and
    stage processes are gone, and the next run resumes the training."""
    serve, deployment = serving
    _force_training(repo, epochs=8)  # the second run trains on to the end

    def start_run() -> str:
        r = PREFECT_HTTP.post(f"{prefect_api}/deployments/{deployment}/create_flow_run", json={}, timeout=10)
        r.raise_for_status()
        return str(r.json()["id"])

    first = start_run()
    serve.wait_for(EPOCH)
    env = repo.recording_to(prefect_api)
    run(repo.path, str(VENV_BIN / "prefect"), "flow-run", "cancel", first, env=env)
    sent = time.monotonic()
    _wait_state(prefect_api, first, {"CANCELLED"}, serve, timeout=120)
    work = [x for x in left(serve.mark) if "dvc" in x or "flows.lm" in x or "prefect.engine" in x]
    deadline = time.monotonic() + STOP_LIMIT
    while work and time.monotonic() < deadline:
        time.sleep(0.2)
        work = [x for x in left(serve.mark) if "dvc" in x or "flows.lm" in x or "prefect.engine" in x]
    print(f"cancel: the run was Cancelled and its processes gone {time.monotonic() - sent:.1f} s after the request")
    assert work == []
    assert lock_outs(repo.path, DATA_STAGES) == repo.data

    second_at = len(serve.output())
    second = start_run()
    assert _wait_state(prefect_api, second, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, serve) == "COMPLETED"
    resumed = serve.output()[second_at:]
    # Not started over: it trains on from the checkpoint, or (when the cancel came after the last
    # epoch, as on a loaded machine it may) has no epoch left to train.
    epoch = re.search(EPOCH, resumed)
    assert epoch is None or int(epoch[1]) > 1, resumed[-6000:]
    assert "Task run 'reproduce" in resumed or "Running stage 'lm@word'" in resumed, resumed[-6000:]
    assert requests.get(f"{prefect_api}/health", timeout=10).ok
