"""Load on a team's Prefect server: SQLite against PostgreSQL, N concurrent flow runs while the UI's API is polled.

    python -m bench.server_load                        # N = 4, 8, 16 on each backend (25 min on 2 busy cores)
    python -m bench.server_load --quick                # N = 3 on each backend: a smoke run (7 min there)
    python -m bench.server_load -n 8 --backend postgresql --json out.json

Per backend, one real ``prefect server start`` (ops/server.py): on SQLite in its own home
(Prefect's default), or on a throwaway PostgreSQL cluster (bench/harness.py: Debian's
server programs, ``make postgres``). Against it, per round of N flow runs started at once:

* the stage flow ``python -m flows.lm --level word`` (train, n-gram, evaluate, sample), in
  N - q - 1 working copies of a shrunk, already reproduced repository, one seed each;
* q = max(1, N // 4) experiments: ``dvc exp run --queue -S train.word.seed=S lm@word``, run
  by ``dvc queue start -j q`` (its workers inherit PREFECT_API_URL, so the stage flows they run
  record to the same server);
* one run of the scheduled retraining: ``python -m ops.serve`` serves ``retrain`` (with a
  yearly cron, so that nothing else comes due) and the round triggers one run of it through
  the API, as the scheduler or a person in the UI would;

while two pollers ask the UI's API (flow runs by start time, task-run counts, deployments,
health), one request after another, as open pages in the UI do.

Per round it reports:

* completed: runs that ended COMPLETED, of the N started (each stage run found by its seed);
* failed: runs that ended FAILED or CRASHED; lost: started but never recorded by the server
  (or whose process failed before recording); stuck: recorded but not finished when their
  process had ended (PENDING, RUNNING: the UI would show them running forever);
* 5xx: answers of 500 and above to the pollers; errors: their requests that got no answer
  within 30 s; clients on 5xx: stage flows, experiments or the serving process whose log shows
  a 5xx that Prefect's client gave up on after its own retries (they retry 503s quietly);
  database errors: "database is locked", OperationalError or pool time-outs in the server's log;
* the pollers' p50 and p95 latency, and the round's wall time.

Target: PostgreSQL completes every run, with no 5xx, at N = 16. Machines differ and a shared
one drifts: compare the backends within one run of this benchmark, not across runs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import itertools
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.harness import (
    GIT,
    NO_POSTGRES,
    PREFECT_HTTP,
    SMALL_CORPUS,
    VENV_BIN,
    copy_repo,
    load_params,
    postgres_bin,
    postgres_cluster,
    prefect_server,
    processes_under,
    run,
    site_cache_inside,
    tool_env,
    write_params,
)
from ops.server import STOP_GRACE
from pipeline.procs import WaitError, wait_until
from pipeline.procs import stop as stop_group

PY = str(VENV_BIN / "python")
TARGET = "lm@word"
DEPLOYMENT = "load"
NEVER = "0 0 1 1 *"  # the yearly cron: the served deployment runs when the round triggers it
# The real params, shrunk to a few seconds of work per stage flow (tests/conftest.py LM_PARAMS' word level).
TINY: dict[str, Any] = {
    **SMALL_CORPUS,
    "train": {
        "word": {"emb_dim": 16, "hidden": 32, "batch_size": 8, "bptt": 12, "epochs": 2, "epoch_size": 10},
    },
    "evaluate": {"batch_size": 16},
    "sample": {"word": {"count": 2, "max_tokens": 12}},
    "retrain": {"levels": ["word"]},
    "schedule": {"deployment": DEPLOYMENT},
}
ROUND_DEADLINE = 900.0  # seconds for a round's runs to end; about two minutes at N = 16 here
POLL_PAUSE = 0.2  # seconds between two requests of one poller
POLL_TIMEOUT = 30.0  # seconds before a poller's request counts as an error
POLLERS = 2
QUEUE_LOOK = 10.0  # seconds between two `dvc queue status` of a round's end
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
FAILED = {"FAILED", "CRASHED", "CANCELLED"}
# A client that gave up: Prefect's client retries a 503 quietly (at debug level), then raises this.
CLIENT_5XX = re.compile(r"Server error '5\d\d ")
DB_ERROR = re.compile(r"database is locked|OperationalError|QueuePool limit|TimeoutError")
# What open pages of the UI ask, round and round (the runs page, the dashboard's counts).
UI_REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 50}),
    ("POST", "/task_runs/count", {}),
    ("POST", "/flow_runs/count", {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING"]}}}}),
    ("POST", "/deployments/filter", {"limit": 20}),
    ("GET", "/health", None),
]


def say(line: str) -> None:
    print(line, flush=True)


# --- the UI's API, polled --------------------------------------------------------------------


@dataclass
class Polls:
    latencies: list[float] = field(default_factory=list)  # seconds, of the answers (any status)
    codes: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: int = 0  # no answer: refused, reset, or past POLL_TIMEOUT


class Poller(threading.Thread):
    """Ask the UI's requests of ``api`` one after another until ``done`` is set (or the deadline)."""

    def __init__(self, api: str, done: threading.Event, polls: Polls, lock: threading.Lock, offset: int) -> None:
        super().__init__(daemon=True)
        self.api, self.done, self.polls, self.lock, self.offset = api, done, polls, lock, offset

    def run(self) -> None:
        session = requests.Session()  # no retries: every 5xx counts
        deadline = time.monotonic() + ROUND_DEADLINE + 120
        for i in itertools.count(self.offset):
            if self.done.is_set() or time.monotonic() > deadline:
                return
            method, path, body = UI_REQUESTS[i % len(UI_REQUESTS)]
            start = time.perf_counter()
            try:
                code = session.request(method, self.api + path, json=body, timeout=POLL_TIMEOUT).status_code
            except requests.RequestException:
                code = None
            took = time.perf_counter() - start
            with self.lock:
                if code is None:
                    self.polls.errors += 1
                else:
                    self.polls.codes[code] += 1
                    self.polls.latencies.append(took)
            self.done.wait(POLL_PAUSE)


