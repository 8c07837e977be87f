"""Progress of long work, with rate and ETA: a bar on a terminal, a line every few seconds elsewhere.

    with Progress("tokenize word", total=parquet_rows(files), unit="documents", logger=logger) as progress:
        for batch in batches:
            ...
            progress.update(batch.num_rows)

What shows, by ``RNNLAB_PROGRESS`` (``auto``, the default, picks by whether stderr is a terminal):

- ``bar``: one tqdm bar per phase on stderr, with done/total, rate and ETA. It appears once the phase
  has run ``BAR_DELAY`` seconds, so that quick phases leave no clutter; log lines print above it.
- ``lines``: a line through the caller's logger at most every ``RNNLAB_PROGRESS_SECONDS`` (default
  10) seconds, with the same numbers, and a closing line when the phase ran that long::

      rnnlab: tokenize word: 12,288/65,536 documents (18.8%), 4,096 documents/s, ETA 0:00:13

  This is what CI, log files and captured output get. (Under ``dvc repro`` run from a terminal, DVC
  passes its terminal on to the stages, which therefore draw bars.)
- ``off``: nothing; nor does anything show while the ``rnnlab`` logger is above INFO (``RNNLAB_LOG_LEVEL``).

With a bar on the console the periodic lines are still logged, marked ``rnnlab_console=False``:
pipeline/log.py's console handler skips them, and Prefect's handler sends them to the run's log.

Hooks, e.g. a Prefect progress artifact (flows/common.py), are called with a ``Snapshot`` when the
work starts, at most every ``every`` seconds of theirs, and once at the end. The totals are what is
known before the work: Parquet row counts from the files' metadata (``parquet_rows``), a file's
size in bytes, steps × epochs. The rate is the average over this run's work (a resumed training
counts from where it resumed), so the ETA includes the pauses the work makes (validations).
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

MODE_ENV = "RNNLAB_PROGRESS"
SECONDS_ENV = "RNNLAB_PROGRESS_SECONDS"
MODES = ("auto", "bar", "lines", "off")
DEFAULT_SECONDS = 10.0
BAR_DELAY = 0.5  # seconds before a bar appears: a quicker phase draws none
BAR_REFRESH = 0.5  # seconds between redraws of a bar (tqdm's default 0.1 costs more for nothing)
BYTES = "B"

_default_logger = logging.getLogger("rnnlab.pipeline.progress")


@dataclass(frozen=True)
class Snapshot:
    """Where one phase stands: what a line shows and what a hook receives."""

    desc: str
    done: float
    total: float | None
    unit: str
    elapsed: float  # seconds since the phase started
    rate: float | None  # units per second over this run's work; None before any
    final: bool = False  # the phase ended (complete, or cut short: early stop, an error)

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(100.0, 100.0 * self.done / self.total))

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, when the total is known."""
        if self.total is None or not self.rate:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def line(self) -> str:
        """``desc: done/total unit (pct%), rate unit/s, ETA h:mm:ss`` (the closing line: ``... in h:mm:ss``)."""
        done = amount(self.done, self.unit)
        shown = f"{done}/{amount(self.total, self.unit)}" if self.total is not None else done
        parts = [f"{shown} {self.unit}" if self.unit != BYTES else shown]
        if (pct := self.percent) is not None:
            parts[0] += f" ({pct:.1f}%)"
        if self.final:
            parts[0] += f" in {clock_time(self.elapsed)}"
        if self.rate is not None:
            parts.append(f"{speed(self.rate, self.unit)}")
        if not self.final and (eta := self.eta) is not None:
            parts.append(f"ETA {clock_time(eta)}")
        return f"{self.desc}: {', '.join(parts)}"


def amount(value: float | None, unit: str) -> str:
    """A count with thousands separators, or bytes in binary units."""
    if value is None:
        return "?"
    if unit == BYTES:
        return human_bytes(value)
    return f"{value:,.0f}" if float(value).is_integer() or value >= 100 else f"{value:,.2f}"


def human_bytes(n: float) -> str:
    for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(n) < 1024 or prefix == "Ti":
            return f"{n:.0f} B" if not prefix else f"{n:.1f} {prefix}B"
        n /= 1024
    raise AssertionError("unreachable")


