"""OCR sequence labelling (Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine Intelligence*,
Bleeding Edge Press, 2016, chapter 6) on letter.data files built in Taskar's exact format: the
bidirectional GRU reads letters that need their right neighbour; padding never counts."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from bench.harness import section, write_params
from models.data import IGNORE
from models.evaluate import lm_loss
from models.ocr import Labeller, LabellerConfig, OcrTask, SequenceLabeller
from models.trainer import Trainer
from pipeline.errors import DataError
from pipeline.io import read_json
from pipeline.ocr import data as ocr_data
from pipeline.ocr.table import load_split
from pipeline.paths import OCR_DOCS, OCR_METRICS
from pipeline.sources.ocr import PIXELS
from tests.tasksupport import letter_data

SMALL = {
    "hidden": 32,
    "batch_size": 16,
    "epochs": 8,
    "optimizer": "adam",
    "lr": 0.01,
    "plateau_patience": 100,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def ocr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 words through the ocr_data stage (folds 8 and 9 are valid and test)."""
    root = tmp_path_factory.mktemp("ocr")
    url = letter_data(root / "letter.data")
    write_params(root / "params.yaml", {"ocr_data": {"source": {"url": str(url), "cache_dir": str(root / "cache")}}})
    with contextlib.chdir(root):
        ocr_data.run("params.yaml")
    return root


def _trainer(root: Path, out: Path, bidirectional: bool) -> Trainer:
    p = section("ocr", **SMALL)
    return Trainer(lambda d: OcrTask(p, root / OCR_DOCS, d, bidirectional=bidirectional), p, out, "test")


def test_the_stage_writes_the_image_table_and_its_metrics(ocr: Path) -> None:
    stats = read_json(ocr / OCR_METRICS)
    assert stats["alphabet"] == "abcdefghijklmnopqrstuvwxyz" and stats["max_length"] == 8
    assert {k: v["words"] for k, v in stats["splits"].items()} == {"train": 320, "valid": 40, "test": 40}
    split = load_split(ocr / OCR_DOCS, "test", list(stats["alphabet"]))
    assert split.pixels.shape == (40, 8, 128) and split.labels.shape == (40, 8)
    assert ((split.labels >= 0).sum(1) == split.lengths).all()  # -1 exactly past each word
    assert not split.pixels[split.labels < 0].any()  # zero images in the padding


@pytest.mark.slow
def test_bidirectional_beats_unidirectional_where_right_context_decides(ocr: Path, tmp_path: Path) -> None:
    bi = _trainer(ocr, tmp_path / "bi", bidirectional=True)
    uni = _trainer(ocr, tmp_path / "uni", bidirectional=False)
    bi.fit()
    uni.fit()
    b, u = bi.task.evaluate("test"), uni.task.evaluate("test")
    # Every letter but a word's last is one of two twins told apart only by the next letter:
    # forward-only reads them blind (about half wrong); reading both ways gets nearly all.
    assert b["letter_error"] < 0.05 and u["letter_error"] > 0.25, (b, u)
    test = load_split(ocr / OCR_DOCS, "test", bi.task.letters)
    assert b["letters"] == u["letters"] == int(test.lengths.sum())  # real letters only
    assert bi.history[-1]["valid_letter_error"] < uni.history[-1]["valid_letter_error"]
    # The Python entry point reads words of images back into letters.
    split = load_split(ocr / OCR_DOCS, "test", bi.task.letters)
    words = [split.pixels[i, : split.lengths[i]] for i in range(5)]
    got = Labeller.load(tmp_path / "bi")(words)
    assert sum(g == w for g, w in zip(got, split.words[:5])) >= 4


def test_padded_frames_count_nowhere() -> None:
    torch.manual_seed(0)
    model = SequenceLabeller(LabellerConfig(5, PIXELS, hidden=8, layers=1, bidirectional=True, dropout=0.0)).eval()
    x = torch.rand(6, 3, 128)  # (T, B, 128)
    lengths = torch.tensor([6, 2, 4])
    y = torch.randint(0, 5, (6, 3))
    y[2:, 1], y[4:, 2] = IGNORE, IGNORE
    poisoned = x.clone()
    poisoned[2:, 1], poisoned[4:, 2] = 1e3, -1e3  # whatever the padding holds ...
    a, b = model(x, lengths), model(poisoned, lengths)
    real = y != IGNORE
    assert torch.allclose(a[real], b[real], atol=1e-6)  # ... the backward GRU starts at each word's end
    assert torch.allclose(lm_loss(a, y), lm_loss(b, y), atol=1e-5)


def test_a_test_letter_never_seen_in_training_is_named(tmp_path: Path) -> None:
    lines = (letter_data(tmp_path / "l.data", words=60)).read_text().splitlines()
    # Rename every letter of one test-fold word (fold 9) to "Q", which train never shows.
    fixed = [
        ("\t".join(parts[:1] + ["Q"] + parts[2:]) if parts[5] == "9" and parts[3] == "10" else line)
        for line, parts in ((line, line.split("\t")) for line in lines)
    ]
    (tmp_path / "l.data").write_text("\n".join(fixed) + "\n")
    write_params(
        tmp_path / "params.yaml",
        {"ocr_data": {"source": {"url": str(tmp_path / "l.data"), "cache_dir": str(tmp_path)}}},
    )
    with contextlib.chdir(tmp_path):
        ocr_data.run("params.yaml")
        with pytest.raises(DataError, match=r"test has letters \['Q'\] that the train split never shows"):
            OcrTask(section("ocr", **SMALL), OCR_DOCS, torch.device("cpu")).evaluate("test")
