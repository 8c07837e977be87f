"""``rnnlab repro``: ``dvc repro`` (or any dvc command) with one Prefect server for the whole run.

    rnnlab repro                          # make run: the default pipeline
    rnnlab repro lm@word -f               # any `dvc repro` arguments pass through
    rnnlab dvc exp run -S train.word.lr=0.01    # any dvc command, e.g. an experiment

Every flow stage needs a Prefect API. Without ``PREFECT_API_URL`` each stage process would
start a temporary server of its own, about 10 s apiece. Instead this starts one
``prefect server`` on a free port of 127.0.0.1 (state in Prefect's home, ``.prefect/`` per the
project's prefect.toml, so the runs persist and a later ``make server`` shows them), runs the
dvc command with every stage pointed at it, and stops it afterwards. The server starts while
DVC runs the data stages, which need no Prefect: the first flow stage waits until the API
answers (flows.common.stage_main), with the deadline prefect.toml sets.

With ``PREFECT_API_URL`` set (a team server, or ``make server``), the stages record there and
nothing is started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from flows import remote, server
from pipeline.errors import RnnlabError


def prefect_home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home)


def say(line: str) -> None:
    print(f"rnnlab: {line}", file=sys.stderr, flush=True)


def run_dvc(args: Sequence[str], api: str | None) -> subprocess.Popen[bytes]:
    """``dvc ARGS`` in its own process group (so that it can be stopped whole), stages pointed at ``api``."""
    extra = {"PREFECT_API_URL": api} if api else {}
    return subprocess.Popen([str(remote.DVC), *args], env=remote.env(extra), start_new_session=True)


def interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C for dvc and its running stage: what finished stays, outputs are atomic."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)


def with_server(args: Sequence[str], port: int | None = None) -> int:
    """Run ``dvc ARGS`` against one Prefect server; return dvc's exit code."""
    api = server.configured_api()
    if api:
        say(f"stages record to the Prefect API at {api} (PREFECT_API_URL)")
        return supervise(run_dvc(args, api), None)
    home = prefect_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise server.ServerError(
            f"cannot make Prefect's home {home} ({e.strerror}); set PREFECT_HOME to a folder "
            "you can write, or home in prefect.toml"
        ) from None
    srv = server.Server(port, log=home / "server.log")
    say(f"started a Prefect server for this run at {srv.api} (state in {home}/, log in {srv.log})")
    try:
        code = supervise(run_dvc(args, srv.api), srv)
    finally:
        srv.stop()
    say(f"stopped the Prefect server; its runs stay in {home}/: `make server` shows them at http://127.0.0.1:4200/runs")
    return code


def supervise(dvc: subprocess.Popen[bytes], srv: server.Server | None) -> int:
    """Wait for dvc; pass Ctrl-C and SIGTERM on to it; stop it if the server dies under it."""
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        interrupt(dvc)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    ready_at: float | None = None
    start = time.monotonic()
    try:
        while dvc.poll() is None:
            if srv is not None and not stopping:
                if (reason := srv.exited()) is not None:
                    server.stop(dvc)  # its whole group, quietly (SIGTERM): the error below says why
                    raise server.ServerError(
                        f"{reason}. The run was stopped (finished stages are kept); fix what the log says and "
                        "run again, or start a server yourself (`make server`) and set PREFECT_API_URL to it"
                    )
                if ready_at is None and server.healthy(srv.api, timeout=1.0):
                    ready_at = time.monotonic() - start
                    say(f"the Prefect server answers after {ready_at:.1f} s; UI at {srv.api.removesuffix('/api')}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                dvc.wait(server.POLL)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return dvc.returncode


def main(dvc_args: Sequence[str], port: int | None = None) -> int:
    try:
        return with_server(dvc_args, port)
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