def speed(rate: float, unit: str) -> str:
    if unit == BYTES:
        return f"{human_bytes(rate)}/s"
    return f"{rate:,.0f} {unit}/s" if rate >= 10 else f"{rate:.2f} {unit}/s"


def clock_time(seconds: float) -> str:
    """``h:mm:ss``."""
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# Reads the numbers back out of a line (of counts, not bytes): a process that follows another's
# output, as a flow follows its torchrun ranks (flows/train.py), reports their progress as its own.
_LINE = re.compile(r"^(?:rnnlab: )?(?P<desc>[^:]+): (?P<done>[\d,.]+)/(?P<total>[\d,.]+) (?P<unit>[^\s(]+) \(")


@dataclass(frozen=True)
class Seen:
    """What a progress line says: its phase, units done and in all, and the unit."""

    desc: str
    done: float
    total: float
    unit: str


def parse_line(line: str) -> Seen | None:
    """The numbers of a progress line with a known total, or None for any other line."""
    m = _LINE.match(line.strip())
    if m is None:
        return None
    return Seen(m["desc"], float(m["done"].replace(",", "")), float(m["total"].replace(",", "")), m["unit"])


def seconds_from_env() -> float:
    """``RNNLAB_PROGRESS_SECONDS``: seconds between progress lines (a positive number; default 10)."""
    value = os.environ.get(SECONDS_ENV, "").strip()
    if not value:
        return DEFAULT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not (seconds > 0 and math.isfinite(seconds)):
        _complain(f"{SECONDS_ENV}={value!r} is not a positive number of seconds; using {DEFAULT_SECONDS:g}")
        return DEFAULT_SECONDS
    return seconds


def mode_from_env() -> str:
    value = os.environ.get(MODE_ENV, "").strip().lower() or "auto"
    if value not in MODES:
        _complain(f"{MODE_ENV}={value!r} is not one of {', '.join(MODES)}; using auto")
        return "auto"
    return value


_complained: set[str] = set()


def _complain(message: str) -> None:
    if message not in _complained:  # once per process, not once per phase
        _complained.add(message)
        _default_logger.warning(message)


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # not a real file, or closed
        return False


Hook = tuple[Callable[[Snapshot], object], float]  # (called with a Snapshot, at most every this many seconds)


