"""Exit codes through DVC: ``rnnlab repro``, ``rnnlab dvc`` and ``rnnlab recipe`` exit 2 and repeat the
stage's ``error:`` line last (once) when a stage refused a user error (DVC alone would say 255), and exit with
DVC's code otherwise; a user error raised inside a Prefect flow prints that one line, no traceback;
and ``rnnlab dvc queue start`` without a lasting server is refused in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import ROOT, VENV_BIN, copy_repo, load_params, run, tool_env, write_params
from tests.conftest import LM_PARAMS
from tests.procsupport import Launched, none_left

RNNLAB = str(VENV_BIN / "rnnlab")
NO_SERVER = "http://127.0.0.1:9/api"  # for runs of data stages only: they need no Prefect, rnnlab starts none


def rnnlab(cwd: Path, *args: str, env: dict[str, str]) -> Launched:
    launched = Launched.start([RNNLAB, *args], cwd, env, cwd.parent / "rnnlab.log")
    launched.proc.wait(900)
    return launched


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = copy_repo(tmp_path / "repo")
    write_params(path / "params.yaml", LM_PARAMS)
    return path


def last_line(text: str) -> str:
    return [x for x in text.splitlines() if x.strip()][-1]


@pytest.mark.slow
@pytest.mark.parametrize("args", [["queue", "start", "-j", "2"], ["exp", "run", "--run-all"]], ids=" ".join)
def test_queue_workers_without_a_lasting_server_are_refused(args: list[str], tmp_path: Path) -> None:
    env = tool_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([RNNLAB, "dvc", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: `dvc {' '.join(args[:2])}` starts queue workers that outlive this command")
    assert "make server" in line and "PREFECT_API_URL=http://127.0.0.1:4200/api" in line


@pytest.mark.slow
def test_a_stage_that_refuses_a_user_error_makes_rnnlab_exit_2_with_its_line_last(repo: Path) -> None:
    (repo / "empty.txt").write_text("\n\n\n", encoding="utf-8")  # no documents: the corpus stage refuses it
    corpus = {"corpus": {"source": "text", "text": {"train": "empty.txt"}}}
    write_params(repo / "params.yaml", corpus, base=load_params(repo / "params.yaml"))
    env = tool_env(PREFECT_HOME=str(repo.parent / "home"), PREFECT_API_URL=NO_SERVER)
    launched = rnnlab(repo, "repro", "corpus", env=env)
    out = launched.output()
    assert launched.proc.returncode == 2, out[-4000:]  # DVC itself exits 255 here
    stage_line = "error: corpus: source 'text' produced no documents"
    assert last_line(out).startswith(stage_line), out[-4000:]
    assert out.count(stage_line) == 1  # once, last: the stage hands it to rnnlab, which ends on it
    assert "Traceback" not in out and none_left(launched.mark) == []


@pytest.mark.slow
def test_a_failure_of_dvc_itself_keeps_dvcs_exit_code(repo: Path) -> None:
    env = tool_env(PREFECT_HOME=str(repo.parent / "home"), PREFECT_API_URL=NO_SERVER)
    launched = rnnlab(repo, "dvc", "repro", "no-such-stage", env=env)
    direct = run(repo, str(VENV_BIN / "dvc"), "repro", "no-such-stage", env=env, check=False)
    assert launched.proc.returncode == direct.returncode != 0
    assert last_line(launched.output()).startswith("ERROR:")  # DVC's own words are the last


@pytest.mark.slow
def test_a_user_error_inside_a_flow_is_one_line_and_exit_2(repo: Path, prefect_api: str) -> None:
    """A refusal from inside a Prefect task (here: a CUDA device on a machine without one): Prefect's
    engine logs it from the task and each flow around it; none of that may carry a traceback."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: train.word.device=cuda is no error here")
    env = tool_env(PREFECT_HOME=str(repo.parent / "home"))
    run(repo, str(VENV_BIN / "dvc"), "repro", "windows@word", env=env)
    write_params(repo / "params.yaml", {"train": {"word": {"device": "cuda"}}}, base=load_params(repo / "params.yaml"))
    launched = rnnlab(repo, "repro", "lm@word", env={**env, "PREFECT_API_URL": prefect_api})
    out = launched.output()
    assert launched.proc.returncode == 2, out[-6000:]
    assert "Traceback" not in out and "Encountered exception" not in out, out[-6000:]
    line = last_line(out)
    assert re.match(r"error: .*train\.word\.device.*cuda", line), out[-4000:]
    assert out.count(line) == 1, out[-4000:]  # once, last (the stage handed it to rnnlab)
    assert none_left(launched.mark) == []


@pytest.mark.slow
def test_rnnlab_recipe_exits_2_when_its_corpus_stage_refuses(repo: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "blank.txt"
    corpus.write_text("\n \n\n", encoding="utf-8")
    env = tool_env(PREFECT_HOME=str(tmp_path / "home"), PREFECT_API_URL=NO_SERVER)
    launched = rnnlab(repo, "recipe", "char-text", str(corpus), "-S", "train.char.epochs=1", env=env)
    out = launched.output()
    assert launched.proc.returncode == 2, out[-4000:]
    assert last_line(out).startswith("error: corpus: source 'text' produced no documents"), out[-4000:]
    assert "Traceback" not in out and none_left(launched.mark) == []


def test_a_stage_run_alone_appends_nothing_without_the_file(tmp_path: Path) -> None:
    """RNNLAB_ERROR_FILE is only written while the command that named it waits: no stray file."""
    gone = tmp_path / "gone.txt"
    code = (
        "import sys\n"
        "from pipeline import stage\n"
        "from pipeline.errors import ParamsError\n"
        "def body():\n"
        "    raise ParamsError('x.y: bad; set it to 1')\n"
        "sys.exit(stage.run(body))\n"
    )
    env = tool_env(RNNLAB_ERROR_FILE=str(gone))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (2, "error: x.y: bad; set it to 1\n") and not gone.exists()
    gone.write_text("", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert gone.read_text(encoding="utf-8") == "error: x.y: bad; set it to 1\n"
    assert proc.stderr == ""  # the command that waits for the file ends on the line, once
