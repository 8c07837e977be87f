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

How it ends, in one last line:

* SIGINT or SIGTERM (Ctrl-C, ``kill``, ``timeout``, CI's cancel), however this was launched
  (a terminal, ``cmd &`` in a script, nohup): DVC, the running stage and everything under them
  are stopped as a process tree (pipeline/procs.py), then the server; exit 130 or 143 with a line
  naming the stage that was interrupted and how to resume.
* A stage that refused a user error (its ``error: ...`` line, collected through the file that
  RNNLAB_ERROR_FILE names): that line again, exit 2. Otherwise DVC's own exit code.
* A (nearly) full filesystem under the workspace or the DVC cache when DVC failed: its path and
  free space.
* The server dying: how it ended and the last words of its log; the run is stopped.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ops import server
from pipeline import dvc_remote, paths, procs, stage
from pipeline.errors import RnnlabError, refuse

DEAD_SERVER_GRACE = 3.0  # seconds: stages cannot record their end without the server, so waiting is for nothing


class QueueError(RnnlabError):
    """A dvc command that starts queue workers, with no lasting Prefect server for them."""


def say(line: str) -> None:
    print(f"rnnlab: {line}", file=sys.stderr, flush=True)


def run_dvc(args: Sequence[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
    """``dvc ARGS`` in its own process group, with default signal handling (so that it can be
    stopped whole, whatever launched us) and ``extra`` in its environment."""
    return procs.start([str(dvc_remote.DVC), *args], env=dvc_remote.env(extra))


def starts_workers(args: Sequence[str]) -> bool:
    """Whether ``dvc ARGS`` starts DVC's queue workers, which outlive the dvc command itself."""
    return list(args[:2]) == ["queue", "start"] or (list(args[:2]) == ["exp", "run"] and "--run-all" in args)


def check_workers(args: Sequence[str], api: str | None) -> None:
    """Refuse queue workers unless they have a server that outlives them (PREFECT_API_URL)."""
    if starts_workers(args) and not api:
        raise QueueError(
            f"`dvc {' '.join(args[:2])}` starts queue workers that outlive this command, and so would outlive "
            "the Prefect server rnnlab starts for it; give them a server that stays up: `make server` in another "
            "terminal, `export PREFECT_API_URL=http://127.0.0.1:4200/api`, then this command again "
            "(`dvc queue stop` ends the workers)"
        )


def resume_command(dvc_args: Sequence[str]) -> str:
    """The rnnlab command that runs ``dvc ARGS`` again."""
    if list(dvc_args[:1]) == ["repro"]:
        return shlex.join(["rnnlab", "repro", *dvc_args[1:]])
    return shlex.join(["rnnlab", "dvc", *dvc_args])


@dataclass
class Outcome:
    """How the dvc command ended: its exit code, and the line to print last (after the server stopped)."""

    code: int
    last: str | None = None
    stopped: list[str] | None = None  # interrupted: the stages that were running


def interrupted(signum: int, stages: list[str]) -> Outcome:
    return Outcome(128 + signum, stopped=stages)


def stopped_line(signum: int, stages: Sequence[str], again: str, since: float, server: bool) -> str:
    """The one line an interrupted run ends with: what stopped, what is kept, how to resume."""
    what = f"stage {', '.join(stages)}" if stages else "DVC between stages"
    who = "DVC, its stages and the Prefect server" if server else "DVC and its stages"
    return (
        f"rnnlab: {procs.signal_name(signum)} interrupted {what}; {who} stopped in {time.monotonic() - since:.1f} s. "
        f"Finished stages are kept (dvc.lock); `{again}` resumes, training from its last checkpoint"
    )


def with_server(args: Sequence[str], signals: procs.Signals, again: str, port: int | None = None) -> Outcome:
    """Run ``dvc ARGS`` against one Prefect server, started here unless PREFECT_API_URL names one."""
    api = server.configured_api()
    check_workers(args, api)
    if api:
        say(f"stages record to the Prefect API at {api} (PREFECT_API_URL)")
        outcome = supervise(args, api, None, signals, again)
        if outcome.stopped is not None and signals.received is not None:
            outcome.last = stopped_line(signals.received, outcome.stopped, again, signals.at, server=False)
        return outcome
    home = server.prefect_home()
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
        outcome = supervise(args, srv.api, srv, signals, again)
    finally:
        srv.stop()
    if outcome.stopped is not None and signals.received is not None:  # one line says it all
        outcome.last = stopped_line(signals.received, outcome.stopped, again, signals.at, server=True)
    else:
        say(
            f"stopped the Prefect server; its runs stay in {home}/: `make server` shows them at http://127.0.0.1:4200/runs"
        )
    return outcome


def supervise(args: Sequence[str], api: str, srv: server.Server | None, signals: procs.Signals, again: str) -> Outcome:
    """Run dvc and wait for it; stop its whole tree on SIGINT or SIGTERM, or if the server dies under it."""
    if signals.received is not None:  # before anything started
        return interrupted(signals.received, [])
    errors = error_file(args)
    extra = {"PREFECT_API_URL": api} | ({stage.ERROR_FILE_ENV: errors} if errors else {})
    try:
        dvc = run_dvc(args, extra)
        ready_at: float | None = None
        start = time.monotonic()
        while dvc.poll() is None:
            if signals.received is not None:
                stages = procs.environ_values(dvc, "DVC_STAGE")
                procs.stop(dvc)
                return interrupted(signals.received, stages)
            if srv is not None:
                if (reason := srv.exited()) is not None:
                    stages = procs.environ_values(dvc, "DVC_STAGE")
                    procs.stop(dvc, DEAD_SERVER_GRACE)
                    where = f" under stage {', '.join(stages)}" if stages else ""
                    raise server.ServerError(
                        f"{reason}. The run was stopped{where} (finished stages are kept); fix what the log says "
                        f"and run `{again}` again, or start a server yourself (`make server`) and set "
                        "PREFECT_API_URL to it"
                    )
                if ready_at is None and procs.healthy(srv.api, timeout=1.0):
                    ready_at = time.monotonic() - start
                    say(f"the Prefect server answers after {ready_at:.1f} s; UI at {srv.api.removesuffix('/api')}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                dvc.wait(procs.WAIT_POLL)
        if signals.received is not None and dvc.returncode != 0:  # dvc ended as the signal came
            return interrupted(signals.received, [])
        return failed(dvc.returncode, errors, again)
    finally:
        if errors:
            with contextlib.suppress(OSError):
                os.unlink(errors)


def error_file(args: Sequence[str]) -> str | None:
    """A new empty file for the stages' ``error:`` lines; None for queue workers (they outlive it)
    or when the temporary folder cannot hold even that."""
    if starts_workers(args):
        return None
    try:
        fd, path = tempfile.mkstemp(prefix="rnnlab-errors-", suffix=".txt")
    except OSError:
        return None
    os.close(fd)
    return path


def failed(code: int, errors: str | None, again: str) -> Outcome:
    """DVC's exit code, or 2 when a stage refused a user error; the line to end on."""
    if code == 0:
        return Outcome(0)
    if code < 0:  # killed by a signal: as a shell reports it
        code = 128 - code
    lines: list[str] = []
    if errors:
        with contextlib.suppress(OSError):
            lines = [x for x in Path(errors).read_text(encoding="utf-8").splitlines() if x.strip()]
    full = full_disk(again)
    if lines:
        return Outcome(2, lines[-1] + (f"\n{full}" if full else ""))
    return Outcome(code, full)


def dvc_cache_dir() -> Path | None:
    """Where DVC's cache is (``dvc cache dir``), or None when DVC cannot say."""
    proc = subprocess.run([str(dvc_remote.DVC), "cache", "dir"], capture_output=True, text=True, env=dvc_remote.env())
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


def full_disk(again: str, root: Path | None = None) -> str | None:
    """One line naming each (nearly) full filesystem under the workspace or the DVC cache, or None."""
    folders = stage.workspace_folders(root or Path.cwd())
    if (cache := dvc_cache_dir()) is not None:
        folders.append(cache)
    if not (full := stage.full_filesystems(folders)):
        return None
    return (
        f"error: the run failed while a filesystem it writes is (nearly) full: {'; '.join(full)}. Free some "
        f"space there (or move the DVC cache: `dvc cache dir PATH`) and run `{again}` again: finished stages are kept"
    )


def main(dvc_args: Sequence[str], port: int | None = None, again: str | None = None) -> int:
    """``rnnlab repro|dvc`` (and ``rnnlab recipe``): run dvc with one Prefect server; the exit code.

    ``again`` is the command that resumes the run, for the last line of an interrupted one.
    """
    again = again or resume_command(dvc_args)
    try:
        with procs.Signals() as signals:
            outcome = with_server(dvc_args, signals, again, port)
    except RnnlabError as e:
        return refuse(e)
    if outcome.last:
        print(outcome.last, file=sys.stderr, flush=True)
    if outcome.code == 0 and list(dvc_args[:1]) == ["repro"]:
        show_plots()
    return outcome.code


def show_plots() -> None:
    """Render the DVC plots to ``paths.PLOTS_PAGE`` (the bundled vega: it opens offline), which
    the lm flows' ``<level>-plots`` link artifacts point at; a failure only costs the page."""
    proc = subprocess.run(
        [str(dvc_remote.DVC), "plots", "show"], env=dvc_remote.env({}), capture_output=True, text=True
    )
    if proc.returncode == 0:
        say(f"plots: {paths.PLOTS_PAGE} (opens offline in a browser)")
    else:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        say(f"`dvc plots show` failed ({lines[-1] if lines else f'exit {proc.returncode}'}); the run itself is done")
