"""The language-model stages under real DVC and ephemeral Prefect: train, evaluate and sample at
both levels on a shrunk config, then the caching rule and `dvc exp run -S` on top of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.io import read_json
from tests.conftest import LM_PARAMS
from tests.support import copy_repo, run, tool_env, write_params

LM_STAGES = {f"{s}@{lvl}" for s in ("train", "evaluate", "sample") for lvl in ("word", "char")}


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.mark.slow
def test_repro_trains_evaluates_samples_then_caches(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    write_params(repo / "params.yaml", LM_PARAMS)
    env = tool_env(PREFECT_HOME=str(repo / ".prefect"))
    env.pop("PREFECT_API_URL", None)  # ephemeral mode: no server configured

    out = run(repo, "dvc", "repro", env=env).stdout
    assert LM_STAGES <= ran(out)
    oracle = read_json(repo / "data/corpus/oracle.json")
    for level in ("word", "char"):
        art = repo / "artifacts" / level
        assert (art / "checkpoints/last.pt").is_file()
        assert (art / "history.csv").read_text().count("\n") == 1 + 2  # header + 2 epochs
        metrics = read_json(art / "metrics.json")
        for split in ("valid", "test"):
            assert metrics[split]["tokens"] == oracle[level][split]["targets"]
            assert metrics[split]["oracle_gap"] > 0.99
        assert len((art / "samples.txt").read_text().splitlines()) == 3  # 2 samples + the greedy line

    assert ran(run(repo, "dvc", "repro", env=env).stdout) == set()  # nothing changed: nothing runs

    # Forced rerun: DVC runs the stage, Prefect's cache (same fingerprint) skips the training.
    forced = run(repo, "dvc", "repro", "-f", "-s", "train@word", env=env)
    assert "cache hit: checkpoint" in forced.stdout + forced.stderr and "epoch 1/2" not in forced.stderr

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(repo, "git", "add", "-A", env=env)
    run(repo, *git, "commit", "-qm", "baseline", env=env)
    exp = run(repo, "dvc", "exp", "run", "-S", "train.word.lr=0.02", "evaluate@word", env=env).stdout
    assert ran(exp) == {"train@word", "evaluate@word"}  # only what reads train.word
    diff = run(repo, "dvc", "metrics", "diff", env=env).stdout
    assert "artifacts/word/metrics.json" in diff and "test.perplexity" in diff
    assert "artifacts/char/metrics.json" not in diff
