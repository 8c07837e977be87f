"""models/preflight.py: params that cannot work on the data fail before training, with one line naming the
key, the value and the fix; defaults that merely do not fit adapt with one warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import load_params, tool_env, write_params
from flows.common import tokenizer_settings
from models import checkpoint as ckpt
from models.preflight import check_lm
from pipeline import paths
from pipeline.errors import DataError, ParamsError
from pipeline.params import read_params
from pipeline.paths import checkpoints


def check(level: str = "word", warn: list[str] | None = None, **train: object):
    p = read_params("params.yaml")
    params = p.train.word if level == "word" else p.train.char
    return check_lm(
        level,
        params.model_copy(update=train),
        tokenizer_settings(level, p.tokenize.word if level == "word" else p.tokenize.char),
        p.evaluate,
        p.sample.word if level == "word" else p.sample.char,
        warn=(warn if warn is not None else []).append,
    )


def test_the_shrunk_default_passes_unchanged(lm_workdir: Path) -> None:
    warnings: list[str] = []
    p = read_params("params.yaml")
    assert check("word", warnings) == p.sample.word and check("char", warnings) == p.sample.char
    assert warnings == []


def test_a_batch_larger_than_the_train_split_names_the_keys_and_what_fits(lm_workdir: Path) -> None:
    with pytest.raises(ParamsError) as e:
        check("char", batch_size=4096, bptt=30)
    msg = str(e.value)
    assert "train.char.batch_size=4096" in msg and "train.char.bptt=30" in msg and "lower train.char.batch_size" in msg
    assert "\n" not in msg


def test_adaptive_cutoffs_beyond_the_vocabulary_are_refused(lm_workdir: Path) -> None:
    with pytest.raises(ParamsError, match=r"train\.word\.cutoffs=\[20, 100000\] must lie between 1 and"):
        check("word", output="adaptive", cutoffs=(20, 100_000))
    check("word", output="adaptive", cutoffs=None)  # the default rule fits any vocabulary


def test_a_model_that_cannot_be_built_is_refused_before_training(lm_workdir: Path) -> None:
    with pytest.raises(ParamsError, match=r"^train\.word: .*tie"):
        check("word", tie_weights=True, emb_dim=8, hidden=32)


def test_a_training_mode_without_its_dataset_is_refused(lm_workdir: Path) -> None:
    meta_file = paths.windows("char") / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["params"]["modes"] = ["stream"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ParamsError, match=r"train\.char\.mode='padded' but windows\.char\.modes=\['stream'\]"):
        check("char", mode="padded")


def test_stop_token_and_prime_outside_the_vocabulary_adapt_with_a_warning(lm_workdir: Path) -> None:
    p = read_params("params.yaml")
    warnings: list[str] = []
    sample = p.sample.char.model_copy(update={"prime": "日本", "greedy_stop": "。"})
    out = check_lm(
        "char", p.train.char, tokenizer_settings("char", p.tokenize.char), p.evaluate, sample, warnings.append
    )
    assert out.prime == "" and out.greedy_stop == "<eos>"
    assert len(warnings) == 2 and "sample.char.prime" in warnings[0] and "sample.char.greedy_stop" in warnings[1]
    assert all("\n" not in w for w in warnings)


def test_an_unreadable_checkpoint_is_named_with_the_fix(lm_workdir: Path) -> None:
    folder = checkpoints("word")
    folder.mkdir(parents=True)
    (folder / ckpt.FILE).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ckpt.CheckpointError, match=r"last\.pt: .*rm artifacts/word/checkpoints/last\.pt"):
        check("word")


@pytest.mark.slow
def test_the_stage_refuses_in_one_line_before_any_training(lm_workdir: Path) -> None:
    """The real stage command: exit 2, one `error:` line, no traceback, no checkpoint written."""
    write_params(
        Path("params.yaml"), {"train": {"char": {"batch_size": 100_000}}}, base=load_params(Path("params.yaml"))
    )
    env = tool_env(PREFECT_HOME=str(lm_workdir / ".prefect"))
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.lm", "--level", "char"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train.char.batch_size=100000" in errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not checkpoints("char").exists()


def test_a_split_without_tokens_is_a_data_error(lm_workdir: Path) -> None:
    meta_file = paths.windows("word") / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["splits"]["test"]["stream_tokens"] = 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="the test split of the word windows has no tokens"):
        check("word")
