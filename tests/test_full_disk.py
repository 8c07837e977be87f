"""A full disk: a run that fails while the workspace's filesystem (data/ on a small tmpfs) or the DVC
cache's is (nearly) full says so in its last line, with the path and the free space; no traceback,
nothing left running, and once there is room the rerun completes without redoing what finished.

A small filesystem needs ``mount -t tmpfs`` (root, and a container that allows it); without it
these tests skip and say why.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import VENV_BIN, copy_repo, run, tool_env, write_params
from tests.conftest import LM_PARAMS
from tests.procsupport import Launched, none_left

SIZE = "100k"  # less than the word level's data stages write with these params (about 190 KiB)
RNNLAB = str(VENV_BIN / "rnnlab")


@contextlib.contextmanager
def small_filesystem(where: Path) -> Iterator[Path]:
    """A SIZE tmpfs mounted at ``where``, unmounted after; skip when this machine cannot mount one."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command here: a full-disk test needs a small filesystem")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a {SIZE} tmpfs here ({proc.stderr.strip() or f'exit {proc.returncode}'}); "
            "a full-disk test needs root in a machine or container that allows mount"
        )
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)  # something still had it open


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = copy_repo(tmp_path / "repo")
    write_params(path / "params.yaml", LM_PARAMS)
    env = tool_env(PREFECT_HOME=str(tmp_path / "prefect-home"))
    # Only data stages run, and they need no Prefect: an API URL keeps rnnlab from starting a server.
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    return path, env


def fails_saying_full(path: Path, env: dict[str, str], log: Path, full: Path) -> str:
    """Run ``rnnlab repro windows@word``; check it fails with the full filesystem ``full`` named last."""
    launched = Launched.start([RNNLAB, "repro", "windows@word"], path, env, log)
    code = launched.proc.wait(600)
    out = launched.output()
    assert code not in (0, 2), out[-6000:]  # DVC's code: a full disk is not a refusal of the user's input
    assert "Traceback" not in out, out[-6000:]
    last = out.strip().splitlines()[-1]
    assert re.match(
        rf"error: the run failed while a filesystem it writes is \(nearly\) full: {re.escape(str(full))} "
        r"\([0-9.]+ (bytes|KiB) free of 100\.0 KiB\)\. Free some space there",
        last,
    ), out[-6000:]
    assert last.endswith("run `rnnlab repro windows@word` again: finished stages are kept")
    assert none_left(launched.mark) == []
    print(f"full disk: {last}")
    return out


@pytest.mark.slow
def test_a_full_workspace_is_named_in_the_last_line(repo: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    path, env = repo
    with small_filesystem(path / "data"):
        out = fails_saying_full(path, env, tmp_path / "full.log", path / "data")
        # The stage that hit the full disk said so in one line too, with the free space.
        assert re.search(r"(?m)^error: No space left on device.*\(nearly\) full: \S+/data \(", out), out[-6000:]
    # Room again (data/ back on the big disk, empty): what finished comes back from DVC's cache.
    again = run(path, RNNLAB, "repro", "windows@word", env=env)
    assert "Running stage 'corpus'" not in again.stdout + again.stderr


@pytest.mark.slow
def test_a_full_dvc_cache_is_named_in_the_last_line(repo: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    path, env = repo
    dvc = str(VENV_BIN / "dvc")
    with small_filesystem(tmp_path / "cache") as cache:
        run(path, dvc, "cache", "dir", "--local", str(cache), env=env)
        fails_saying_full(path, env, tmp_path / "full.log", cache)
    run(path, dvc, "config", "--local", "--unset", "cache.dir", env=env)
    run(path, RNNLAB, "repro", "windows@word", env=env)  # with room, the same command completes
