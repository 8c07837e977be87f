"""LM-based classification on the real aclImdb sample: one LM per class with the shared trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.harness import section
from models.classify import classification_metrics
from models.config import ModelConfig
from models.data import open_array, read_meta
from models.lm import lm_trainer
from models.lmclass import class_scores, document_logprobs
from models.rnn import RNNLanguageModel
from pipeline.paths import IMDB_DATA
from pipeline.vocab import EOS, Vocab
from tests.tasksupport import build_imdb

# Test-sized class LMs: one pass over each class's ~58k training tokens.
SMALL = section(
    "lmclass.train", emb_dim=16, hidden=32, layers=1, batch_size=16, bptt=35, lr=0.01, epochs=1, device="cpu"
)


@pytest.fixture(scope="module")
def imdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_imdb(tmp_path_factory.mktemp("imdb-lm"))


def test_each_class_gets_its_own_windows_with_the_shared_vocabulary(imdb: Path) -> None:
    vocab = Vocab.load(imdb / IMDB_DATA.vocab)
    docs = {}
    for label in ("neg", "pos"):
        meta = read_meta(imdb / IMDB_DATA.lm / label, vocab)  # raises unless encoded with the shared vocabulary
        docs[label] = {split: info["docs"] for split, info in meta["splits"].items()}
        stream = np.load(imdb / IMDB_DATA.lm / label / "train" / "stream.npy")
        assert stream[0] == EOS and (stream == EOS).sum() == docs[label]["train"] + 1
    assert docs == {"neg": {"train": 226, "valid": 24, "test": 250}, "pos": {"train": 232, "valid": 18, "test": 250}}
    assert sorted(p.name for p in (imdb / IMDB_DATA.lm).iterdir()) == ["neg", "pos"]  # no leftovers


def test_batched_document_scores_equal_one_review_at_a_time(imdb: Path) -> None:
    torch.manual_seed(0)
    vocab = Vocab.load(imdb / IMDB_DATA.vocab)
    model = RNNLanguageModel(
        ModelConfig(len(vocab), "lstm", 8, 16, 1, dropout=0.0, tie_weights=False, output="full", cutoffs=())
    ).eval()
    test = imdb / IMDB_DATA.windows / "test"
    padded, lengths = open_array(test, "padded.npy")[:7], np.asarray(open_array(test, "lengths.npy"))[:7]
    total, tokens = document_logprobs(model, padded, lengths, torch.device("cpu"), batch_size=3)
    assert (tokens == lengths).all()  # every token and the closing <eos>, nothing of the padding
    for r in range(7):
        row = torch.tensor(np.asarray(padded[r, : lengths[r]], np.int64))
        inputs = torch.cat([torch.tensor([EOS]), row[:-1]])[:, None]  # a document starts after <eos>
        with torch.no_grad():
            logp = torch.log_softmax(model(inputs)[0][:, 0], -1)
        assert total[r] == pytest.approx(float(logp.gather(1, row[:, None]).sum()), rel=1e-5)


@pytest.mark.slow
def test_class_lms_classify_test_reviews_above_chance(imdb: Path, tmp_path: Path) -> None:
    vocab = Vocab.load(imdb / IMDB_DATA.vocab)
    models = {}
    for label in ("neg", "pos"):
        run = {"fingerprint": f"lm-{label}", "tokenizer": None, "vocab_path": str(IMDB_DATA.vocab)}
        t = lm_trainer(SMALL, imdb / IMDB_DATA.lm / label, tmp_path / label, vocab, run)
        t.fit()
        models[label] = t.model
    test = imdb / IMDB_DATA.windows / "test"
    scores = class_scores(
        models, open_array(test, "padded.npy"), np.asarray(open_array(test, "lengths.npy")), torch.device("cpu")
    )
    assert scores.shape == (2, 500) and (scores < 0).all()  # mean log-probability per token
    truth = np.load(test / "labels.npy")
    m = classification_metrics(truth, scores.argmax(0), ["neg", "pos"])
    assert np.sum(m["confusion"]) == 500
    assert m["accuracy"] >= 0.56, m  # chance: 0.5 ± 0.022
