"""Helpers only tests use: which stages a run ran, a history without its wall-clock, a word model trained,
Prefect artifacts, a poll with a deadline, and headless Chromium.

What tests share with the benchmarks (a throwaway copy of the repository, params, data, servers)
is in bench/harness.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest


def ran(output: str) -> set[str]:
    """The stages that ``dvc repro`` (or ``rnnlab repro``) says it ran, from its output."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def deterministic(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A training history without its wall-clock ("seconds"), which no two runs share."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def run_train(level: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """The lm stage's train subflow on ``params_file``, as the stage calls it (needs a Prefect API)."""
    from flows import lm, train
    from flows.common import tokenizer_settings
    from pipeline.params import load_params as load_typed

    cfg = load_typed(lm.spec(level).params, params_file)
    return train.train(level, cfg[f"train.{level}"], tokenizer_settings(level, cfg[f"tokenize.{level}"]))


def train_word_model(fingerprint: str) -> None:
    """Train params.yaml's word model in the working directory (``lm_workdir``), where the CLI and
    ``evaluate`` look for its checkpoint, through the Trainer alone (no Prefect)."""
    from flows.common import tokenizer_settings
    from models.lm import lm_trainer
    from pipeline import paths
    from pipeline.params import read_params
    from pipeline.vocab import Vocab

    p = read_params("params.yaml")
    run = {
        "fingerprint": fingerprint,
        "tokenizer": tokenizer_settings("word", p.tokenize.word),
        "vocab_path": str(paths.vocab("word")),
    }
    vocab = Vocab.load(paths.vocab("word"))
    lm_trainer(p.train.word, paths.windows("word"), paths.checkpoints("word"), vocab, run).fit()


def latest_artifact(key: str, deadline_s: float = 120.0) -> str:
    """The data of the newest Prefect artifact under ``key``: markdown, a table's JSON, a link's URL.

    Asked of the configured API's ``/artifacts/filter`` with the key alone. Prefect 3.8.8's client
    sends a null for each filter it is not given, which its server rejects with a 422, and empty
    flow-run and task-run filters join the artifact to its task run: a task's artifact was then listed
    only once the server had recorded the task run from its events, up to a minute later on a busy
    machine. An artifact exists as soon as its task has created it (a direct API call); the poll is
    for a server that stores it a moment later.
    """
    from prefect.settings import get_current_settings

    from bench.harness import PREFECT_HTTP
    from pipeline.procs import WaitError, wait_until

    url = f"{get_current_settings().api.url}/artifacts/filter"
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}
    found: list[Any] = []

    def listed() -> bool:
        r = PREFECT_HTTP.post(url, json=body, timeout=10)
        r.raise_for_status()
        found[:] = r.json()
        return bool(found)

    try:
        wait_until(f"the Prefect artifact {key!r}", listed, deadline_s)
    except WaitError:
        raise AssertionError(f"no artifact with key {key!r} after {deadline_s:.0f} s") from None
    return found[0]["data"]


def latest_table(key: str) -> list[dict[str, Any]]:
    """The rows of the newest table artifact under ``key`` (Prefect stores a table as JSON)."""
    return json.loads(latest_artifact(key))


def wait_for(what: str, check: Any, timeout: float, log: Path | None) -> Any:
    """Poll ``check`` until it returns something true; fail after ``timeout`` s saying what was awaited."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            tail = f"; serve log:\n{log.read_text()[-6000:]}" if log else ""
            raise AssertionError(f"waited {timeout:.0f} s for {what}, in vain{tail}")
        time.sleep(1)
    return found


# --- headless Chromium (tests/test_schedule_server.py: the Prefect UI; tests/test_lm_dvc.py: the plots page) ---

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, as root in a container without a GPU or a network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed: `make test` installs Debian's package "
    "when run as root with apt (apt-get install chromium); otherwise install it to run this check",
)


def chromium(*args: str, user_data: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", *args],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
