"""The task pipelines under real DVC and Prefect: `skipgram` in the root dvc.yaml, and tasks/dvc.yaml
(IMDB sentiment, LM classification, OCR labelling) on the real aclImdb sample and a letter.data file,
outside the default `dvc repro`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dvc.repo import Repo

from bench.harness import SMALL_CORPUS, copy_repo, run, server_env
from bench.harness import write_params as write
from pipeline.io import read_json
from tests.support import ran
from tests.tasksupport import IMDB_DATA, letter_data

TASK_STAGES = {"imdb_data", "sentiment", "lmclass_data", "lmclass", "ocr_data", "ocr"}


@pytest.mark.slow
def test_tasks_pipeline_is_separate_runs_from_the_root_and_is_checked(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    with Repo(str(repo)) as dvc:
        stages = {(s.path_in_repo, s.name): s for s in dvc.index.stages}
    tasks = {name: s for (path, name), s in stages.items() if path == "tasks/dvc.yaml"}
    assert set(tasks) == TASK_STAGES
    # wdir ..: each reads the root params.yaml and writes under data/ and artifacts/. The stages
    # are in DVC's index, so tests/test_dvc_yaml.py checks them against their spec() and imports.
    assert all(Path(s.wdir) == repo for s in tasks.values())
    assert all(p.def_path == "params.yaml" for s in tasks.values() for p in s.params)
    default = {name for (path, name) in stages if path == "dvc.yaml"}
    assert {"lm@word", "lm@char", "skipgram"} <= default and not default & set(tasks)


@pytest.mark.slow
def test_repro_skipgram_then_every_task(tmp_path: Path, shared_data: Path, prefect_api: str) -> None:
    repo = copy_repo(tmp_path / "repo")
    letters = letter_data(tmp_path / "letter.data", words=300)
    write(
        repo / "params.yaml",
        {
            **SMALL_CORPUS,
            "skipgram": {
                "emb_dim": 16,
                "negatives": 8,
                "batch_size": 200,
                "epochs": 1,
                "epoch_size": 30,
                "neighbors": ["cat", "ran"],
            },
            **IMDB_DATA,
            "sentiment": {"cell": "lstm", "emb_dim": 16, "hidden": 16, "optimizer": "adam", "epochs": 2},
            "lmclass": {"train": {"emb_dim": 8, "hidden": 16, "batch_size": 16, "epochs": 1, "epoch_size": 20}},
            "ocr_data": {"source": {"url": str(letters), "cache_dir": str(tmp_path / "cache")}},
            "ocr": {"hidden": 16, "batch_size": 16, "optimizer": "adam", "lr": 0.01, "epochs": 3},
        },
    )
    env = server_env(repo / ".prefect", prefect_api)  # the session's server: no temporary server per flow process

    out = run(repo, "dvc", "repro", "skipgram", env=env).stdout
    assert "skipgram" in ran(out) and not ran(out) & TASK_STAGES
    art = repo / "artifacts/skipgram"
    emb = np.load(art / "embeddings.npy")
    vocab = read_json(repo / "data/vocab/word.json")["tokens"]
    assert emb.shape == (len(vocab), 16) and read_json(art / "embeddings.json")["vocab"]["size"] == len(vocab)
    assert (art / "vectors.txt").read_text().splitlines()[0] == f"{len(vocab) - 3} 16"
    report = read_json(art / "report.json")
    assert set(report["neighbors"]) == {"cat", "ran"} and len(report["neighbors"]["cat"]) == 10
    assert read_json(art / "metrics.json") == {"valid_loss": report["valid_loss"], "step": 1}  # DVCLive
    nb = run(repo, "python", "-m", "ops.cli", "neighbors", "cat", "-k", "3", "--json", env=env).stdout
    assert len(json.loads(nb)["neighbors"]["cat"]) == 3

    out = run(repo, "dvc", "repro", "tasks/dvc.yaml", env=env).stdout
    assert ran(out) == {f"tasks/dvc.yaml:{s}" for s in TASK_STAGES}
    sentiment = read_json(repo / "artifacts/sentiment/metrics.json")
    assert sentiment["test"]["examples"] == 500 and np.sum(sentiment["test"]["confusion"]) == 500
    lm = read_json(repo / "artifacts/lmclass/metrics.json")
    assert (
        lm["test"]["sentiment_accuracy"] == sentiment["test"]["accuracy"]
    )  # the sentiment classifier's, same test split
    assert lm["test"]["examples"] == 500 and set(lm["valid_perplexity"]) == {"neg", "pos"}
    assert (repo / "artifacts/lmclass/checkpoints/pos/last.pt").is_file()
    ocr = read_json(repo / "artifacts/ocr/metrics.json")
    assert set(ocr) == {"bidirectional", "unidirectional"}
    assert ocr["bidirectional"]["letter_error"] < ocr["unidirectional"]["letter_error"]
    errors = (repo / "artifacts/ocr/errors.csv").read_text().splitlines()
    assert errors[0] == "epoch,bidirectional,unidirectional" and len(errors) == 1 + 3
    plots = json.loads(run(repo, "dvc", "plots", "show", "--json", env=env).stdout)["data"]
    values = plots["ocr-letter-error"][0]["content"]["data"]["values"]  # the DVC plot: both curves
    assert {v["field"] for v in values} == {"bidirectional", "unidirectional"} and len(values) == 2 * 3

    assert ran(run(repo, "dvc", "repro", "tasks/dvc.yaml", env=env).stdout) == set()  # all up to date
    # A finished checkpoint with the same fingerprint is reused, not retrained.
    forced = run(repo, "dvc", "repro", "-f", "-s", "tasks/dvc.yaml:ocr", env=env)
    assert "resumed from" in forced.stdout + forced.stderr and "epoch 1/3" not in forced.stdout + forced.stderr
    assert read_json(repo / "artifacts/ocr/metrics.json") == ocr
