"""Scheduled retraining for real: `python -m ops.serve` against a real Prefect server, on a shrunk config.

One module-scoped scenario: a throwaway repo with a local DVC remote is served every few
seconds; two scheduled runs complete (the first promotes, the second, on the same data
and params, keeps the promoted model); then the schedule is paused and everything this
module started is stopped. The tests check the runs through the server's API, the UI in
headless Chromium, and a failing retrain.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.harness import PREFECT_HTTP, VENV_BIN, copy_repo, load_params, run, tool_env, write_params
from models import registry
from models.registry import read_promoted
from ops.server import STOP_GRACE
from pipeline import paths
from pipeline.io import sha256_file
from pipeline.procs import stop as stop_group
from tests.conftest import LM_PARAMS
from tests.support import chromium, needs_chromium, wait_for

DEPLOYMENT = "every-few-seconds"
INTERVAL = 5  # seconds; runs that come due while one is going wait (serve's limit=1)
RUN_TIMEOUT = 600  # seconds for both runs; ~45 s here
UI_TIMEOUT = 300  # seconds for the UI to list them; one or two page loads here


@dataclass(frozen=True)
class Scenario:
    api: str
    repo: Path
    remote: Path
    env: dict[str, str]
    runs: list[dict[str, Any]]  # the two completed scheduled runs, oldest first
    serve_log: str


def post(api: str, path: str, body: dict[str, Any]) -> Any:
    r = PREFECT_HTTP.post(f"{api}{path}", json=body, timeout=10)
    r.raise_for_status()
    return r.json()


def deployment_runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
    return post(api, "/flow_runs/filter", body)


@pytest.fixture(scope="module")
def scenario(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("schedule")
    repo = copy_repo(tmp / "repo")
    write_params(
        repo / "params.yaml",
        {
            **LM_PARAMS,
            "retrain": {"levels": ["word"]},  # one level: half the work
            "schedule": {"deployment": DEPLOYMENT, "cron": None, "interval": INTERVAL},
        },
    )
    env = tool_env(
        PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_API_URL=prefect_api, PREFECT_RUNNER_POLL_FREQUENCY="2"
    )
    remote = tmp / "remote"
    run(repo, str(VENV_BIN / "python"), "-m", "ops.remote", "add-local", str(remote), env=env)

    log = tmp / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "ops.serve"],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"{prefect_api}/deployments/name/retrain/{DEPLOYMENT}"
        dep = wait_for(
            "the deployment", lambda: (r := PREFECT_HTTP.get(url, timeout=10)).ok and r.json(), UI_TIMEOUT, log
        )

        def started(n: int) -> list[dict[str, Any]] | None:
            runs = [r for r in deployment_runs(prefect_api, dep["id"]) if r["start_time"]]
            bad = [r for r in runs if r["state"]["type"] in ("FAILED", "CRASHED", "CANCELLED")]
            assert not bad, f"a scheduled run failed: {bad[0]['state']}\n{log.read_text()[-6000:]}"
            return runs if len(runs) >= n else None

        wait_for("a second scheduled run to start", lambda: started(2), RUN_TIMEOUT, log)
        # No third run: pausing deletes the runs that came due meanwhile (they would wait their turn).
        PREFECT_HTTP.post(f"{prefect_api}/deployments/{dep['id']}/pause_deployment", timeout=10).raise_for_status()
        runs = wait_for(
            "two completed runs",
            lambda: r if len(r := [x for x in started(2) or [] if x["state"]["type"] == "COMPLETED"]) >= 2 else None,
            RUN_TIMEOUT,
            log,
        )
    finally:
        stop_group(serve, STOP_GRACE)
    yield Scenario(prefect_api, repo, remote, env, runs[:2], log.read_text())


def promotion_markdown(api: str, run_id: str) -> str:
    arts = post(
        api,
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["promotion-word"]}}, "flow_runs": {"id": {"any_": [run_id]}}},
    )
    assert len(arts) == 1, arts
    return arts[0]["data"]


@pytest.mark.slow
def test_two_scheduled_runs_complete_the_first_promotes_the_second_keeps(scenario: Scenario) -> None:
    first, second = scenario.runs
    assert first["state"]["type"] == second["state"]["type"] == "COMPLETED"
    assert first["parameters"]["repo"] == str(scenario.repo)  # the deployment's parameters, from serve
    assert "Decision: **promoted**. nothing was promoted yet" in promotion_markdown(scenario.api, first["id"])
    kept = promotion_markdown(scenario.api, second["id"])
    assert "Decision: **kept**. the new checkpoint is byte for byte the promoted one" in kept  # same data, params

    # The registry points at the trained checkpoint, and `dvc add registry` tracks it.
    record = read_promoted(scenario.repo, "word")
    assert record is not None and record["flow_run"]["id"] == first["id"]
    ckpt = paths.model_file(scenario.repo / paths.checkpoints("word"))  # the best epoch's weights are promoted
    promoted = scenario.repo / record["model"] / registry.CHECKPOINT
    assert record["checkpoint_sha256"] == sha256_file(ckpt) == sha256_file(promoted)
    assert record["metrics"]["valid"]["perplexity"] > 1 and record["split"] == "valid"
    assert (scenario.repo / "registry.dvc").is_file()
    model = scenario.repo / record["model"]  # usable as it is, vocabulary included
    out = run(
        scenario.repo,
        str(VENV_BIN / "rnnlab"),
        "sample",
        "--checkpoint",
        str(model),
        "--vocab",
        str(model / "vocab.json"),
        "--prime",
        "the",
        "--json",
        env=scenario.env,
    ).stdout
    assert json.loads(out)["samples"][0]["text"].startswith("the")
    # Each run pulled from and pushed to the team's remote: the registry's files are there.
    status = run(scenario.repo, "dvc", "status", "--cloud", env=scenario.env).stdout
    assert "Cache and remote 'team' are in sync" in status, status
    # The stage flows DVC started recorded to the same server (PREFECT_API_URL was passed on).
    body = {"flows": {"name": {"any_": ["train"]}}, "flow_runs": {"start_time": {"after_": first["start_time"]}}}
    assert post(scenario.api, "/flow_runs/filter", body), "the train stage's flow run is not on the server"


@pytest.mark.slow
@needs_chromium
def test_the_ui_shows_the_scheduled_runs(scenario: Scenario, tmp_path: Path) -> None:
    """The server's flow-runs page in headless Chromium lists both scheduled runs; a screenshot is kept."""
    folder = Path(os.environ.get("RNNLAB_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    url = scenario.api.removesuffix("/api") + "/runs"
    # The UI is a JS app that fetches the runs after it loads: reload it until they appear, however
    # long a busy machine makes that take, up to UI_TIMEOUT. Each load gets some virtual time to render.
    page = ["--window-size=1400,1400", "--virtual-time-budget=10000"]
    attempts = iter(range(1_000_000))

    def listed() -> str | None:
        dom = chromium(*page, "--dump-dom", url, user_data=tmp_path / f"chromium-dom-{next(attempts)}").stdout
        links = all(f'href="/runs/flow-run/{r["id"]}"' in dom for r in scenario.runs)  # each run, a link to its page
        named = re.search(r'class="[^"]*flow-router-link__anchor[^"]*">retrain<', dom)
        return dom if links and named else None

    wait_for(f"the UI at {url} to list both scheduled `retrain` runs", listed, UI_TIMEOUT, log=None)
    shot = folder / "prefect-ui-runs.png"
    proc = chromium(*page, f"--screenshot={shot}", url, user_data=tmp_path / "chromium-shot")
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-3000:]
    print(f"screenshot of {url}: {shot}")


@pytest.mark.slow
def test_a_failed_repro_fails_the_run_with_the_stage_error_and_keeps_the_promoted_model(scenario: Scenario) -> None:
    pointer = scenario.repo / "registry/word.json"
    before = pointer.read_bytes()
    params = load_params(scenario.repo / "params.yaml")
    params["train"]["word"]["cell"] = "nosuchcell"  # valid params, refused when the model is built
    write_params(scenario.repo / "params.yaml", {}, base=params)

    proc = run(scenario.repo, str(VENV_BIN / "python"), "-m", "flows.retrain", env=scenario.env, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "\nerror: `dvc repro lm@word` failed" in proc.stderr, proc.stderr[-3000:]
    assert "unknown cell 'nosuchcell'" in proc.stderr  # the stage's own message
    assert pointer.read_bytes() == before  # the promoted model is untouched

    # On the server: the run FAILED, and its logs carry the stage's error.
    body = {"flows": {"name": {"any_": ["retrain"]}}, "sort": "START_TIME_DESC", "limit": 1}
    (failed,) = post(scenario.api, "/flow_runs/filter", body)
    assert failed["state"]["type"] == "FAILED", failed["state"]
    logs = post(scenario.api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [failed["id"]]}}, "limit": 200})
    assert any("unknown cell 'nosuchcell'" in entry["message"] for entry in logs)
