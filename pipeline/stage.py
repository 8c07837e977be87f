"""What every stage declares to DVC, and the shared shape of a stage's ``main``.

Each stage module exposes ``spec(...) -> StageSpec``, the exact params, deps
and outs of its dvc.yaml entry. ``tests/test_dvc_yaml.py`` checks dvc.yaml
against these specs, and ``main`` loads only ``spec.params``, so the
declarations cannot drift from the code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pipeline import log
from pipeline.errors import USER_ERROR, RnnlabError, refuse
from pipeline.params import LEVELS
from pipeline.paths import PARAMS_FILE


@dataclass(frozen=True)
class StageSpec:
    """One dvc.yaml stage: the dotted params keys, and the paths it reads and writes."""

    params: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()


def parser(doc: str | None, *, level: bool = False) -> argparse.ArgumentParser:
    """An argument parser with the options every stage shares."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    if level:
        p.add_argument("--level", choices=LEVELS, required=True, help="token level")
    return p


# A command that runs stages (rnnlab repro) names a file here; a stage that refuses a user error
# appends its `error: ...` line to it, so that the command can exit 2 and repeat the line, where
# DVC would only report that the stage failed.
ERROR_FILE_ENV = "RNNLAB_ERROR_FILE"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the stage stops as on Ctrl-C (``finally`` blocks run, atomic
    outputs are discarded), and exits 128 + the signal's number without a traceback."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_stopping: int | None = None  # the signal that stops this process, once one has arrived


def stopping() -> int | None:
    """The signal that is stopping this stage, or None (flows/common.py quiets Prefect's logs then)."""
    return _stopping


class Failed(Exception):
    """A failure that is not the user's but is told in full by its message (exit 1, no traceback)."""


def note_stop(signum: int) -> None:
    """Record that ``signum`` stops this process (also for a signal another handler took first).

    Under DVC the stage then falls silent: whatever stopped it (rnnlab repro, or DVC itself) says
    so in one line, and a library's parting words (a client that cannot reach its server any
    more) would only bury that line.
    """
    global _stopping
    if _stopping is None:
        _stopping = signum
        if os.environ.get("DVC_STAGE"):
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)


_raised = False


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    global _raised
    note_stop(signum)
    if not _raised:  # once: a second signal would interrupt the cleanup that the first one started
        _raised = True
        raise Stopped(signum)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_handler(handler: Callable[[int, FrameType | None], object]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM while inside, the previous handlers after; in the main thread
    only (elsewhere nothing changes: Python runs signal handlers in the main thread alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, signal.SIG_DFL if before is None else before)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise Stopped while inside; the previous handlers come back after."""
    with _stop_handler(_raise_stopped):
        yield


@contextlib.contextmanager
def stops_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside wait until the block has ended, then take effect as
    they would have (whatever handler was there: ``stop_signals``', Prefect's in a flow run, or none).

    For a write that an exception half-way would turn into another error: ``torch.save`` interrupted
    inside its zip writer raises a RuntimeError ("unexpected pos"), not the stop. The wait lasts
    one file write. In the main thread only (the only one Python runs signal handlers in).
    """
    arrived: list[int] = []
    try:
        with _stop_handler(lambda signum, _frame: arrived.append(signum)):
            yield
    finally:
        for s in dict.fromkeys(arrived):  # each signal once, in the order they came, to the handler now back
            signal.raise_signal(s)


def record_error(line: str) -> bool:
    """Under a command that named a file in ERROR_FILE_ENV, append ``line`` there (that command repeats it
    as its last line, after DVC's own report of the failed stage); whether it was appended."""
    if path := os.environ.get(ERROR_FILE_ENV):
        try:  # appended only if the command still waits for it: never creates a stray file
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            return False  # the command is gone: the stage says it itself
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(line.replace("\n", " ") + "\n")
        return True
    return False


NEARLY_FULL = 256 * 2**20  # bytes free below which a filesystem counts as (nearly) full...
NEARLY_FULL_SHARE = 0.01  # ...or this share of its size


def size(n: float) -> str:
    """Bytes for people: "812 bytes", "80.0 KiB", "3.4 GiB"."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} bytes" if i == 0 else f"{n:.1f} {units[i]}"


def workspace_folders(root: str | Path) -> list[Path]:
    """The workspace and each of its top-level folders: data/ or artifacts/ may be mounts of their own."""
    root = Path(root)
    folders = [root]
    with contextlib.suppress(OSError):
        folders += sorted(p for p in root.iterdir() if p.is_dir() and p.name != ".git")
    return folders


def full_filesystems(folders: Iterable[str | Path]) -> list[str]:
    """Each (nearly) full filesystem among ``folders``, once, as "FOLDER (X free of Y)"."""
    seen: set[int] = set()
    full = []
    for folder in folders:
        try:
            dev = os.stat(folder).st_dev
            usage = shutil.disk_usage(folder)
        except OSError:
            continue
        if dev not in seen:
            seen.add(dev)
            if usage.free < NEARLY_FULL or usage.free < NEARLY_FULL_SHARE * usage.total:
                full.append(f"{folder} ({size(usage.free)} free of {size(usage.total)})")
    return full


def no_space(e: OSError) -> str:
    """A full disk in one line: where (the file, else the workspace's full filesystems) and how much is free."""
    folders: list[str | Path] = []
    if e.filename:
        folder = os.path.dirname(os.path.abspath(e.filename))
        while folder and not os.path.exists(folder):
            folder = os.path.dirname(folder)
        folders.append(folder)
    full = full_filesystems([*folders, *workspace_folders(os.getcwd())])
    where = f" writing {e.filename}" if e.filename else ""
    return (
        f"error: {e.strerror}{where}; (nearly) full: {'; '.join(full) or 'a filesystem this stage writes'}; "
        "free some space there and run again"
    )


def run(body: Callable[[], object], setup: Callable[[], object] | None = None) -> int:
    """Run a stage body; print a user error as one clean message (exit 2, ``pipeline.errors.refuse``).

    ``setup`` runs first, untimed (waiting for a server is not the stage's work). Under DVC
    (which names the stage in ``DVC_STAGE``) one line reports how long the body worked, so
    that ``bench/repro.py`` can tell the stages' own work from what surrounds it. SIGINT and
    SIGTERM stop the body as Ctrl-C does, quietly: exit 130 or 143, the caller says what stopped.
    A full disk is one line too (exit 1): the file and the free space, no traceback.
    """
    global _stopping, _raised
    _stopping, _raised = None, False
    log.setup()
    try:
        with stop_signals():
            if setup is not None:
                setup()
            start = time.perf_counter()
            try:
                body()
            finally:
                if (stage_name := os.environ.get("DVC_STAGE")) and _stopping is None:
                    print(f"rnnlab: stage {stage_name} worked {time.perf_counter() - start:.3f} s", file=sys.stderr)
    except RnnlabError as e:
        if record_error(f"error: {e}"):  # said once, last, by the command that runs the stages
            return USER_ERROR
        return refuse(e)
    except Failed as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Stopped) else (_stopping or signal.SIGINT)
        note_stop(signum)
        return 128 + signum
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        print(no_space(e), file=sys.stderr, flush=True)
        return 1
    return 0
