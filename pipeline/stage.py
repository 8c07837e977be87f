"""What every stage declares to DVC, and the shared shape of a stage's ``main``.

Each stage module exposes ``spec(...) -> StageSpec``, the exact params, deps
and outs of its dvc.yaml entry. ``tests/test_dvc_yaml.py`` checks dvc.yaml
against these specs, and ``main`` loads only ``spec.params``, so the
declarations cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import RnnlabError
from pipeline.params import LEVELS, PARAMS_FILE

# Imported by every stage but unable to change a stage's output bytes: error
# messages, argument parsing, and path names (which dvc.yaml repeats anyway).
# Editing them should not rerun the pipeline, so they are not declared as deps.
NOT_DEPS = ("pipeline/errors.py", "pipeline/stage.py", "pipeline/paths.py")


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


def run(body: Callable[[], object], setup: Callable[[], object] | None = None) -> int:
    """Run a stage body; print a user error as one clean message (exit 2).

    ``setup`` runs first, untimed (waiting for a server is not the stage's work). Under DVC
    (which names the stage in ``DVC_STAGE``) one line reports how long the body worked, so
    that ``bench/repro.py`` can tell the stages' own work from what surrounds it.
    """
    try:
        if setup is not None:
            setup()
        start = time.perf_counter()
        try:
            body()
        finally:
            if stage_name := os.environ.get("DVC_STAGE"):
                print(f"rnnlab: stage {stage_name} worked {time.perf_counter() - start:.3f} s", file=sys.stderr)
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
