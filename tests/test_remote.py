"""Sharing through a DVC remote: a teammate clones, pulls, and uses the model without retraining.

Repo A reproduces the pipeline (shrunk) and pushes to a local-folder remote, configured
with `python -m ops.remote add-local` (`make remote-local`) and committed with the code.
Repo B is a `git clone` of A: it pulls, `dvc repro` finds nothing to do, and `rnnlab
sample` runs on the pulled model. The vocabulary and windows B gets are A's, byte for byte.

Both reproduce the word-level language model's stages (and everything they depend on) rather
than every stage of dvc.yaml: the same round trip, in half the time, and it stays as short as
dvc.yaml grows.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bench.harness import GIT, VENV_BIN, copy_repo, run, tool_env, write_params
from ops import remote
from pipeline import dvc_remote
from tests.conftest import LM_PARAMS

PY = str(VENV_BIN / "python")
TARGETS = ("lm@word",)


def commit(repo: Path, message: str, env: dict[str, str]) -> None:
    run(repo, "git", "add", "-A", env=env)
    run(repo, *GIT, "commit", "-qm", message, env=env)


@pytest.mark.slow
def test_a_clone_pulls_instead_of_retraining(tmp_path: Path, prefect_api: str) -> None:
    a = copy_repo(tmp_path / "a")
    write_params(a / "params.yaml", LM_PARAMS)
    # A real server records the stage flows: no temporary server per stage (ENVIRONMENT.md).
    env = tool_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=prefect_api)
    store = tmp_path / "team-remote"

    run(a, PY, "-m", "ops.remote", "add-local", str(store), env=env)
    run(a, "dvc", "repro", *TARGETS, env=env)
    pushed = run(a, PY, "-m", "ops.remote", "push", env=env)
    assert re.search(r"\d+ files? pushed", pushed.stdout + pushed.stderr), pushed.stdout
    commit(a, "pipeline, dvc.lock and the team's remote", env)

    b = tmp_path / "b"
    run(tmp_path, "git", "clone", "-q", str(a), str(b), env=env)
    run(b, "dvc", "config", "--local", "core.site_cache_dir", str(b / ".dvc-site"), env=env)
    assert dvc_remote.default_remote(b) == "team"  # .dvc/config came with the clone
    assert not (b / "artifacts").exists() and not (b / "data").exists()
    run(b, PY, "-m", "ops.remote", "pull", env=env)

    repro = run(b, "dvc", "repro", *TARGETS, env=env)
    assert "Running stage" not in repro.stdout, repro.stdout  # nothing to rebuild, nothing to retrain
    assert run(b, "dvc", "status", *TARGETS, env=env).stdout.strip() == "Data and pipelines are up to date."
    # The data both members train on is the same, byte for byte (dvc.lock pins its hashes).
    for f in ("data/vocab/word.json", "data/windows/word/meta.json", "artifacts/word/checkpoints/last.pt"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f

    before = (b / "artifacts/word/checkpoints/last.pt").stat().st_mtime_ns
    out = run(b, str(VENV_BIN / "rnnlab"), "sample", "--prime", "the", "--count", "2", "--json", env=env).stdout
    samples = json.loads(out)["samples"]
    assert len(samples) == 2 and all(s["text"].startswith("the") for s in samples)
    assert (b / "artifacts/word/checkpoints/last.pt").stat().st_mtime_ns == before  # used, not retrained


@pytest.mark.slow
def test_push_without_a_remote_says_how_to_add_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = tool_env()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run(tmp_path, "dvc", "init", "-q", env=env)
    run(tmp_path, "dvc", "config", "--local", "core.site_cache_dir", str(tmp_path / ".dvc-site"), env=env)
    for verb in ("push", "pull"):
        assert remote.main(["--repo", str(tmp_path), verb]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: no DVC remote is configured in") and err.count("\n") == 1, err
        assert "make remote-local REMOTE=" in err and "dvc remote add -d team" in err and "dvc-s3" in err

    assert remote.main(["--repo", str(tmp_path), "push", "-r", "nas"]) == 2
    assert "no DVC remote named 'nas'" in capsys.readouterr().err
