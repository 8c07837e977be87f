"""OCR sequence labelling: a (bidirectional) GRU over a word's letter images, one softmax
shared across time steps, after Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for
Machine Intelligence* (Bleeding Edge Press, 2016), chapter 6.

    task = OcrTask(params.ocr, paths.OCR_DOCS, device, bidirectional=True)
    Trainer(lambda d: task, params.ocr, ckpt_dir, fingerprint).fit()
    task.evaluate("test")        # loss, per-letter error, per-word error

Each word is a sequence of 16×8 binary images (``pixels``, 128 per frame) padded to
the table's L letters (pipeline/ocr/table.py). The GRU reads only each word's real
frames (``pack_padded_sequence``), so the backward direction starts at the word's
last letter, not in the padding; one ``nn.Linear`` maps every step's output to
letter logits. Padded frames carry the target ``IGNORE``, so they count in neither
the loss (models.evaluate.lm_loss, the LM's masked loss) nor the per-letter error.

Why bidirectional: a letter's image is often only readable with its neighbours
(Taskar et al. 2003); a forward-only network never sees the right-hand ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models import checkpoint as ckpt
from models.config import SavedConfig
from models.data import IGNORE, shuffled_rows
from models.evaluate import eval_mode, lm_loss
from models.trainer import Task
from pipeline.ocr.table import OcrSplit, alphabet, load_split
from pipeline.params import OcrTaskParams
from pipeline.sources.ocr import PIXELS

FORMAT = "rnnlab-ocr/1"  # this task's checkpoints: models.checkpoint.load(..., expect=FORMAT)


@dataclass(frozen=True)
class LabellerConfig(SavedConfig):
    classes: int
    input_dim: int  # features per frame: PIXELS (16 x 8) for the OCR letters
    hidden: int
    layers: int
    bidirectional: bool
    dropout: float


class SequenceLabeller(nn.Module):
    """GRU (one or both directions) → dropout → one linear layer shared by every time step."""

    def __init__(self, cfg: LabellerConfig):
        super().__init__()
        self.cfg = cfg
        between = cfg.dropout if cfg.layers > 1 else 0.0
        self.rnn = nn.GRU(cfg.input_dim, cfg.hidden, cfg.layers, dropout=between, bidirectional=cfg.bidirectional)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden * (2 if cfg.bidirectional else 1), cfg.classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x (T, B, 128) frames, lengths (B,) ≥ 1 -> logits (T, B, C); rows past a length are padding."""
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, total_length=x.size(0))  # (T, B, H·dirs), zeros past each length
        return self.out(self.drop(out))


class Frames:
    """One split as tensors: frames (N, L, 128) float32, targets (N, L) with IGNORE past each word."""

    def __init__(self, split: OcrSplit):
        self.x = torch.from_numpy(split.pixels.astype(np.float32))
        self.targets = torch.from_numpy(np.where(split.labels >= 0, split.labels, IGNORE))
        self.lengths = torch.from_numpy(split.lengths)
        self.words = split.words

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """x (T, B, 128), targets (T, B), lengths (B,); T = the longest word among ``rows``."""
        idx = torch.from_numpy(rows)
        lengths = self.lengths[idx]
        width = int(lengths.max())
        x = self.x[idx, :width].transpose(0, 1).contiguous()
        y = self.targets[idx, :width].t().contiguous()
        return x.to(device), y.to(device), lengths


class OcrTask(Task):
    """Letter labelling on ``docs_dir``'s train/valid/test words; the ``Task`` a Trainer runs."""

    unit = "letters"

    def __init__(self, p: OcrTaskParams, docs_dir: Path, device: torch.device, *, bidirectional: bool | None = None):
        self.p, self.device = p, device
        self.docs_dir = Path(docs_dir)
        self.letters = alphabet(self.docs_dir)
        self.train = Frames(load_split(self.docs_dir, "train", self.letters))
        self._splits: dict[str, Frames] = {"train": self.train}
        bi = p.bidirectional if bidirectional is None else bidirectional
        self.cfg = LabellerConfig(len(self.letters), PIXELS, p.hidden, p.layers, bi, p.dropout)
        self.model = SequenceLabeller(self.cfg).to(device)
        self.steps_per_pass = math.ceil(len(self.train) / p.batch_size)

    def split(self, name: str) -> Frames:
        if name not in self._splits:
            self._splits[name] = Frames(load_split(self.docs_dir, name, self.letters))
        return self._splits[name]

    def train_loss(self, model: nn.Module, step: int) -> tuple[Tensor, int]:
        rows = shuffled_rows(self.p.seed, step, self.steps_per_pass, len(self.train), self.p.batch_size)
        x, y, lengths = self.train.batch(rows, self.device)
        return lm_loss(model(x, lengths), y), int(lengths.sum())

    @torch.no_grad()
    def evaluate(self, name: str) -> dict[str, Any]:
        """Loss (nats/letter), per-letter error and per-word error (any letter wrong) on a split."""
        data = self.split(name)
        nats, wrong, letters, words_wrong = 0.0, 0, 0, 0
        with eval_mode(self.model):
            for start in range(0, len(data), self.p.eval_batch_size):
                rows = np.arange(start, min(start + self.p.eval_batch_size, len(data)))
                x, y, lengths = data.batch(rows, self.device)
                logits = self.model(x, lengths)  # (T, B, C)
                nats += float(lm_loss(logits, y))
                miss = (logits.argmax(-1) != y) & (y != IGNORE)  # (T, B): padded frames never count
                wrong += int(miss.sum())
                words_wrong += int(miss.any(0).sum())
                letters += int(lengths.sum())
        return {
            "loss": nats / letters,
            "letter_error": wrong / letters,
            "word_error": words_wrong / len(data),
            "letters": letters,
            "words": len(data),
        }

    def validate(self) -> dict[str, float]:
        m = self.evaluate("valid")
        return {"loss": m["loss"], "letter_error": m["letter_error"], "word_error": m["word_error"]}

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"format": FORMAT, "labeller": self.cfg.to_dict(), "alphabet": self.letters}


class Labeller:
    """A trained labeller: letter images in, letters out (the Python entry point)."""

    def __init__(self, model: SequenceLabeller, letters: list[str]):
        self.model, self.letters = model.eval(), letters

    @classmethod
    def load(cls, path: str | Path, device: torch.device | None = None) -> Labeller:
        saved = ckpt.load(path, map_location=device or "cpu", expect=FORMAT)
        model = SequenceLabeller(LabellerConfig.from_dict(saved["labeller"]))
        model.load_state_dict(saved["model"])
        return cls(model.to(device or "cpu"), saved["alphabet"])

    @torch.no_grad()
    def __call__(self, words: list[np.ndarray]) -> list[str]:
        """Each word: (n, 16, 8) or (n, 128) binary images -> its n letters."""
        device = next(self.model.parameters()).device
        frames = [torch.as_tensor(np.asarray(w, np.float32).reshape(len(w), PIXELS)) for w in words]
        lengths = torch.tensor([len(f) for f in frames])
        x = nn.utils.rnn.pad_sequence(frames).to(device)  # (T, B, 128)
        best = self.model(x, lengths).argmax(-1).t().cpu().tolist()  # (B, T)
        return ["".join(self.letters[i] for i in row[:n]) for row, n in zip(best, lengths.tolist())]
