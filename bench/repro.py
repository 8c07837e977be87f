"""Where the default run's time goes: the stages' own work against everything around it.

    python -m bench.repro                 # a copy of the working tree, `rnnlab repro` from clean data
    python -m bench.repro --rev 738648b   # a clone of a commit instead (its stages must print work lines)

In a temporary copy (fresh data, fresh Prefect state: what `make run` meets on a new machine)
this runs the main command once, timestamping every line it prints, then the no-op run. It
prints, from that one run:

* the total wall time;
* the summed work of the stages: each stage prints ``rnnlab: stage NAME worked S s`` about its
  body, everything after its imports and after any wait for the Prefect server
  (pipeline/stage.py);
* the share of the wall time spent outside that work (target: at most 25 %): process starts and
  imports, DVC's bookkeeping between stages, the server start when a stage has to wait for it;
* a table per stage: wall time from DVC's "Running stage" line to the next, work, and the rest;
* the no-op ``dvc repro`` (target: under 3 s) and the no-op ``rnnlab repro`` (which also starts
  and stops a server), the median of three each.

Machines differ and a shared one drifts: compare figures from one run, not across runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RUNNING = re.compile(r"^Running stage '([^']+)':")
WORKED = re.compile(r"^rnnlab: stage (\S+) worked ([0-9.]+) s")
OVERHEAD_TARGET = 0.25
NOOP_TARGET = 3.0


@dataclass
class Stage:
    name: str
    start: float
    end: float = 0.0
    work: float | None = None


@dataclass
class Run:
    wall: float
    code: int
    stages: list[Stage] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @property
    def work(self) -> float:
        return sum(s.work or 0.0 for s in self.stages)


def env() -> dict[str, str]:
    """This venv first on PATH (stages run `python -m ...`); no Prefect server of the caller's."""
    out = dict(os.environ)
    out["PATH"] = f"{VENV_BIN}{os.pathsep}{out.get('PATH', '')}"
    out["PYTHONUNBUFFERED"] = "1"
    for name in ("PREFECT_API_URL", "PREFECT_HOME", "DVC_STAGE"):
        out.pop(name, None)
    return out


def checkout(rev: str | None, dest: Path) -> Path:
    """The working tree as a fresh clone would have it (bench.harness.copy_repo), or a clone of ``rev``."""
    from bench.harness import copy_repo, site_cache_inside

    if rev is None:
        return copy_repo(dest)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=dest, check=True)
    site_cache_inside(dest)  # shared with other runs otherwise
    return dest


def timed_run(cmd: list[str], cwd: Path, echo: bool) -> Run:
    """Run ``cmd``, stamping each output line with the seconds since the start."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = Run(0.0, 0)
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.monotonic() - start
        line = line.rstrip("\n")
        run.log.append(f"{now:7.2f}  {line}")
        if echo:
            print(f"{now:7.2f}  {line}", flush=True)
        if m := RUNNING.match(line):
            if run.stages:
                run.stages[-1].end = now
            run.stages.append(Stage(m.group(1), now))
        elif (m := WORKED.match(line)) and run.stages and run.stages[-1].name == m.group(1):
            run.stages[-1].work = float(m.group(2))
    run.code = proc.wait()
    run.wall = time.monotonic() - start
    if run.stages:
        run.stages[-1].end = run.wall
    return run


def noop(cmd: list[str], cwd: Path, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, check=False)
        times.append(time.monotonic() - start)
        if proc.returncode != 0 or "didn't change" not in proc.stdout + proc.stderr:
            raise SystemExit(f"{' '.join(cmd)} was not a no-op (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return statistics.median(times)


def report(run: Run, noop_dvc: float, noop_rnnlab: float) -> None:
    outside = run.wall - run.work
    print(f"\n{'stage':<16} {'wall s':>8} {'work s':>8} {'rest s':>8}")
    for s in run.stages:
        work = "-" if s.work is None else f"{s.work:8.2f}"
        rest = "-" if s.work is None else f"{s.end - s.start - s.work:8.2f}"
        print(f"{s.name:<16} {s.end - s.start:8.2f} {work:>8} {rest:>8}")
    first = run.stages[0].start if run.stages else run.wall
    print(f"{'(before the first stage)':<25} {first:8.2f}")
    print(f"\ntotal wall time              {run.wall:8.2f} s")
    print(f"stages' own work (summed)    {run.work:8.2f} s")
    share = outside / run.wall
    print(
        f"outside the stages' work     {outside:8.2f} s = {share:.1%} of the wall time "
        f"(target ≤ {OVERHEAD_TARGET:.0%}: {'met' if share <= OVERHEAD_TARGET else 'NOT met'})"
    )
    print(
        f"no-op `dvc repro`            {noop_dvc:8.2f} s (median of 3; target < {NOOP_TARGET:g} s: "
        f"{'met' if noop_dvc < NOOP_TARGET else 'NOT met'})"
    )
    print(f"no-op `rnnlab repro`         {noop_rnnlab:8.2f} s (median of 3; also starts and stops a server)")
    missing = [s.name for s in run.stages if s.work is None]
    if missing:
        print(f"note: no work line from {', '.join(missing)}: counted as overhead")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", help="clone this commit instead of copying the working tree")
    ap.add_argument("--cmd", default="rnnlab repro", help="the main command (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone and print where it is")
    ap.add_argument("--quiet", action="store_true", help="do not echo the run's output")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="rnnlab-bench-repro-"))
    try:
        repo = checkout(args.rev, tmp / "repo")
        cmd = args.cmd.split()
        cmd[0] = str(VENV_BIN / cmd[0])
        what = f"a clone of {args.rev}" if args.rev else "a copy of the working tree"
        print(f"{what} in {repo}; running `{args.cmd}` from clean data", flush=True)
        run = timed_run(cmd, repo, echo=not args.quiet)
        if run.code != 0:
            print("\n".join(run.log[-40:]))
            raise SystemExit(f"the run failed (exit {run.code})")
        report(run, noop([str(VENV_BIN / "dvc"), "repro"], repo), noop([*cmd[:1], "repro"], repo))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
