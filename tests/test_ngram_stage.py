"""The ngram subflow (the Kneser–Ney baseline) and its place beside the RNN and the oracle in evaluate's table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flows import evaluate, ngram
from models.ngram import KneserNey
from pipeline import paths
from pipeline.params import load_params, read_params
from pipeline.vocab import Vocab
from tests.support import latest_table, train_word_model

pytestmark = pytest.mark.usefixtures("prefect_flows")


@pytest.mark.slow
def test_ngram_scores_every_target_beside_the_oracle(lm_workdir: Path) -> None:
    oracle = json.loads(paths.ORACLE.read_text())
    for level in ("word", "char"):
        result = ngram.ngram(level, load_params([f"ngram.{level}"])[f"ngram.{level}"])
        saved = json.loads(Path(f"artifacts/{level}/ngram.json").read_text())
        assert saved == json.loads(json.dumps(result))
        assert saved["model"]["n"] == read_params("params.yaml").ngram.model_dump()[level]["n"]
        for split in ("valid", "test"):
            m = saved[split]
            assert m["tokens"] == oracle[level][split]["targets"]  # the same targets as the RNN and the oracle
            assert m["oracle_gap"] > 0.99 and m["oracle_perplexity"] == oracle[level][split]["perplexity"]
        # The stage's numbers are models/ngram.py's, fitted on the train stream.
        vocab = Vocab.load(f"data/vocab/{level}.json")
        direct = KneserNey.fit(np.load(f"data/windows/{level}/train/stream.npy"), len(vocab), saved["model"]["n"])
        assert direct.evaluate(np.load(f"data/windows/{level}/test/stream.npy")).perplexity == pytest.approx(
            saved["test"]["perplexity"]
        )
    table = latest_table("word-ngram")  # a row per split, beside the oracle's perplexity
    assert [r["split"] for r in table] == ["valid", "test"] and all(r["oracle_gap"] > 0.99 for r in table)


@pytest.mark.slow
def test_evaluate_puts_oracle_ngram_and_rnn_side_by_side(lm_workdir: Path) -> None:
    p = read_params("params.yaml")
    train_word_model("side")
    scores = ngram.ngram("word", p.ngram.word)
    result = evaluate.evaluate("word", p.evaluate, scores)
    baseline = json.loads(paths.ngram_scores("word").read_text())
    for split in ("valid", "test"):
        assert result[split]["ngram_perplexity"] == baseline[split]["perplexity"]
        assert result[split]["oracle_perplexity"] <= result[split]["ngram_perplexity"]  # nothing beats the oracle
    side = latest_table("word-perplexity")  # a row per model, a column per split
    assert [r["model"] for r in side] == ["oracle", "n-gram", "RNN"]
    assert side[1] == {"model": "n-gram", **{s: result[s]["ngram_perplexity"] for s in ("valid", "test")}}
