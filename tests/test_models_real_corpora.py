"""Real text at both levels: WikiText-2 valid as train, WikiText-2 test as held-out (read in place
from ../shared/data), through the real data stages; a few training steps must lower the loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness import run_data_stages, section, write_params
from models.lm import lm_trainer
from pipeline.vocab import Vocab

SHORT = {"hidden": 64, "layers": 1, "lr": 0.01, "epochs": 1, "epoch_size": 40, "device": "cpu"}
TRAIN = {
    "word": section("train.word", cell="lstm", emb_dim=32, batch_size=16, bptt=35, **SHORT),
    "char": section("train.char", cell="gru", emb_dim=16, batch_size=32, bptt=64, **SHORT),
}


@pytest.fixture(scope="module")
def wikitext(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wikitext")
    wt = shared_data / "wikitext-2"
    text = {"train": str(wt / "valid.txt"), "valid": str(wt / "test.txt"), "test": str(wt / "test.txt")}
    write_params(
        root / "params.yaml",
        {
            "corpus": {"source": "text", "text": text},
            "vocab": {"word": {"max_size": 2000}},  # a small softmax keeps the test fast; the rest is <unk>
            "windows": {"word": {"modes": ["stream"]}, "char": {"modes": ["stream"]}},
        },
    )
    return run_data_stages(root)


@pytest.mark.slow
@pytest.mark.parametrize("level", ["word", "char"])
def test_a_few_steps_on_wikitext_lower_the_held_out_loss(wikitext: Path, tmp_path: Path, level: str) -> None:
    v = Vocab.load(wikitext / f"data/vocab/{level}.json")
    run = {"fingerprint": "wikitext", "tokenizer": None, "vocab_path": "v"}
    t = lm_trainer(TRAIN[level], wikitext / f"data/windows/{level}", tmp_path, v, run)
    before = t.task.validate()["loss"]  # an untrained model: about log(vocabulary size)
    history = t.fit()
    after = history[-1]["valid_loss"]
    assert after < before - (0.5 if level == "word" else 0.8), (before, after)
    assert history[-1]["train_loss"] < before
