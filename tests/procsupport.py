"""Helpers for the tests that stop runs: a launched command's output, its processes, its end.

Every command a test launches carries a mark in its environment (``RNNLAB_TEST_MARK``), which
each process under it inherits (dvc, the shell, the stage, the Prefect server, torchrun), so
that "no process is left" means: no live process with this mark, wherever it was reparented.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

MARK = "RNNLAB_TEST_MARK"
START_TIMEOUT = 300.0  # seconds for a run to reach the point where a test stops it (busy 2-core machine)
STOP_LIMIT = 30.0  # seconds a stopped run may take, signal to exit, everything under it included


def marked(env: dict[str, str]) -> tuple[dict[str, str], str]:
    """``env`` plus a fresh mark; the mark."""
    mark = uuid.uuid4().hex
    return {**env, MARK: mark}, mark


def left(mark: str, *, but: tuple[int, ...] = ()) -> list[str]:
    """Live processes that carry ``mark`` (pids in ``but`` aside), as "pid command"."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid in but or p.status() == psutil.STATUS_ZOMBIE or p.environ().get(MARK) != mark:
                continue
            out.append(f"{p.pid} {' '.join(p.cmdline())[:160]}")
        except psutil.Error:
            continue
    return out


def none_left(mark: str, within: float = 5.0, *, but: tuple[int, ...] = ()) -> list[str]:
    """Poll until no process carries ``mark`` (an orphan is reaped by init a moment after it exits);
    return what is still there after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (found := left(mark, but=but)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


@dataclass
class Launched:
    """A command started in its own session with its output in a file."""

    proc: subprocess.Popen[bytes]
    log: Path
    mark: str
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> Launched:
        env, mark = marked(env)
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return cls(proc, log, mark)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        """Poll the output until ``pattern`` appears ``count`` times; fail if the command ends first."""
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.output())) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"ended ({self.proc.returncode}) before {pattern!r}:\n{self.output()[-6000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:.0f} s for {pattern!r}, in vain:\n{self.output()[-6000:]}")
            time.sleep(0.2)

    def stop_with(self, sig: int, pid: int | None = None, group: bool = False) -> tuple[int, float, str]:
        """Send ``sig`` (to ``pid``, default the command; or to its whole process group, as a
        terminal's Ctrl-C does); wait for the end. Returns the exit status, the seconds from the
        signal to the end, and the output written after the signal."""
        before = len(self.output())
        sent = time.monotonic()
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            os.kill(self.proc.pid if pid is None else pid, sig)
        try:
            code = self.proc.wait(STOP_LIMIT * 4)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            tail = self.output()[-6000:]
            raise AssertionError(f"still running {STOP_LIMIT * 4:.0f} s after {sig!r}:\n{tail}") from None
        return code, time.monotonic() - sent, self.output()[before:]


def lock_outs(repo: Path, stages: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Each stage's outputs in dvc.lock: (path, md5) pairs; what an interruption must not lose."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    return {s: sorted((o["path"], o.get("md5", "")) for o in lock[s].get("outs", [])) for s in stages}
