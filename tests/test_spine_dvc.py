"""The data pipeline under real DVC, in a throwaway git repo with shrunk params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.harness import SMALL_CORPUS, copy_repo, run, write_params
from pipeline.io import read_json, sha256_file
from tests.support import ran

DATA_STAGES = ("windows",)  # `dvc repro windows` runs every data stage it depends on


def output_hashes(repo: Path) -> dict[str, str]:
    return {p.relative_to(repo).as_posix(): sha256_file(p) for p in sorted((repo / "data").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("spine") / "repo")
    write_params(repo / "params.yaml", SMALL_CORPUS)
    return repo


@pytest.mark.slow
def test_repro_builds_every_data_output(repo: Path) -> None:
    out = run(repo, "dvc", "repro", *DATA_STAGES).stdout
    stages = {"corpus"} | {f"{s}@{lvl}" for s in ("tokenize", "vocab", "windows") for lvl in ("word", "char")}
    assert ran(out) == stages
    oracle = read_json(repo / "data/corpus/oracle.json")
    for level in ("word", "char"):
        meta = read_json(repo / f"data/windows/{level}/meta.json")
        for split in ("train", "valid", "test"):
            stream = np.load(repo / f"data/windows/{level}/{split}/stream.npy", mmap_mode="r")
            # Every stream token after the leading <eos> is a target the oracle counted.
            assert oracle[level][split]["targets"] == len(stream) - 1 == meta["splits"][split]["stream_tokens"] - 1
            assert 0 < oracle[level][split]["nats_per_token"] < 3
    vocab = read_json(repo / "data/vocab/word.json")
    assert vocab["tokens"][:3] == ["<pad>", "<unk>", "<eos>"] and "-" in vocab["tokens"] and ";" in vocab["tokens"]
    assert read_json(repo / "data/metrics/vocab-word.json")["splits"]["valid"]["oov_rate"] == 0.0


@pytest.mark.slow
def test_second_repro_does_nothing(repo: Path) -> None:
    write_params(repo / "params.yaml", SMALL_CORPUS)
    run(repo, "dvc", "repro", *DATA_STAGES)
    out = run(repo, "dvc", "repro", *DATA_STAGES).stdout
    assert ran(out) == set()
    assert "Data and pipelines are up to date" in out


@pytest.mark.slow
def test_changed_window_length_reruns_only_windows(repo: Path) -> None:
    write_params(repo / "params.yaml", SMALL_CORPUS)
    run(repo, "dvc", "repro", *DATA_STAGES)
    before = output_hashes(repo)
    write_params(repo / "params.yaml", {**SMALL_CORPUS, "windows": {"word": {"length": 20}}})
    out = run(repo, "dvc", "repro", *DATA_STAGES).stdout
    assert ran(out) == {"windows@word"}
    after = output_hashes(repo)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed and all(k.startswith(("data/windows/word/", "data/metrics/windows-word")) for k in changed)
    assert np.load(repo / "data/windows/word/train/windows.npy", mmap_mode="r").shape[1] == 21


@pytest.mark.slow
def test_forced_rerun_is_byte_identical(repo: Path) -> None:
    run(repo, "dvc", "repro", *DATA_STAGES)
    before = output_hashes(repo)
    run(repo, "dvc", "repro", "--force", *DATA_STAGES)
    assert output_hashes(repo) == before
    assert any(k.startswith("data/tokens/word/") for k in before) and "data/vocab/word.json" in before


@pytest.mark.slow
def test_stage_error_is_one_clean_message(repo: Path) -> None:
    write_params(repo / "params.yaml", {**SMALL_CORPUS, "windows": {"char": {"length": 10_000}}})
    proc = run(repo, "dvc", "repro", *DATA_STAGES, check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "error: windows.char.length=10000 is longer than the test stream" in err
    assert "Traceback" not in err
