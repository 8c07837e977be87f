"""Child processes that start with default signal handling and stop whole, whatever launched us;
and waits for what they serve.

    proc = start([dvc, "repro"], env=env)    # its own process group; SIGINT and SIGTERM at their defaults
    ...
    stop(proc)                                # SIGTERM to the group and every descendant, SIGKILL after a grace
    wait_until("the server", lambda: healthy(api), 60.0)   # polled against a deadline, saying what it waits for

Why both halves matter:

* A shell starts a background job (``cmd &`` in a script) with SIGINT ignored, ``nohup`` and
  some service managers do the same, and an ignored signal stays ignored across ``exec``. A
  child started plainly from such a process would never stop on SIGINT. ``start`` puts SIGINT
  and SIGTERM back to their default actions, unblocked, in the child before it runs.
* A child that is a tree (``dvc`` → shell → ``python -m flows.lm`` → torchrun, which opens a
  session of its own) is stopped whole: the process group, plus every descendant found before
  the first signal (an orphan leaves the tree once its parent exits). What has not exited after
  the grace is killed, so that nothing outlives the command that started it: a stage whose
  Prefect server died retries the dead API for minutes otherwise.

No Prefect and no torch here: ops/repro.py, ops/server.py, flows/retrain.py and
flows/train.py (torchrun) share these, and a flow stage waits here for its Prefect API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import psutil  # a dependency of DVC's, so always installed with it

from pipeline.errors import RnnlabError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_GRACE = 10.0  # seconds a stopped tree may take to exit (a stage records its end in Prefect) before SIGKILL
KILL_WAIT = 5.0  # seconds to wait for SIGKILLed processes to be gone
POLL = 0.1
WAIT_POLL = 0.5  # seconds between two looks at a condition that ``wait_until`` waits for
REPORT_EVERY = 15.0  # seconds between two "still waiting" lines


def default_signals() -> None:
    """SIGINT and SIGTERM at their default actions and unblocked (a ``preexec_fn``: runs in the child)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def start(cmd: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(cmd, **popen)`` in a new session (its own process group), with default
    SIGINT and SIGTERM whatever this process inherited."""
    return subprocess.Popen(list(cmd), start_new_session=True, preexec_fn=default_signals, **popen)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def ended(returncode: int) -> str:
    """How a process ended, in words: "was killed by SIGKILL" or "exited with code 3"."""
    return f"was killed by {signal_name(-returncode)}" if returncode < 0 else f"exited with code {returncode}"


def _group(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(p.pid) == pgid:
                out.append(p)
    return out


def tree(pid: int) -> list[psutil.Process]:
    """The process group that ``pid`` leads and every descendant of ``pid``, in or out of it."""
    found = {p.pid: p for p in _group(pid)}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        found.setdefault(pid, root)
        for p in root.children(recursive=True):
            found.setdefault(p.pid, p)
    for p in list(found.values()):  # descendants of group members whose parent is already gone
        with contextlib.suppress(psutil.Error):
            for c in p.children(recursive=True):
                found.setdefault(c.pid, c)
    return list(found.values())


def _alive(p: psutil.Process) -> bool:
    try:  # is_running also checks the start time: a reused pid is not ours
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _send(procs: Sequence[psutil.Process], pgid: int, sig: int) -> None:
    """``sig`` to group ``pgid``, and to each of ``procs`` outside it (once each: a second SIGTERM
    would interrupt a stage while it records its end)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for p in procs:
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(p.pid) != pgid:
                p.send_signal(sig)  # psutil checks that the pid still names the same process


def _wait(proc: subprocess.Popen[Any], procs: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while True:
        proc.poll()  # reap our own child, so that it does not linger as a zombie
        left = [p for p in procs if _alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)


def stop(proc: subprocess.Popen[Any], grace: float = STOP_GRACE, sig: int = signal.SIGTERM) -> list[str]:
    """Stop ``proc`` (started by ``start``) and everything under it; return what had to be SIGKILLed.

    ``sig`` goes to its process group and to every descendant, then, after ``grace`` seconds,
    SIGKILL to whatever is left, including processes that joined the group meanwhile.
    """
    procs = tree(proc.pid)
    if not any(_alive(p) for p in procs) and proc.poll() is not None:
        return []
    _send(procs, proc.pid, sig)
    left = _wait(proc, procs, grace)
    left += [p for p in tree(proc.pid) if _alive(p) and p not in left]
    killed = []
    for p in left:
        with contextlib.suppress(psutil.Error):
            killed.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
    if left:
        _send(left, proc.pid, signal.SIGKILL)
        _wait(proc, left, KILL_WAIT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_WAIT)
    return killed


def stream(
    cmd: Sequence[str], log: Callable[[str], object], tail: int = 40, grace: float = STOP_GRACE, **popen: Any
) -> tuple[int, list[str]]:
    """Run ``cmd`` (``start``), passing each line of its merged stdout and stderr to ``log``;
    return its exit code and last ``tail`` lines. Whatever interrupts the caller (SIGTERM,
    Prefect cancelling the run, an exception in ``log``) stops the command's whole tree first."""
    lines: deque[str] = deque(maxlen=tail)
    proc = start(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1, **popen)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # streamed, so that a long command shows its progress as it goes
            line = line.rstrip("\n")
            lines.append(line)
            log(line)
        proc.wait()
    finally:
        if proc.poll() is None:
            stop(proc, grace)
        proc.stdout.close()
    return proc.returncode, list(lines)


def environ_values(proc: subprocess.Popen[Any], name: str) -> list[str]:
    """The distinct values of environment variable ``name`` among ``proc``'s tree (e.g. DVC_STAGE)."""
    values: list[str] = []
    for p in tree(proc.pid):
        with contextlib.suppress(psutil.Error):
            if (v := p.environ().get(name)) and v not in values:
                values.append(v)
    return values


class Signals:
    """SIGINT and SIGTERM caught while inside the ``with`` block: ``received`` holds the first one.

    Installed whatever this process inherited (ignored by a background job's shell, blocked by
    a parent), so that ``rnnlab repro &`` stops on SIGINT as it does in a terminal. The handler
    only notes the signal: the caller's loop stops its children and says what happened.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.at = 0.0  # time.monotonic() when it arrived
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received, self.at = signum, time.monotonic()

    def __enter__(self) -> Signals:
        self._previous = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class WaitError(RnnlabError):
    """What ``wait_until`` waited for did not come in time, or can no longer come."""


def wait_until(
    what: str,
    done: Callable[[], bool],
    deadline_s: float,
    *,
    say: Callable[[str], object] = print,
    alive: Callable[[], str | None] = lambda: None,
    hint: str = "",
) -> float:
    """Poll ``done()`` until it holds; return the seconds it took.

    Says once what it waits for, then every REPORT_EVERY seconds that it still waits.
    ``alive()`` returns a reason to give up early (the awaited process died), or None.
    Raises WaitError naming ``what``, the time waited and ``hint`` at the deadline.
    """
    start = time.monotonic()
    next_report = start + REPORT_EVERY
    said = False
    while not done():
        now = time.monotonic()
        if (reason := alive()) is not None:
            raise WaitError(f"gave up waiting for {what}: {reason}" + (f"; {hint}" if hint else ""))
        if now - start > deadline_s:
            raise WaitError(f"waited {deadline_s:.0f} s for {what}, in vain" + (f"; {hint}" if hint else ""))
        if not said:
            say(f"waiting for {what} (up to {deadline_s:.0f} s)")
            said = True
        elif now >= next_report:
            say(f"still waiting for {what} ({now - start:.0f} s so far)")
            next_report = now + REPORT_EVERY
        time.sleep(WAIT_POLL)
    return time.monotonic() - start


def healthy(api: str, timeout: float = 5.0) -> bool:
    """Whether ``{api}/health`` answers 200 now (a Prefect API)."""
    import requests  # here: a training's process tree needs no HTTP client

    try:
        return requests.get(f"{api.rstrip('/')}/health", timeout=timeout).ok
    except requests.RequestException:
        return False
