"""The train, evaluate and sample flows under one Prefect test server: caching, resume, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, TaskRunFilter
from prefect.client.schemas.sorting import ArtifactSort

from flows import evaluate, sample, train
from flows.common import checkpoints
from models import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("prefect_harness")


def latest_artifact(key: str) -> str:
    """The markdown of the newest artifact under ``key``.

    Every filter is passed explicitly: prefect 3.8.8's client sends null for missing ones
    (Artifact.get does too), which its server rejects with a 422.
    """
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), flow_run_filter=FlowRunFilter(),
            task_run_filter=TaskRunFilter(), sort=ArtifactSort.CREATED_DESC, limit=1, offset=0,
        )  # fmt: skip
    assert found, f"no artifact with key {key!r}"
    return found[0].data


def test_train_is_cached_on_its_fingerprint_and_recomputes_a_lost_checkpoint(lm_workdir: Path) -> None:
    first = train.run("word", "params.yaml")
    assert not first["cached"] and first["sha256"] == ckpt.sha256_file(checkpoints("word") / ckpt.FILE)
    history = Path("artifacts/word/history.csv").read_text()
    assert history.splitlines()[0] == "epoch,step,train_loss,valid_loss,valid_perplexity,lr"
    assert len(history.splitlines()) == 3  # two epochs

    Path("artifacts/word/history.csv").unlink()  # as DVC does before rerunning a stage
    second = train.run("word", "params.yaml")
    assert second["cached"] and second["sha256"] == first["sha256"]
    assert Path("artifacts/word/history.csv").read_text() == history  # rewritten from the cached record

    weights = ckpt.load(checkpoints("word"))["model"]
    (checkpoints("word") / ckpt.FILE).unlink()  # the cache entry now points at nothing
    third = train.run("word", "params.yaml")
    assert not third["cached"] and third["history"] == first["history"]  # retrained
    again = ckpt.load(checkpoints("word"))["model"]
    # Bit for bit, and byte for byte: the checkpoint file itself is deterministic.
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert third["sha256"] == first["sha256"]

    assert "| epoch | step | train_loss" in latest_artifact("word-training")


def test_a_killed_training_resumes_from_its_checkpoint(lm_workdir: Path) -> None:
    from flows.common import lm_fingerprint, tokenizer_settings
    from models.lm import lm_trainer
    from pipeline.params import read_params
    from pipeline.vocab import Vocab

    p = read_params("params.yaml")
    tok = tokenizer_settings("char", p.tokenize.char)
    fp = lm_fingerprint("char", p.train.char, tok, train.TRAIN_CODE)
    t = lm_trainer(p.train.char, Path("data/windows/char"), checkpoints("char"), Vocab.load("data/vocab/char.json"),
                {"fingerprint": fp, "tokenizer": tok, "vocab_path": "data/vocab/char.json"})  # fmt: skip
    t.run_epoch()  # one epoch of two, then "killed"
    out = train.run("char", "params.yaml")
    assert not out["cached"] and [h["epoch"] for h in out["history"]] == [1, 2]
    assert out["history"][0] == t.history[0]  # epoch 1 was not redone


def test_evaluate_and_sample_write_metrics_samples_and_artifacts(lm_workdir: Path) -> None:
    train.run("word", "params.yaml")
    result = evaluate.run("word", "params.yaml")
    saved = json.loads(Path("artifacts/word/metrics.json").read_text())
    assert saved == json.loads(json.dumps(result)) and set(saved) == {"valid", "test"}
    oracle = json.loads(Path("data/corpus/oracle.json").read_text())["word"]
    for split, m in saved.items():
        assert m["tokens"] == m["oracle_tokens"] == oracle[split]["targets"]  # every target scored once
        assert m["oracle_gap"] > 0.99 and m["perplexity"] > 1
        assert {"loss", "bits_per_token", "error_rate"} <= set(m)
    assert "oracle_gap" in latest_artifact("word-metrics")

    lines = sample.run("word", "params.yaml")
    assert Path("artifacts/word/samples.txt").read_text().splitlines() == lines
    assert len(lines) == 3 and all(line.startswith("the") for line in lines)  # 2 samples + greedy
    assert "Greedy" in latest_artifact("word-samples")
