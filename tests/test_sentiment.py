"""Sentiment classification on the real aclImdb sample: both readouts learn, clear errors.

The defaults and the ``last`` readout follow Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine
Intelligence* (Bleeding Edge Press, 2016), chapter 6; ``mean`` and ``max`` pool over the valid steps.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.harness import section
from models.classify import Classifier, SentimentTask, initial_embeddings, readout
from models.trainer import Trainer
from ops.cli import main as cli
from pipeline.errors import DataError, ParamsError
from pipeline.io import read_json
from pipeline.params import read_params
from pipeline.paths import IMDB_DATA
from pipeline.textdata import check_classes
from pipeline.vectors import save_embeddings
from pipeline.vocab import Vocab
from tests.tasksupport import build_imdb

# Test-sized: the book's defaults (GRU 300, RMSProp 0.002, batch 20) stay in params.yaml. On 458
# training reviews a small LSTM with Adam and no LR decay learns in 20 epochs of 23 steps.
SMALL = {
    "cell": "lstm",
    "emb_dim": 16,
    "hidden": 16,
    "optimizer": "adam",
    "lr": 0.002,
    "plateau_patience": 100,
    "epochs": 20,
    "device": "cpu",
    "seed": 0,
}
CHANCE = 0.5
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def imdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The aclImdb sample through the imdb_data stage: 458 train, 42 valid, 500 test reviews."""
    return build_imdb(tmp_path_factory.mktemp("imdb"))


def _task(root: Path, device: torch.device = CPU, **over: object) -> SentimentTask:
    p = section("sentiment", **{**SMALL, **over})
    return SentimentTask(
        p,
        root / IMDB_DATA.windows,
        Vocab.load(root / IMDB_DATA.vocab),
        device,
        vocab_path=str(IMDB_DATA.vocab),
        tokenizer={"level": "word", "pattern": "[A-Za-z]+|[!?.:,()]", "lowercase": True},
    )


@pytest.mark.slow
def test_the_stage_wrote_labelled_padded_rows(imdb: Path) -> None:
    stats = read_json(imdb / IMDB_DATA.metrics)
    assert stats["labels"] == {
        "test": {"neg": 250, "pos": 250},
        "train": {"neg": 226, "pos": 232},
        "valid": {"neg": 24, "pos": 18},
    }
    meta = read_json(imdb / IMDB_DATA.windows / "meta.json")
    assert meta["labels"] == ["neg", "pos"] and meta["params"]["modes"] == ["padded"]
    labels = np.load(imdb / IMDB_DATA.windows / "test" / "labels.npy")
    assert np.bincount(labels).tolist() == [250, 250]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["last", "mean"])
def test_both_readouts_learn_above_chance_on_the_test_split(imdb: Path, tmp_path: Path, how: str) -> None:
    p = section("sentiment", **{**SMALL, "readout": how})
    t = Trainer(lambda d: _task(imdb, d, readout=how), p, tmp_path, "test")
    t.fit()
    m = t.task.evaluate("test")
    assert m["examples"] == 500 and np.sum(m["confusion"]) == 500 and m["classes"] == ["neg", "pos"]
    # Chance is 0.5 ± 0.022 (one sd) on 500 balanced reviews: 0.56 is > 2.7 sd above it.
    assert m["accuracy"] >= CHANCE + 0.06, m
    assert t.history[-1]["train_loss"] < t.history[0]["train_loss"]


def test_readouts_read_only_the_valid_steps() -> None:
    out = torch.arange(24, dtype=torch.float32).view(4, 2, 3)  # (T=4, B=2, H=3)
    lengths = torch.tensor([2, 4])
    assert readout(out, lengths, "last").tolist() == [out[1, 0].tolist(), out[3, 1].tolist()]
    assert torch.allclose(readout(out, lengths, "mean")[0], out[:2, 0].mean(0))
    poisoned = out.clone()
    poisoned[2:, 0] = 1e6  # padding of row 0: never read
    for how in ("last", "mean", "max"):
        assert torch.equal(readout(poisoned, lengths, how)[0], readout(out, lengths, how)[0])
    assert readout(out, lengths, "max")[1].tolist() == out[3, 1].tolist()


