"""Logging through the standard library (pipeline/log.py): named loggers under ``rnnlab``, the short
stderr form, the level from RNNLAB_LOG_LEVEL, and Prefect's run logs through ``extra_loggers``."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run
from prefect.settings import get_current_settings

from bench.harness import ROOT
from flows.common import warn
from pipeline import log

SAY = """
import logging
from pipeline import log
log.setup()
for name in ("rnnlab.pipeline.tokenize", "rnnlab.models.trainer", "rnnlab.flows.lm"):
    logger = logging.getLogger(name)
    logger.debug(f"{name} debug")
    logger.info(f"{name} info")
    logger.warning(f"{name} warning")
"""


@pytest.fixture
def level(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set RNNLAB_LOG_LEVEL in the test; the default level comes back after it."""
    yield monkeypatch
    monkeypatch.delenv(log.LEVEL_ENV, raising=False)
    log.setup()


def said(env_level: str | None) -> list[str]:
    """The stderr lines of a process that logs at every level, with RNNLAB_LOG_LEVEL=``env_level``."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if env_level is not None:
        env[log.LEVEL_ENV] = env_level
    proc = subprocess.run([sys.executable, "-c", SAY], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    return proc.stderr.splitlines()


def test_the_environment_sets_the_level_of_every_process_and_the_form_is_short() -> None:
    assert said(None) == [
        "rnnlab: rnnlab.pipeline.tokenize info",
        "warning: rnnlab.pipeline.tokenize warning",
        "rnnlab: rnnlab.models.trainer info",
        "warning: rnnlab.models.trainer warning",
        "rnnlab: rnnlab.flows.lm info",
        "warning: rnnlab.flows.lm warning",
    ]
    assert said("WARNING") == [
        f"warning: rnnlab.{n} warning" for n in ("pipeline.tokenize", "models.trainer", "flows.lm")
    ]
    assert said("debug")[:3] == [
        "rnnlab: rnnlab.pipeline.tokenize debug",
        "rnnlab: rnnlab.pipeline.tokenize info",
        "warning: rnnlab.pipeline.tokenize warning",
    ]
    loud = said("loud")
    assert loud[0] == "warning: RNNLAB_LOG_LEVEL='loud' is not one of DEBUG, INFO, WARNING, ERROR; logging at INFO"
    assert loud[1:] == said(None)


def test_one_handler_whatever_the_calls_and_errors_keep_their_form(
    level: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    level.setenv(log.LEVEL_ENV, "INFO")
    log.setup()
    logger = log.setup()
    assert sum(isinstance(h, log.StderrHandler) for h in logger.handlers) == 1 and not logger.propagate
    logging.getLogger("rnnlab.pipeline.corpus").error("corpus: no documents")
    logging.getLogger("rnnlab.pipeline.corpus").debug("not shown")
    assert capsys.readouterr().err == "error: corpus: no documents\n"


def test_a_module_lowered_to_debug_still_prints_only_what_the_setting_asks(
    level: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    level.setenv(log.LEVEL_ENV, "WARNING")
    log.setup()
    with log.capture("rnnlab.models.trainer") as messages:
        logging.getLogger("rnnlab.models.trainer").info("epoch 1/3")
    assert messages == ["epoch 1/3"]
    assert capsys.readouterr().err == ""


def test_a_flow_warning_looks_as_it_did(level: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    log.setup()
    warn("sample.word.prime 'qqq' is not in the vocabulary")
    assert capsys.readouterr().err == "warning: sample.word.prime 'qqq' is not in the vocabulary\n"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_flows")
def test_rnnlab_loggers_reach_the_flow_runs_log_in_prefect() -> None:
    # prefect.toml (read from the repository, the tests' working directory) names the loggers.
    assert "rnnlab" in get_current_settings().logging.extra_loggers
    assert any(isinstance(h, APILogHandler) for h in logging.getLogger("rnnlab").handlers)

    @task
    def epoch() -> None:
        logging.getLogger("rnnlab.models.trainer").info("epoch 1/2 step 10: train 4.2")

    @flow
    def training() -> str:
        epoch()
        logging.getLogger("rnnlab.flows.train").warning("a flow-level warning")
        return str(flow_run.id)

    log.setup()
    run_id = training()
    APILogHandler().flush()  # the logs go to the API in batches, from a worker thread
    wanted = {"epoch 1/2 step 10: train 4.2", "a flow-level warning"}
    deadline = time.monotonic() + 120
    while True:  # waits for both records to be stored for the run
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        found = {entry.message: entry for entry in logs if entry.message in wanted}
        if found.keys() == wanted:
            break
        assert time.monotonic() < deadline, f"waited 120 s for {wanted - found.keys()} in the run's logs"
        time.sleep(0.5)
    assert found["epoch 1/2 step 10: train 4.2"].task_run_id is not None  # logged inside the task: its run
    assert found["epoch 1/2 step 10: train 4.2"].name == "rnnlab.models.trainer"
    assert found["a flow-level warning"].level == logging.WARNING
