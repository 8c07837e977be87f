"""``rnnlab sample | complete | score``: text and --json output, and errors that say what to do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.harness import ROOT
from ops.cli import main
from tests.support import train_word_model


@pytest.fixture
def repo(lm_workdir: Path) -> Path:
    """The working directory with a (briefly) trained word model where the CLI looks by default."""
    train_word_model("cli")
    return lm_workdir


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_the_commands_and_each_has_help() -> None:
    out = subprocess.run([sys.executable, "-m", "ops.cli", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and all(c in out.stdout for c in ("sample", "complete", "score"))
    for command in ("sample", "complete", "score"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0


@pytest.mark.slow
def test_sample_complete_and_score_as_text_and_json(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "sample", "--prime", "the cat", "--count", "2", "--max-tokens", "8", "--top-k", "5")
    assert code == 0 and len(out.splitlines()) == 2 and all(line.startswith("the cat") for line in out.splitlines())

    code, out, _ = cli(capsys, "sample", "--prime", "a", "--greedy", "--stop", ".", "--json")
    got = json.loads(out)
    assert code == 0 and got["level"] == "word" and got["samples"][0]["text"].startswith("a")

    code, out, _ = cli(capsys, "complete", "the cat", "-k", "3", "--json")
    nxt = json.loads(out)["next"]
    assert code == 0 and len(nxt) == 3 and nxt[0]["probability"] >= nxt[-1]["probability"]

    code, out, _ = cli(capsys, "score", "the cat ran.", "--json")
    s = json.loads(out)
    assert code == 0 and s["tokens"] == 4 and s["perplexity"] > 1 and s["log_prob"] < 0
    code, out, _ = cli(capsys, "score", "the cat ran.")
    assert code == 0 and out.startswith("log_prob ")


def test_a_missing_checkpoint_is_a_clear_error(lm_workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "sample")
    assert code == 2 and "artifacts/word/checkpoints/last.pt: no checkpoint here; train one with `dvc repro`" in err
    code, out, _ = cli(capsys, "score", "x", "--checkpoint", "nowhere.pt", "--json")
    assert code == 2 and "no checkpoint here" in json.loads(out)["error"]


@pytest.mark.slow
def test_an_incompatible_checkpoint_is_a_clear_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Path("junk.pt").write_bytes(b"not a checkpoint at all")
    code, _, err = cli(capsys, "complete", "the", "--checkpoint", "junk.pt")
    assert code == 2 and "junk.pt: not an rnnlab checkpoint (torch.load(weights_only=True) cannot read it" in err

    torch.save({"model": {}}, "foreign.pt")
    code, _, err = cli(capsys, "complete", "the", "--checkpoint", "foreign.pt")
    assert code == 2 and "checkpoint format None is not an rnnlab one" in err

    c = torch.load("artifacts/word/checkpoints/last.pt", weights_only=True)
    torch.save({**c, "format": "rnnlab-sentiment/1"}, "sentiment.pt")  # another task's checkpoint
    code, _, err = cli(capsys, "complete", "the", "--checkpoint", "sentiment.pt")
    assert code == 2 and "a 'rnnlab-sentiment/1' checkpoint where 'rnnlab-lm/1' is needed" in err

    c = torch.load("artifacts/word/checkpoints/last.pt", weights_only=True)
    c["config"]["hidden"] += 1  # weights no longer fit the recorded shape
    torch.save(c, "reshaped.pt")
    code, _, err = cli(capsys, "complete", "the", "--checkpoint", "reshaped.pt")
    assert code == 2 and "reshaped.pt: checkpoint does not fit an rnnlab model" in err


@pytest.mark.slow
def test_a_vocabulary_that_does_not_match_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "sample", "--vocab", "data/vocab/char.json")
    assert code == 2 and "vocabulary data/vocab/char.json" in err and "does not match the checkpoint's" in err
    code, _, err = cli(capsys, "sample", "--vocab", "missing.json")
    assert code == 2 and "vocabulary missing.json not found" in err
    code, _, err = cli(capsys, "score", "")
    assert code == 2 and "nothing to score" in err
