"""The Prefect server dying under a run: ``rnnlab repro`` says how it ended (a signal by name, or an
exit code) and what its log says last, stops DVC and the stage (no client tracebacks, nothing left
retrying the dead API), and loses nothing that finished."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import psutil
import pytest

from bench.harness import VENV_BIN, copy_repo, run, tool_env, write_params
from ops.server import log_tail
from tests.conftest import LM_PARAMS
from tests.procsupport import STOP_LIMIT, Launched, left, lock_outs, none_left

DATA_STAGES = {"corpus", "tokenize@word", "vocab@word", "windows@word"}
EPOCH = r"Task run '[\w-]*epoch-\d+' - Finished"

BANNER = """
 ___ ___ ___ ___ ___ ___ _____
| _ \\ _ \\ __| __| __/ __|_   _|
|  _/   / _|| _|| _| (__  | |
|_| |_|_\\___|_| |___\\___| |_|

Configure Prefect to communicate with the server with:

    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api

View the API reference documentation at http://127.0.0.1:4200/docs

Check out the dashboard at http://127.0.0.1:4200

"""


@pytest.mark.parametrize(
    ("after_banner", "said"),
    [
        ("", ""),  # killed: nothing after the start-up banner is worth quoting
        (
            'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    open()\n'
            "sqlite3.OperationalError: unable to open database file\n",
            "sqlite3.OperationalError: unable to open database file",
        ),
        (
            "INFO:     Shutting down\nINFO:     Waiting for application shutdown.\nINFO:     Finished server process\n",
            "INFO:     Waiting for application shutdown. | INFO:     Finished server process",
        ),
    ],
    ids=["banner-only", "traceback", "shutdown"],
)
def test_the_log_quoted_is_what_says_why(after_banner: str, said: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(BANNER + after_banner, encoding="utf-8")
    assert log_tail(log) == said


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = copy_repo(tmp_path_factory.mktemp("server-death") / "repo")
    word = {**LM_PARAMS["train"]["word"], "epochs": 400, "epoch_size": 40}  # trains until the server dies
    write_params(path / "params.yaml", {**LM_PARAMS, "train": {**LM_PARAMS["train"], "word": word}})
    env = tool_env()
    for name in ("PREFECT_HOME", "PREFECT_API_URL"):
        env.pop(name, None)
    run(path, str(VENV_BIN / "dvc"), "repro", "windows@word", env=env)
    return path, env


@pytest.mark.slow
def test_a_killed_server_stops_the_run_with_one_line_naming_the_signal(
    repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, env = repo
    data = lock_outs(path, DATA_STAGES)
    launched = Launched.start([str(VENV_BIN / "rnnlab"), "repro", "lm@word"], path, env, tmp_path / "out.log")
    launched.wait_for(EPOCH)  # lm@word trains against the run's server
    (server,) = [
        int(x.split()[0]) for x in left(launched.mark) if re.search(r"prefect server start --host", x)
    ]  # the run's own server: it carries the run's mark
    code, took, after = launched.stop_with(signal.SIGKILL, pid=server)

    print(f"server death: the run stopped {took:.1f} s after the server was killed")
    out = launched.output()
    assert code == 2 and took < STOP_LIMIT, out[-6000:]
    assert "Traceback" not in out and "httpx" not in out and "Error logging to API" not in out, out[-6000:]
    lines = [x for x in after.splitlines() if x.strip()]
    assert re.match(
        r"error: the Prefect server was killed by SIGKILL \((its log ends \".+\"|its log says nothing after its "
        r"start-up banner); the whole log: \S*server\.log\)\. The run was stopped under stage lm@word \(finished "
        r"stages are kept\)",
        lines[-1],
    ), after
    # one line: an epoch that ended as the server died may still report, but nothing else speaks of it
    assert not [x for x in lines[:-1] if x.startswith(("error:", "ERROR")) or "server" in x.lower()], after
    assert none_left(launched.mark) == []  # the stage is not left retrying the dead API
    assert not psutil.pid_exists(server) or psutil.Process(server).status() == psutil.STATUS_ZOMBIE
    assert lock_outs(path, DATA_STAGES) == data
    assert (path / "artifacts/word/checkpoints/last.pt").is_file()  # the training so far, for the next run
