"""Best weights and early stopping: a run that overfits is evaluated, sampled and scored with its best
validation epoch's weights, not its last; early_stop ends it; resume stays exact for both files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench.harness import SHARED_DATA, run_data_stages, write_params
from flows import lm
from models import checkpoint as ckpt
from models.sampling import LanguageModel
from pipeline import paths
from pipeline.paths import checkpoints
from tests.test_trainer import RUN, make


@pytest.fixture(scope="module")
def small_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few WikiText paragraphs each for train, valid and test: a word model overfits them in a few epochs."""
    root = tmp_path_factory.mktemp("overfit")
    lines = [line for line in (SHARED_DATA / "wikitext-2/valid.txt").read_text().splitlines() if len(line) > 200]
    for i, split in enumerate(("train", "valid", "test")):
        (root / f"{split}.txt").write_text("\n".join(lines[30 * i : 30 * (i + 1)]) + "\n")
    text = {"train": str(root / "train.txt"), "valid": str(root / "valid.txt"), "test": str(root / "test.txt")}
    level = {"modes": ["stream"]}
    train = {"emb_dim": 32, "hidden": 64, "batch_size": 4, "bptt": 20, "lr": 0.01, "epoch_size": None}
    write_params(
        root / "params.yaml",
        {
            "corpus": {"source": "text", "text": text},
            "windows": {"word": level, "char": level},
            "train": {"word": {**train, "epochs": 12, "early_stop": 2}},
            "evaluate": {"batch_size": 64},  # as the Trainer's validation: the same segments, the same numbers
            "sample": {"word": {"count": 1, "max_tokens": 5}},
        },
    )
    return run_data_stages(root)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_flows")
def test_an_overfitting_run_is_evaluated_with_its_best_epoch_and_stops_early(
    small_text: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(small_text)
    out = lm.run("word", "params.yaml")
    history = out["train"]["history"]
    losses = [h["valid_loss"] for h in history]
    best = min(history, key=lambda h: h["valid_loss"])
    assert best["epoch"] < len(history), f"no overfitting to test: valid losses {losses}"
    assert losses[-1] > best["valid_loss"]  # the last weights are worse
    assert len(history) == best["epoch"] + 2 < 12  # early_stop: 2 validations without improvement

    valid = out["evaluation"]["valid"]
    assert valid["epoch"] == best["epoch"] == out["train"]["best_epoch"]
    assert math.isclose(valid["loss"], best["valid_loss"], rel_tol=1e-9)
    assert not math.isclose(valid["loss"], losses[-1], rel_tol=1e-6)
    assert json.loads(paths.metrics_file("word").read_text())["best_epoch"] == best["epoch"]

    # The CLI's model is the best one too.
    saved = ckpt.load(checkpoints("word") / ckpt.BEST)
    assert saved["best"]["epoch"] == best["epoch"] and saved["best"]["valid"]["loss"] == best["valid_loss"]
    lm_ = LanguageModel.load(checkpoints("word"))
    assert all(torch.equal(v, saved["model"][k]) for k, v in lm_.model.state_dict().items())


@pytest.mark.slow
def test_best_weights_resume_exactly(lm_data: Path, tmp_path: Path) -> None:
    """Killed mid-epoch after a best epoch was written, then resumed: both files equal an uninterrupted run's."""
    over = {"epochs": 3, "epoch_size": 6, "checkpoint_every": 4, "lr": 0.05}
    straight = make(lm_data, tmp_path / "a", **over)
    straight.fit()
    cut = make(lm_data, tmp_path / "b", **over)
    cut.run_epoch()
    for _ in range(4):  # into epoch 2, then the periodic checkpoint a SIGKILL would leave behind
        cut.train_step()
    cut.save()
    resumed = make(lm_data, tmp_path / "b", **over)
    assert resumed.step == 10 and resumed.epoch == 1
    resumed.fit()
    for name in (ckpt.FILE, ckpt.BEST):
        a, b = ckpt.load(tmp_path / "a" / name), ckpt.load(tmp_path / "b" / name)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    assert ckpt.load(tmp_path / "b" / ckpt.BEST)["best"] == ckpt.load(tmp_path / "a" / ckpt.BEST)["best"]


def test_a_fresh_run_drops_the_best_weights_of_another(lm_data: Path, tmp_path: Path) -> None:
    make(lm_data, tmp_path, epochs=1).fit()
    assert (tmp_path / ckpt.BEST).is_file()
    other = make(lm_data, tmp_path, run={**RUN, "fingerprint": "other"}, epochs=1)
    assert not (tmp_path / ckpt.BEST).exists() and other.epoch == 0
