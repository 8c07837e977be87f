"""The language-model flows under one Prefect test server: the lm stage's flow and its train, evaluate
and sample subflows; caching, resume, DVCLive's files, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flows import evaluate, lm, sample, train
from models import checkpoint as ckpt
from pipeline import paths
from pipeline.params import load_params
from pipeline.paths import checkpoints
from tests.support import deterministic, latest_artifact, latest_table, run_train

pytestmark = pytest.mark.usefixtures("prefect_flows")


@pytest.mark.slow
def test_train_is_cached_on_its_fingerprint_and_recomputes_a_lost_checkpoint(lm_workdir: Path) -> None:
    first = run_train("word")
    assert not first["cached"] and first["sha256"] == ckpt.sha256_file(checkpoints("word") / ckpt.FILE)
    assert [h["epoch"] for h in first["history"]] == [1, 2]

    second = run_train("word")
    assert second["cached"] and second["sha256"] == first["sha256"]
    assert second["history"] == first["history"]  # the cached record

    weights = ckpt.load(checkpoints("word"))["model"]
    (checkpoints("word") / ckpt.FILE).unlink()  # the cache entry now points at nothing
    third = run_train("word")
    assert not third["cached"] and deterministic(third["history"]) == deterministic(first["history"])  # retrained
    again = ckpt.load(checkpoints("word"))["model"]
    # Bit for bit, and byte for byte: the best weights' file is deterministic (last.pt is not: it
    # also records the training wall-clock, for the plots of loss against time).
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert third["best_sha256"] == first["best_sha256"]

    table = latest_table("word-training")  # a row per epoch, the columns flows/train.py names
    assert [list(row) for row in table] == [list(train.HISTORY_COLUMNS)] * 2 and [r["epoch"] for r in table] == [1, 2]
    assert 0 < table[0]["seconds"] < table[1]["seconds"]  # the training wall-clock, cumulative


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_checkpoint(lm_workdir: Path) -> None:
    from flows.common import lm_fingerprint, tokenizer_settings
    from models.lm import lm_trainer
    from pipeline.params import read_params
    from pipeline.vocab import Vocab

    p = read_params("params.yaml")
    tok = tokenizer_settings("char", p.tokenize.char)
    fp = lm_fingerprint("char", p.train.char, tok, train.TRAIN_CODE)
    t = lm_trainer(
        p.train.char,
        paths.windows("char"),
        checkpoints("char"),
        Vocab.load(paths.vocab("char")),
        {"fingerprint": fp, "tokenizer": tok, "vocab_path": str(paths.vocab("char"))},
    )
    t.run_epoch()  # one epoch of two, then "killed"
    out = run_train("char")
    assert not out["cached"] and [h["epoch"] for h in out["history"]] == [1, 2]
    assert out["history"][0] == t.history[0]  # epoch 1 was not redone


@pytest.mark.slow
def test_evaluate_and_sample_write_metrics_samples_and_artifacts(lm_workdir: Path) -> None:
    run_train("word")
    cfg = load_params(lm.spec("word").params)
    result = evaluate.evaluate("word", cfg["evaluate"])
    saved = json.loads(paths.evaluation("word").read_text())
    assert saved == json.loads(json.dumps(result)) and set(saved) == {"valid", "test"}
    oracle = json.loads(paths.ORACLE.read_text())["word"]
    for split, m in saved.items():
        assert m["tokens"] == m["oracle_tokens"] == oracle[split]["targets"]  # every target scored once
        assert m["oracle_gap"] > 0.99 and m["perplexity"] > 1
        assert {"loss", "bits_per_token", "error_rate"} <= set(m)
    metrics = latest_table("word-metrics")  # a row per split, as evaluation.json
    assert [r["split"] for r in metrics] == ["valid", "test"]
    assert all(r["oracle_gap"] == saved[r["split"]]["oracle_gap"] for r in metrics)

    lines = sample.sample("word", cfg["sample.word"])
    assert paths.samples("word").read_text().splitlines() == lines
    assert len(lines) == 3 and all(line.startswith("the") for line in lines)  # 2 samples + greedy
    assert "Greedy" in latest_artifact("word-samples")


@pytest.mark.slow
def test_the_lm_flow_writes_every_output_and_dvclive_logs_curves_and_headline(lm_workdir: Path) -> None:
    out = lm.run("char", "params.yaml")
    art = paths.lm_outputs("char")
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "ngram.json", "evaluation.json", "samples.txt"):
        assert (art / name).is_file(), name
    # DVCLive: one row per epoch (step = epoch) per curve, and the test split's headline as metrics.
    for curve in (*lm.CURVES, "seconds"):
        rows = (art / "plots/metrics" / f"{curve}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{curve}" and [r.split("\t")[0] for r in rows[1:]] == ["1", "2"]
    # The wall-clock, row for row with the losses (dvc.yaml's loss against time): the history's.
    seconds = [float(r.split("\t")[1]) for r in (art / "plots/metrics/seconds.tsv").read_text().splitlines()[1:]]
    assert seconds == [h["seconds"] for h in out["train"]["history"]] and 0 < seconds[0] < seconds[1]
    headline = json.loads((art / "metrics.json").read_text())
    test = json.loads((art / "evaluation.json").read_text())["test"]
    assert headline == {
        "test_perplexity": test["perplexity"],
        "test_bits": test["bits_per_char"],
        "oracle_gap": test["oracle_gap"],
        "ngram_perplexity": test["ngram_perplexity"],
        "best_epoch": test["epoch"],
        "step": 2,
    }
    best = min(out["train"]["history"], key=lambda r: r["valid_loss"])["epoch"]
    assert test["epoch"] == out["train"]["best_epoch"] == best
    assert out["evaluation"]["test"] == test
    # The perplexity bars: per split the oracle, the n-gram and the RNN, the numbers evaluation.json holds.
    bars = json.loads((art / "plots/perplexity.json").read_text())
    evaluation = json.loads((art / "evaluation.json").read_text())
    assert bars == [
        {"split": split, "model": model, "perplexity": evaluation[split][key]}
        for split in ("valid", "test")
        for model, key in (("oracle", "oracle_perplexity"), ("n-gram", "ngram_perplexity"), ("RNN", "perplexity"))
    ]
    # The Prefect artifacts: tables of numbers, the samples as text, a link to the plots page.
    side = {r["model"]: r for r in latest_table("char-perplexity")}
    assert list(side) == ["oracle", "n-gram", "RNN"] and side["RNN"]["test"] == test["perplexity"]
    assert [r["split"] for r in latest_table("char-ngram")] == ["valid", "test"]
    assert latest_artifact("char-plots").endswith(f"]({(Path.cwd() / 'dvc_plots/index.html').as_uri()})")

    # Again, as after a changed sample param: the training is a cache hit, every output the same bytes.
    before = {p: p.read_bytes() for p in art.rglob("*") if p.is_file()}
    again = lm.run("char", "params.yaml")
    assert again["train"]["cached"]
    assert {p: p.read_bytes() for p in art.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_promotion_is_published_as_text_and_as_a_table_of_its_numbers() -> None:
    from prefect import flow

    from flows import retrain
    from models import registry

    before = {"checkpoint_sha256": "a" * 64, "model": "registry/models/word-aaaaaaaaaaaa"}
    d = registry.decide(9.0, "b" * 64, before, 10.0, "valid", 0.01)
    outcome = {"decision": d.to_dict(), "model": "registry/models/word-bbbbbbbbbbbb", "promoted": before}

    @flow(name="retrain-report")
    def report() -> None:  # the retrain flow calls the task the same way
        retrain.publish("word", outcome)

    report()
    assert latest_artifact("promotion-word").startswith("# Promotion, word level\n\nDecision: **promoted**.")
    assert latest_table("promotion-word-decision") == [
        {
            "level": "word",
            "decision": "promoted",
            "split": "valid",
            "new_perplexity": 9.0,
            "promoted_perplexity": 10.0,
            "improvement": pytest.approx(0.1),
            "margin": 0.01,
            "reason": d.reason,
            "registry_model": "registry/models/word-bbbbbbbbbbbb",
        }
    ]