class Progress:
    """The progress of one phase of work (see the module docstring).

    Args:
        desc: what is done, e.g. "tokenize word"; starts each line.
        total: units the phase will do (None: unknown; no percentage or ETA then).
        unit: what is counted ("documents", "steps"; ``"B"`` shows bytes in KiB, MiB...).
        initial: units already done before this run (a resumed training's step).
        logger: where lines go (the caller's module logger).
        mode: ``bar``, ``lines``, ``off`` or ``auto``; default ``RNNLAB_PROGRESS``, else auto.
        file: the bar's stream, and the one whose being a terminal ``auto`` looks at (default stderr).
        every: seconds between lines (default ``RNNLAB_PROGRESS_SECONDS``).
        leave: keep the finished bar on screen (False for a phase inside another, e.g. a validation).
        hooks: (callable, seconds) pairs, called with Snapshots; a hook that raises is dropped with a warning.
        clock: a monotonic clock in seconds (tests give their own).
    """

    def __init__(
        self,
        desc: str,
        total: float | None = None,
        *,
        unit: str = "items",
        initial: float = 0,
        logger: logging.Logger | None = None,
        mode: str | None = None,
        file: TextIO | None = None,
        every: float | None = None,
        leave: bool = True,
        hooks: Sequence[Hook] = (),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.desc, self.total, self.unit = desc, total, unit
        self.initial = self.done = initial
        self.logger = logger or _default_logger
        self.every = every if every is not None else seconds_from_env()
        self._clock = clock
        self.start = clock()
        self.closed = False
        file = file if file is not None else sys.stderr
        mode = mode or mode_from_env()
        if mode == "auto":
            mode = "bar" if _is_terminal(file) else "lines"
        if mode != "off" and not self.logger.isEnabledFor(logging.INFO):
            mode = "off"  # quiet: RNNLAB_LOG_LEVEL=WARNING
        self.mode = mode
        # The bar is made once the phase has run BAR_DELAY seconds: a quick phase costs no tqdm at all.
        self._bar: Any = None
        self._bar_file, self._leave = file, leave
        self._bar_at = self.start + BAR_DELAY if mode == "bar" else math.inf
        self._next_line = self.start + self.every if mode != "off" else math.inf
        self._hooks: list[list[Any]] = [[call, every, self.start + every] for call, every in hooks]
        self._due = min([self._next_line, self._bar_at, *(h[2] for h in self._hooks)])
        if self._hooks:
            self._call_hooks(self.snapshot(self.start))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def snapshot(self, now: float | None = None, final: bool = False) -> Snapshot:
        elapsed = (self._clock() if now is None else now) - self.start
        work = self.done - self.initial
        rate = work / elapsed if elapsed > 0 and work > 0 else None
        return Snapshot(self.desc, self.done, self.total, self.unit, elapsed, rate, final)

    def update(self, n: float = 1) -> None:
        """``n`` more units done. Cheap: a clock read, and a line or hook call only when one is due."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._due != math.inf:
            now = self._clock()
            if now >= self._due:
                self._tick(now)

    def set(self, done: float) -> None:
        """``done`` units done in all (a position: a byte offset, a step)."""
        self.update(done - self.done)

    def set_total(self, total: float | None) -> None:
        """The total, once it is known (a feed says how many results it has on its first page)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def _open_bar(self, now: float) -> None:
        from tqdm import tqdm  # only where a bar is drawn

        unit = self.unit
        try:  # a terminal of 0 x 0 (a pty nobody sized): tqdm would draw nothing, so say 100 x 24
            size = os.get_terminal_size(self._bar_file.fileno())
            sized = size.columns > 0 and size.lines > 0
        except (AttributeError, OSError, ValueError):
            sized = False
        bar = tqdm(
            desc=self.desc,
            total=self.total,
            initial=self.initial,
            unit=f" {unit}" if unit != BYTES else "B",  # "12.5 steps/s"
            unit_scale=unit == BYTES,
            unit_divisor=1024 if unit == BYTES else 1000,
            file=self._bar_file,
            leave=self._leave,
            mininterval=BAR_REFRESH,
            dynamic_ncols=sized,
            ncols=None if sized else 100,
            nrows=None if sized else 24,
            smoothing=0.05,  # close to the average rate the lines show, yet following a change of pace
        )
        bar.start_t -= now - self.start  # the phase began before its bar: elapsed time and rate count from then
        bar.update(self.done - self.initial)
        self._bar = bar

    def _tick(self, now: float) -> None:
        if now >= self._bar_at:
            self._bar_at = math.inf
            self._open_bar(now)
        snap = None
        if now >= self._next_line:
            snap = self.snapshot(now)
            if self.total is None or self.done < self.total:  # at the end, the closing line says it
                self._log(snap)
            self._next_line = now + self.every
        due = [h for h in self._hooks if now >= h[2]]
        if due:
            snap = snap or self.snapshot(now)
            for h in due:
                h[2] = now + h[1]
            self._call_hooks(snap, due)
        self._due = min([self._next_line, self._bar_at, *(h[2] for h in self._hooks)])

    def _log(self, snap: Snapshot) -> None:
        # With a bar, the console already shows these numbers: only the other handlers take the line.
        self.logger.info(snap.line(), extra={"rnnlab_progress": True, "rnnlab_console": self.mode != "bar"})

    def _call_hooks(self, snap: Snapshot, hooks: Iterable[list[Any]] | None = None) -> None:
        for h in list(hooks if hooks is not None else self._hooks):
            try:
                h[0](snap)
            except Exception as e:  # progress must never stop the work it reports on
                self._hooks.remove(h)
                self.logger.warning(f"{self.desc}: progress reporting stopped ({type(e).__name__}: {e})")

    def close(self) -> None:
        """End the phase: close the bar, log the closing line if the phase ran ``every`` seconds, call the hooks."""
        if self.closed:
            return
        self.closed = True
        now = self._clock()
        if self._bar is not None:
            self._bar.close()
        snap = self.snapshot(now, final=True)
        if self.mode != "off" and snap.elapsed >= self.every:
            self._log(snap)
        if self._hooks:
            self._call_hooks(snap)
        self._due = math.inf


def parquet_rows(files: Iterable[str | Path]) -> int:
    """Rows of Parquet files, from their footers' metadata (no data is read)."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in files)


def file_bytes(files: Iterable[str | Path]) -> int:
    """Total size of files, in bytes."""
    return sum(os.path.getsize(f) for f in files)
