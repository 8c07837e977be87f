"""`python -m ops.remote` (`make remote-local`, `make push`, `make pull`): its errors, and the
local-folder remote it adds.

The round trip itself (push, a teammate's clone pulls, `dvc repro` finds nothing to do, `rnnlab
sample` uses the pulled model) runs once, over SSH, in tests/test_ssh_remote.py; the scheduled
retraining of tests/test_schedule_server.py pushes to a local-folder remote.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.harness import run, site_cache_inside, tool_env
from ops import remote
from pipeline import dvc_remote


def test_push_without_a_remote_says_how_to_add_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = tool_env()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run(tmp_path, "dvc", "init", "-q", env=env)
    site_cache_inside(tmp_path)
    for verb in ("push", "pull"):
        assert remote.main(["--repo", str(tmp_path), verb]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: no DVC remote is configured in") and err.count("\n") == 1, err
        assert "make remote-local REMOTE=" in err and "dvc remote add -d team" in err and "dvc-s3" in err

    assert remote.main(["--repo", str(tmp_path), "push", "-r", "nas"]) == 2
    assert "no DVC remote named 'nas'" in capsys.readouterr().err

    store = tmp_path / "team-remote"
    assert remote.main(["--repo", str(tmp_path), "add-local", str(store)]) == 0
    assert dvc_remote.default_remote(tmp_path) == "team"  # what push and pull use from now on
