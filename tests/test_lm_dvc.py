"""The default pipeline under real DVC on a shrunk config: `rnnlab repro` with one Prefect server for the
whole run, the runs it leaves for the UI, DVCLive's metrics and plots, and the rerun rules of the lm stage
under plain `dvc repro` and `dvc exp run -S` (each flow then starts its own temporary server)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness import GIT, PREFECT_HTTP, VENV_BIN, copy_repo, run, tool_env, write_params
from ops.server import local_server, port_taken
from pipeline.io import read_json
from tests.conftest import LM_PARAMS
from tests.support import ran

DATA_STAGES = {"corpus", *(f"{s}@{lvl}" for s in ("tokenize", "vocab", "windows") for lvl in ("word", "char"))}
MODEL_STAGES = {"lm@word", "lm@char", "skipgram"}


@dataclass(frozen=True)
class Built:
    repo: Path
    env: dict[str, str]
    output: str  # what `rnnlab repro` printed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    repo = copy_repo(tmp_path_factory.mktemp("lm-dvc") / "repo")
    write_params(repo / "params.yaml", LM_PARAMS)
    env = tool_env()
    for name in ("PREFECT_HOME", "PREFECT_API_URL"):  # the project's prefect.toml decides: .prefect/ in the repo
        env.pop(name, None)
    proc = run(repo, str(VENV_BIN / "rnnlab"), "repro", env=env)
    yield Built(repo, env, proc.stdout + proc.stderr)


@pytest.mark.slow
def test_rnnlab_repro_runs_every_stage_against_one_server_then_stops_it(built: Built) -> None:
    assert ran(built.output) == DATA_STAGES | MODEL_STAGES
    (api,) = re.findall(r"started a Prefect server for this run at (http://127\.0\.0\.1:\d+/api)", built.output)
    assert "Starting temporary server" not in built.output  # no stage started a server of its own
    assert not port_taken(int(api.rsplit(":", 1)[1].split("/")[0]))  # and the run's server is gone
    for stage in DATA_STAGES | MODEL_STAGES:  # each stage reported its own work (bench/repro.py reads these)
        assert re.search(rf"rnnlab: stage {re.escape(stage)} worked [0-9.]+ s", built.output), stage


@pytest.mark.slow
def test_the_runs_persist_for_a_later_server(built: Built, tmp_path: Path) -> None:
    """What `make server` then shows: every flow run of every stage, from the project's .prefect/."""
    env = {**built.env, "PREFECT_HOME": str(built.repo / ".prefect")}
    with local_server(log=tmp_path / "server.log", env=env) as api:
        runs = PREFECT_HTTP.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
        flows = {f["id"]: f["name"] for f in PREFECT_HTTP.post(f"{api}/flows/filter", json={}, timeout=30).json()}
        ui = PREFECT_HTTP.get(f"{api.removesuffix('/api')}/ui-settings", timeout=30).json()
    names = sorted(flows[r["flow_id"]] for r in runs)
    # Per level: the lm flow and its four subflows; then skipgram.
    assert names == sorted(["lm", "train", "ngram", "evaluate", "sample"] * 2 + ["skipgram"]), names
    assert {r["state"]["type"] for r in runs} == {"COMPLETED"}
    assert ui["api_url"] == api  # the UI of a server on another port than 4200 talks to its own API


@pytest.mark.slow
def test_dvclive_metrics_fit_a_screen_and_plots_have_one_row_per_epoch(built: Built) -> None:
    shown = run(built.repo, "dvc", "metrics", "show", env=built.env)
    assert "failed to load" not in shown.stdout + shown.stderr  # tasks/dvc.yaml never ran: no warning
    lines = shown.stdout.splitlines()
    assert max(map(len, lines)) <= 140, shown.stdout  # seven flat columns, the best epoch's among them
    header = lines[0].split()
    assert header[0] == "Path" and {
        "test_perplexity",
        "test_bits",
        "oracle_gap",
        "ngram_perplexity",
        "best_epoch",
        "valid_loss",
    } <= set(header)
    oracle = read_json(built.repo / "data/corpus/oracle.json")
    for level in ("word", "char"):
        art = built.repo / "artifacts" / level
        evaluation = read_json(art / "evaluation.json")
        for split in ("valid", "test"):
            assert evaluation[split]["tokens"] == oracle[level][split]["targets"]
            assert evaluation[split]["oracle_gap"] > 0.99
        metrics = read_json(art / "metrics.json")
        assert metrics["test_perplexity"] == evaluation["test"]["perplexity"]
        assert metrics["best_epoch"] == evaluation["test"]["epoch"]
        for curve in ("train_loss", "valid_loss"):
            assert (art / "plots/metrics" / f"{curve}.tsv").read_text().count("\n") == 1 + 2  # header + 2 epochs
        assert len((art / "samples.txt").read_text().splitlines()) == 3  # 2 samples + the greedy line
    # The data stages' statistics are files to open, not metrics that widen the table.
    corpus = run(built.repo, "dvc", "metrics", "show", "data/metrics/corpus.json", env=built.env).stdout
    assert "splits.train.docs" in corpus


@pytest.mark.slow
def test_plain_dvc_repro_keeps_the_rerun_rules(built: Built, prefect_api: str) -> None:
    env = built.env  # no PREFECT_API_URL: a flow stage starts a temporary server (prefect.toml's deadline)
    assert ran(run(built.repo, "dvc", "repro", env=env).stdout) == set()  # nothing changed: nothing runs

    # Forced: DVC runs the stage, and the training inside is a cache hit on its fingerprint.
    forced = run(built.repo, "dvc", "repro", "-f", "-s", "lm@word", env=env)
    assert "Starting temporary server" in forced.stdout + forced.stderr
    assert "cache hit: checkpoint" in forced.stdout + forced.stderr and "epoch 1/2" not in forced.stderr

    env = {**env, "PREFECT_API_URL": prefect_api}  # the rest records to a server, as `rnnlab dvc exp run` does

    # A sampling param re-samples without retraining; a training param retrains; char is untouched.
    run(built.repo, "git", "add", "-A", env=env)
    run(built.repo, *GIT, "commit", "-qm", "baseline: params and dvc.lock", env=env)
    samples = (built.repo / "artifacts/word/samples.txt").read_text()
    exp = run(built.repo, "dvc", "exp", "run", "-S", "sample.word.temperature=0.5", env=env)
    assert ran(exp.stdout) == {"lm@word"} and "cache hit: checkpoint" in exp.stdout + exp.stderr
    assert (built.repo / "artifacts/word/samples.txt").read_text() != samples
    exp = run(built.repo, "dvc", "exp", "run", "-S", "train.word.lr=0.02", env=env)
    assert ran(exp.stdout) == {"lm@word"} and "epoch 1/2" in exp.stdout + exp.stderr
    diff = run(built.repo, "dvc", "metrics", "diff", env=env).stdout
    assert "artifacts/word/metrics.json" in diff and "test_perplexity" in diff
    assert "artifacts/char/metrics.json" not in diff

    # `dvc exp show --only-changed`: the experiments' varying params beside the metrics, a few columns.
    table = run(built.repo, "dvc", "exp", "show", "--only-changed", "--csv", env=env).stdout
    columns = table.splitlines()[0].split(",")
    assert {"sample.word.temperature", "train.word.lr"} <= set(columns) and len(columns) < 30, columns