@contextlib.contextmanager
def polling(api: str) -> Iterator[Polls]:
    polls, lock, done = Polls(), threading.Lock(), threading.Event()
    threads = [Poller(api, done, polls, lock, offset=k * 2) for k in range(POLLERS)]
    for t in threads:
        t.start()
    try:
        yield polls
    finally:
        done.set()
        for t in threads:
            t.join(POLL_TIMEOUT + 5)


# --- one backend: its server, the serving process, the repositories ----------------------------


@dataclass
class Round:
    backend: str
    n: int
    started: int  # flow runs the round started: stage flows + experiments + one retraining
    completed: int = 0
    failed: int = 0
    lost: int = 0
    stuck: int = 0
    requests: int = 0
    http_5xx: int = 0
    request_errors: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    clients_5xx: int = 0
    db_errors: int = 0
    wall_s: float = 0.0
    left: list[str] = field(default_factory=list)  # processes of the round still alive after it
    notes: list[str] = field(default_factory=list)


@dataclass
class Backend:
    name: str
    api: str
    folder: Path
    server_log: Path
    env: dict[str, str]
    exp_repo: Path
    retrain_repo: Path
    deployment_id: str
    serve_log: Path


def iso(t: datetime.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def post(api: str, path: str, body: dict[str, Any]) -> Any:
    """A control call of the benchmark (not a measured one): retried on 503 like Prefect's client."""
    r = PREFECT_HTTP.post(f"{api}{path}", json=body, timeout=60)
    r.raise_for_status()
    return r.json()


def prepare_base(folder: Path, api: str) -> Path:
    """A copy of the project, shrunk (TINY) and reproduced up to the word model, committed: the
    stage flows' data, the experiments' baseline and the retraining's repository all start from it."""
    base = copy_repo(folder / "base")
    write_params(base / "params.yaml", TINY)
    env = tool_env(PREFECT_HOME=str(folder / "setup-home"), PREFECT_API_URL=api, OMP_NUM_THREADS="1")
    run(base, "dvc", "repro", TARGET, env=env)
    run(base, "git", "add", "-A", env=env)
    run(base, *GIT, "commit", "-qm", "the shrunk pipeline, reproduced", env=env)
    return base


def clone_workspace(base: Path, dest: Path, env: dict[str, str]) -> Path:
    """``base`` with its data and DVC cache, for one user of it (DVC keeps its site cache inside)."""
    shutil.copytree(base, dest, symlinks=True)
    site_cache_inside(dest)
    return dest


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@contextlib.contextmanager
def backend(
    name: str, folder: Path, base: Path, api: str | None = None, server_log: Path | None = None
) -> Iterator[Backend]:
    """The backend's database and server (or the running one at ``api``, logging to ``server_log``),
    the retraining served to it, and the repositories; all stopped on the way out."""
    folder.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        if api is None:
            url = stack.enter_context(postgres_cluster(folder / "postgres")) if name == "postgresql" else None
            api = stack.enter_context(prefect_server(folder / "server", database_url=url))
            server_log = folder / "server/server.log"
        env = tool_env(
            PREFECT_HOME=str(folder / "clients-home"),
            PREFECT_API_URL=api,
            OMP_NUM_THREADS="1",  # N processes on 2 cores: one thread each
            PREFECT_RUNNER_POLL_FREQUENCY="2",  # the served retraining picks its run up within seconds
        )
        exp_repo = clone_workspace(base, folder / "experiments", env)
        retrain_repo = clone_workspace(base, folder / "retrain", env)
        serve_log = folder / "serve.log"
        with open(serve_log, "wb") as out:
            serve = subprocess.Popen(
                [PY, "-m", "ops.serve", "--repo", str(retrain_repo), "--cron", NEVER],
                cwd=retrain_repo,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.callback(stop_group, serve, STOP_GRACE)  # SIGTERM: serve pauses its schedule and exits

        def deployment() -> dict[str, Any] | None:
            r = PREFECT_HTTP.get(f"{api}/deployments/name/retrain/{DEPLOYMENT}", timeout=30)
            return r.json() if r.ok else None

        wait_until(
            f"the served deployment retrain/{DEPLOYMENT}",
            lambda: deployment() is not None,
            ROUND_DEADLINE,
            say=say,
            alive=lambda: None if serve.poll() is None else f"serve exited: {log_tail(serve_log)}",
        )
        dep = deployment()
        assert dep is not None
        yield Backend(
            name, api, folder, server_log or folder / "server.log", env, exp_repo, retrain_repo, dep["id"], serve_log
        )


# --- one round ---------------------------------------------------------------------------------


def queue_state(repo: Path, env: dict[str, str]) -> tuple[collections.Counter[str], int]:
    """``dvc queue status``: experiments per status, and the workers still alive."""
    out = run(repo, "dvc", "queue", "status", env=env, check=False).stdout
    states: collections.Counter[str] = collections.Counter()
    workers = 0
    for line in out.splitlines():
        parts = line.split()
        if m := re.match(r"Worker status: (\d+) active, (\d+) idle", line):
            workers = int(m[1]) + int(m[2])
        elif len(parts) >= 4 and re.fullmatch(r"[0-9a-f]{7}", parts[0]):
            states[parts[-1]] += 1
    return states, workers


def file_offsets(*paths: Path) -> dict[Path, int]:
    return {p: p.stat().st_size if p.exists() else 0 for p in paths}


def count_since(offsets: dict[Path, int], pattern: re.Pattern[str]) -> int:
    total = 0
    for path, start in offsets.items():
        try:
            with open(path, "rb") as f:
                f.seek(start)
                total += len(pattern.findall(f.read().decode("utf-8", "replace")))
        except OSError:
            continue
    return total


def flow_runs_since(api: str, since: datetime.datetime) -> list[dict[str, Any]]:
    """The top-level runs of ``lm`` and ``retrain`` created since ``since`` (not their subflows)."""
    body = {
        "flows": {"name": {"any_": ["lm", "retrain"]}},
        "flow_runs": {"expected_start_time": {"after_": iso(since)}, "parent_task_run_id": {"is_null_": True}},
        "limit": 200,
    }
    return post(api, "/flow_runs/filter", body)


def run_round(b: Backend, n: int, first_seed: int, folder: Path) -> Round:
    """Start N flow runs at once against ``b``'s server, poll its API until they end, count."""
    if n < 2:
        raise ValueError(f"N must be at least 2 (an experiment and the retraining), got {n}")
    queued, direct_n = max(1, n // 4), n - max(1, n // 4) - 1
    direct_seeds = list(range(first_seed, first_seed + direct_n))
    exp_seeds = list(range(first_seed + direct_n, first_seed + direct_n + queued))
    result = Round(b.name, n, started=n)
    folder.mkdir(parents=True)

    # Untimed: queue the experiments (nothing runs until the workers start) and lay the copies.
    for seed in exp_seeds:
        run(b.exp_repo, "dvc", "exp", "run", "--queue", "-S", f"train.word.seed={seed}", TARGET, env=b.env)
    base_params = load_params(b.exp_repo / "params.yaml")
    workdirs = []
    for seed in direct_seeds:
        work = folder / f"stage-{seed}"
        shutil.copytree(b.exp_repo / "data", work / "data")
        write_params(work / "params.yaml", {"train": {"word": {"seed": seed}}}, base=base_params)
        workdirs.append(work)
    offsets = file_offsets(b.server_log)
    client_logs = file_offsets(b.serve_log)

    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    start = time.monotonic()
    procs: list[tuple[int, subprocess.Popen[bytes]]] = []
    with polling(b.api) as polls:
        retrain_run = post(b.api, f"/deployments/{b.deployment_id}/create_flow_run", {})["id"]
        with open(folder / "queue-start.log", "wb") as out:  # its workers detach; their output goes to DVC
            subprocess.run(
                ["dvc", "queue", "start", "-j", str(queued)],
                cwd=b.exp_repo,
                env=b.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )
        for seed, work in zip(direct_seeds, workdirs):
            with open(work / "stage.log", "wb") as out:
                proc = subprocess.Popen(
                    [PY, "-m", "flows.lm", "--level", "word"],
                    cwd=work,
                    env=b.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append((seed, proc))

        def retrain_state() -> str:
            r = PREFECT_HTTP.get(f"{b.api}/flow_runs/{retrain_run}", timeout=60)
            return r.json()["state"]["type"] if r.ok else "UNKNOWN"

        last_queue_look = [0.0]

        def ended() -> bool:
            """Cheap looks first: `dvc queue status` is a DVC process (a second of CPU), so it is asked
            only once the queue's processes are gone, and at most every QUEUE_LOOK seconds."""
            if any(p.poll() is None for _, p in procs) or processes_under(b.exp_repo):
                return False
            if retrain_state() not in TERMINAL or time.monotonic() - last_queue_look[0] < QUEUE_LOOK:
                return False
            last_queue_look[0] = time.monotonic()
            states, workers = queue_state(b.exp_repo, b.env)
            return not (states["Queued"] or states["Running"]) and workers == 0

        try:
            wait_until(f"the {n} runs of round N={n} on {b.name} to end", ended, ROUND_DEADLINE, say=say)
        except WaitError as e:  # the deadline: count what is there, stop what is left
            result.notes.append(str(e))
            for _, p in procs:
                stop_group(p, STOP_GRACE)
            run(b.exp_repo, "dvc", "queue", "stop", "--kill", env=b.env, check=False)
        result.wall_s = time.monotonic() - start

    # Count: every run the round started, found on the server.
    runs = flow_runs_since(b.api, since)
    lm_by_seed: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in runs:
        if r["parameters"].get("train_params"):
            lm_by_seed[int(r["parameters"]["train_params"]["seed"])].append(r)
    exit_codes = {seed: p.returncode for seed, p in procs}
    found: list[dict[str, Any]] = []
    for seed in direct_seeds + exp_seeds:
        if not lm_by_seed.get(seed):
            result.lost += 1
            why = f"exit {exit_codes[seed]}" if seed in exit_codes else "an experiment"
            result.notes.append(f"the stage flow of seed {seed} ({why}) is not on the server")
            continue
        found.append(lm_by_seed[seed][-1])
    retraining = [r for r in runs if r["id"] == retrain_run]
    if not retraining:
        result.lost += 1
        result.notes.append("the retraining run is not on the server")
    found += retraining
    for r in found:
        state = r["state"]["type"]
        if state == "COMPLETED":
            result.completed += 1
        elif state in FAILED:
            result.failed += 1
            result.notes.append(f"{r['name']}: {state}: {r['state'].get('message') or ''}"[:300])
        else:
            result.stuck += 1
            result.notes.append(f"{r['name']}: still {state} after its process ended")
    for seed, code in exit_codes.items():
        if code:
            result.notes.append(
                f"stage flow seed {seed} exited {code}: {log_tail(folder / f'stage-{seed}/stage.log', 600)}"
            )
    states, _ = queue_state(b.exp_repo, b.env)
    if states.get("Failed"):
        result.notes.append(f"dvc queue: {states['Failed']} experiment(s) failed (dvc queue logs NAME)")

    lat = sorted(polls.latencies)
    result.requests = sum(polls.codes.values()) + polls.errors
    result.http_5xx = sum(c for code, c in polls.codes.items() if code >= 500)
    result.request_errors = polls.errors
    if lat:
        result.p50_ms = 1000 * statistics.median(lat)
        result.p95_ms = 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    stage_logs = {w / "stage.log": 0 for w in workdirs}
    # The experiments' logs that the queue keeps, this round's only.
    exp_logs = {p: 0 for p in (b.exp_repo / ".dvc/tmp/exps").rglob("*.out") if p.stat().st_mtime >= since.timestamp()}
    result.clients_5xx = sum(
        count_since({path: start}, CLIENT_5XX) > 0 for path, start in {**stage_logs, **client_logs, **exp_logs}.items()
    )
    result.db_errors = count_since(offsets, DB_ERROR)

    # Nothing of the round may outlive it: the stage processes, the queue's workers and executors.
    def quiet() -> bool:
        return not processes_under(folder) and not processes_under(b.exp_repo)

    with contextlib.suppress(WaitError):  # what is left is reported below
        wait_until("the round's processes to exit", quiet, 120, say=say)
    result.left = processes_under(folder) + processes_under(b.exp_repo)
    return result


# --- the report ----------------------------------------------------------------------------------


def table(rounds: list[Round]) -> str:
    head = (
        "| backend | N | completed | failed | lost | stuck | API requests | 5xx | errors | p50 ms | p95 ms "
        "| clients on 5xx | DB errors | wall s |"
    )
    rows = [head, "|" + "---|" * 14]
    for r in rounds:
        rows.append(
            f"| {r.backend} | {r.n} | {r.completed}/{r.started} | {r.failed} | {r.lost} | {r.stuck} | {r.requests} "
            f"| {r.http_5xx} | {r.request_errors} | {r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.clients_5xx} "
            f"| {r.db_errors} | {r.wall_s:.0f} |"
        )
    return "\n".join(rows)


def verdict(rounds: list[Round], n: int) -> str | None:
    pg = [r for r in rounds if r.backend == "postgresql" and r.n == n]
    if not pg:
        return None
    r = pg[0]
    met = r.completed == r.started and r.http_5xx == 0 and not r.left
    return (
        f"target (PostgreSQL at N = {n}: every run completed, no 5xx, no process left): "
        f"{'met' if met else 'NOT met'} ({r.completed}/{r.started} completed, {r.http_5xx} 5xx, "
        f"{r.request_errors} unanswered, {len(r.left)} processes left)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, action="append", help="concurrent runs per round (repeatable; default 4 8 16)")
    ap.add_argument("--quick", action="store_true", help="one round of N = 3 per backend: a smoke run")
    ap.add_argument("--backend", action="append", choices=["sqlite", "postgresql"], help="default: both, SQLite first")
    ap.add_argument("--workdir", type=Path, help="where the copies, servers and logs go (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (its logs) afterwards")
    ap.add_argument("--json", type=Path, help="also write the rounds to this file")
    args = ap.parse_args(argv)
    ns = args.n or ([3] if args.quick else [4, 8, 16])
    backends = args.backend or ["sqlite", "postgresql"]
    if "postgresql" in backends and postgres_bin() is None:
        print(f"error: {NO_POSTGRES}", file=sys.stderr)
        return 2
    if min(ns) < 2:
        print(f"error: -n must be at least 2 (an experiment and the retraining), got {min(ns)}", file=sys.stderr)
        return 2

    work = args.workdir or Path(tempfile.mkdtemp(prefix="rnnlab-bench-server-load-"))
    work.mkdir(parents=True, exist_ok=True)
    rounds: list[Round] = []
    try:
        t0 = time.monotonic()
        say(f"setting up in {work}: a shrunk copy of the project, reproduced up to {TARGET}")
        with prefect_server(work / "setup-server") as setup_api:
            base = prepare_base(work, setup_api)
        say(f"  {time.monotonic() - t0:.0f} s")
        seed = 1000
        for name in backends:
            say(f"{name}: starting the server and serving retrain/{DEPLOYMENT}")
            with backend(name, work / name, base) as b:
                for n in ns:
                    say(f"{name}: round N = {n}")
                    r = run_round(b, n, seed, work / name / f"round-{n}")
                    seed += n
                    rounds.append(r)
                    say(table([r]).splitlines()[-1])
                    for note in r.notes:
                        say(f"    note: {note}")
            left = processes_under(work / name)
            if left:
                say(f"{name}: processes left after the backend stopped: {left}")
                rounds[-1].left += left
        say("")
        say(table(rounds))
        for n in ns:
            if line := verdict(rounds, n):
                say(line)
        say(f"total {time.monotonic() - t0:.0f} s")
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in rounds], indent=2), encoding="utf-8")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