def test_embeddings_from_skipgram_or_a_text_file_and_their_errors(imdb: Path, tmp_path: Path) -> None:
    vocab = Vocab.load(imdb / IMDB_DATA.vocab)
    # A word2vec/GloVe text file: aligned by token, its OOV count reported.
    (tmp_path / "glove.txt").write_text("great 1 2 3 4\nAwful -1 -2 -3 -4\nnotaword 9 9 9 9\n", encoding="utf-8")
    matrix, found, info = initial_embeddings(tmp_path / "glove.txt", vocab, "v", emb_dim=4)
    assert info["found"] == 2 and info["oov"] == len(vocab) - 3 - 2
    p = section("sentiment", **{**SMALL, "emb_dim": 4, "freeze_embeddings": True})
    t2 = SentimentTask(
        p, imdb / IMDB_DATA.windows, vocab, torch.device("cpu"), vocab_path="v", embeddings=(matrix, found, info)
    )
    assert t2.model.embedding.weight[vocab.id("awful")].tolist() == [-1, -2, -3, -4]
    assert not t2.model.embedding.weight.requires_grad  # frozen: the Trainer leaves it out
    # The skipgram stage's embeddings.npy must belong to this vocabulary; the error names both.
    other = Vocab("word", vocab.tokens[:3] + tuple(reversed(vocab.tokens[3:])), vocab.counts)
    save_embeddings(tmp_path / "embeddings.npy", np.zeros((len(other), 4), np.float32), other, "data/vocab/word.json")
    with pytest.raises(
        DataError,
        match=r"ids of vocabulary data/vocab/word\.json \(2000 tokens.*not of "
        r"data/imdb/vocab\.json \(2000 tokens",
    ):
        initial_embeddings(tmp_path / "embeddings.npy", vocab, "data/imdb/vocab.json", emb_dim=4)
    with pytest.raises(ParamsError, match=r"sentiment\.emb_dim is 300 but .*glove\.txt holds 4-dimensional vectors"):
        initial_embeddings(tmp_path / "glove.txt", vocab, "v", emb_dim=300)


def test_empty_classes_and_missing_labels_are_named(imdb: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"class 'pos' has no valid documents"):
        check_classes({"train": {"neg": 3, "pos": 2}, "valid": {"neg": 1}, "test": {"neg": 1, "pos": 1}}, tmp_path)
    with pytest.raises(DataError, match="only the class"):
        check_classes({"train": {"neg": 3}}, tmp_path)
    # A split folder where one class has no rows at all.
    copy = tmp_path / "windows"
    shutil.copytree(imdb / IMDB_DATA.windows, copy)
    labels = np.load(copy / "train" / "labels.npy")
    np.save(copy / "train" / "labels.npy", np.zeros_like(labels))
    with pytest.raises(DataError, match=r"train: class 'pos' has no rows here"):
        SentimentTask(
            section("sentiment", **SMALL), copy, Vocab.load(imdb / IMDB_DATA.vocab), torch.device("cpu"), vocab_path="v"
        )


def test_params_defaults_are_a_300_unit_gru_with_rmsprop_and_the_last_readout() -> None:
    """The setup of Abrahams et al. (2016, ch. 6): GRU 300, RMSProp 0.002, batch 20, last output."""
    p = read_params().sentiment
    assert (p.cell, p.hidden, p.optimizer, p.lr, p.batch_size, p.readout) == ("gru", 300, "rmsprop", 0.002, 20, "last")


def test_cli_classify_uses_the_checkpoint(imdb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt_dir = imdb / "artifacts" / "sentiment" / "checkpoints"
    p = section("sentiment", **{**SMALL, "epochs": 1})
    with contextlib.chdir(imdb):
        Trainer(lambda d: _task(imdb, d, epochs=1), p, ckpt_dir, "cli").fit()
        clf = Classifier.load(ckpt_dir)
        probs = clf(["a wonderful , moving film", "awful"])
        assert [set(pr) for pr in probs] == [{"neg", "pos"}] * 2
        assert all(abs(sum(pr.values()) - 1) < 1e-5 for pr in probs)
        assert cli(["classify", "a wonderful film", "--json", "--device", "cpu"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["results"][0]["label"] in ("neg", "pos")
        assert cli(["classify", "x", "--checkpoint", "nowhere"]) == 2
        assert "no checkpoint here" in capsys.readouterr().err
