"""The project's Prefect server plumbing (ops/server.py, ops/repro.py): the UI on any port, waits that
poll with a deadline and say what they wait for, and one clear error line when a server cannot serve."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bench.harness import VENV_BIN, copy_repo, run, tool_env, write_params
from ops.server import STOP_GRACE, free_port
from pipeline.procs import WaitError, healthy, stop, wait_until

RNNLAB = str(VENV_BIN / "rnnlab")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port that something listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    return line


@pytest.mark.slow
def test_rnnlab_server_points_its_ui_at_its_own_port(tmp_path: Path) -> None:
    """`make server PREFECT_PORT=N`: the UI's pages must call the API on N, not Prefect's default :4200."""
    port = free_port()
    env = tool_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [RNNLAB, "server", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(
            f"rnnlab server at {api}",
            lambda: healthy(api),
            300,
            alive=lambda: None if server.poll() is None else f"it exited ({server.returncode})",
        )
        settings = requests.get(f"http://127.0.0.1:{port}/ui-settings", timeout=30).json()
        assert settings["api_url"] == api
    finally:
        stop(server, STOP_GRACE)
    assert server.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.parametrize("command", [["server"], ["repro"]])
def test_a_taken_port_is_one_line_saying_what_to_do(command: list[str], taken_port: int, tmp_path: Path) -> None:
    env = tool_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [RNNLAB, command[0], "--port", str(taken_port)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    line = one_error_line(proc)
    assert f"port {taken_port} on 127.0.0.1 is taken" in line
    assert f"PREFECT_API_URL=http://127.0.0.1:{taken_port}/api" in line and "PREFECT_PORT" in line


def test_waits_say_what_they_wait_for_and_give_up_at_the_deadline() -> None:
    said: list[str] = []
    with pytest.raises(WaitError, match=r"waited 0 s for the moon, in vain; look up"):
        wait_until("the moon", lambda: False, 0.2, say=said.append, hint="look up")
    assert said == ["waiting for the moon (up to 0 s)"]
    with pytest.raises(WaitError, match=r"gave up waiting for the moon: it set"):
        wait_until("the moon", lambda: False, 60, say=said.append, alive=lambda: "it set")


@pytest.mark.slow
def test_a_flow_stage_waits_for_its_api_then_says_what_it_waited_for(lm_workdir: Path) -> None:
    """A stage pointed at an API that never answers fails after prefect.toml's deadline (shortened here)."""
    api = f"http://127.0.0.1:{free_port()}/api"
    env = tool_env(PREFECT_API_URL=api, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="2")
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "flows.lm", "--level", "word"],
        cwd=lm_workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    line = one_error_line(proc)
    assert f"waited 2 s for the Prefect API at {api}, in vain" in line and "make server" in line
    assert f"waiting for the Prefect API at {api}" in proc.stderr  # it said so while it waited
    assert not (lm_workdir / "artifacts").exists()  # and did nothing else


@pytest.mark.slow
def test_a_server_that_dies_stops_the_run_with_its_log(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    write_params(repo / "params.yaml", {"corpus": {"grammar": {"train_docs": 200, "valid_docs": 20, "test_docs": 20}}})
    env = tool_env()
    for name in ("PREFECT_HOME", "PREFECT_API_URL"):
        env.pop(name, None)
    # A database the server cannot open: it exits while DVC runs the data stages.
    env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp_path}/no/such/folder/prefect.db"
    proc = run(repo, RNNLAB, "repro", env=env, check=False)
    line = one_error_line(proc)
    assert re.match(r"error: the Prefect server exited with code \d+ \(.*unable to open database file", line), line
    assert "The run was stopped" in line and "make server" in line and ".prefect/server.log" in line
    assert "stage lm@word worked" not in proc.stdout + proc.stderr  # DVC was stopped, not left waiting
