"""Sentiment classification: a GRU or LSTM over word embeddings, two readouts.

    task = SentimentTask(params.sentiment, paths.IMDB_DATA.windows, vocab, device, vocab_path=...,
                         tokenizer={...}, embeddings=initial_embeddings(path, vocab))
    Trainer(lambda d: task, params.sentiment, ckpt_dir, fingerprint).fit()
    task.evaluate("test")      # loss, accuracy, confusion matrix

Rows are the windows stage's padded mode (pipeline/windows.py): one review per
row, its tokens then ``<eos>``, truncated to ``max_length`` and right-padded,
with ``lengths.npy`` and ``labels.npy`` beside it. The recurrent layer is any
cell of models/rnn.py's factory (nn.GRU, nn.LSTM, or a models/cells.py variant).

Readouts over the outputs (T, B, H) of a review of length n:

``last``
    the last relevant output, gathered at step n - 1: padding past n is never read,
    and since the network runs forward, no output before n has seen any. This is the
    readout of Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine
    Intelligence* (Bleeding Edge Press, 2016), chapter 6.
``mean`` / ``max``
    pooling over the n valid steps only; padded steps are masked out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import cells
from models import checkpoint as ckpt
from models.config import ModelConfigError, SavedConfig
from models.data import open_array, read_meta, shuffled_rows
from models.evaluate import eval_mode
from models.rnn import CELLS
from models.trainer import Task
from pipeline.errors import DataError, ParamsError
from pipeline.params import SentimentParams
from pipeline.vectors import align_text_vectors, load_embeddings
from pipeline.vocab import PAD, Vocab

FORMAT = "rnnlab-sentiment/1"  # this task's checkpoints: models.checkpoint.load(..., expect=FORMAT)

READOUTS = ("last", "mean", "max")


@dataclass(frozen=True)
class ClassifierConfig(SavedConfig):
    """Everything that fixes a ``SequenceClassifier``'s parameters."""

    vocab_size: int
    classes: int
    cell: str
    emb_dim: int
    hidden: int
    layers: int
    dropout: float
    readout: str


def readout(out: Tensor, lengths: Tensor, how: str) -> Tensor:
    """out (T, B, H), lengths (B,) ≥ 1 -> (B, H): the last relevant output, or mean/max over valid steps."""
    if how == "last":
        return out[lengths - 1, torch.arange(out.size(1), device=out.device)]  # (B, H)
    valid = (torch.arange(out.size(0), device=out.device)[:, None] < lengths[None, :])[..., None]  # (T, B, 1)
    if how == "mean":
        return (out * valid).sum(0) / lengths[:, None].to(out.dtype)
    if how == "max":
        return out.masked_fill(~valid, -math.inf).max(0).values
    raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {how!r}")


class SequenceClassifier(nn.Module):
    """embedding → recurrent cell (the factory's) → readout → linear → class logits."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        if cfg.cell not in CELLS:
            raise ModelConfigError(f"unknown cell {cfg.cell!r}; choose one of {', '.join(sorted(CELLS))}")
        if cfg.readout not in READOUTS:
            raise ModelConfigError(f"readout must be one of {', '.join(READOUTS)}, got {cfg.readout!r}")
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_dim, padding_idx=PAD)
        self.rnn = CELLS[cfg.cell](cfg.emb_dim, cfg.hidden, cfg.layers, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, cfg.classes)
        cells.set_forget_bias(self.rnn)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x (T, B) ids, lengths (B,) -> logits (B, C)."""
        out, _ = self.rnn(self.drop(self.embedding(x)))  # (T, B, H)
        return self.out(self.drop(readout(out, lengths, self.cfg.readout)))


# --- embeddings from the skipgram stage or a pretrained file ------------------------------


def initial_embeddings(
    path: str | Path, vocab: Vocab, vocab_path: str | Path, emb_dim: int, key: str = "sentiment"
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(matrix (V, D), rows found (V,), summary) from an ``embeddings.npy`` or a word2vec/GloVe text file.

    An .npy must belong to ``vocab`` (its embeddings.json says which vocabulary it was trained
    on); a text file is aligned by token and its out-of-vocabulary count reported.
    """
    path = Path(path)
    if path.suffix == ".npy":
        matrix = load_embeddings(path, vocab, vocab_path)
        found, summary = np.ones(len(vocab), bool), {"format": "npy", "dim": int(matrix.shape[1]), "oov": 0}
    else:
        aligned = align_text_vectors(path, vocab)
        matrix, found, summary = aligned.matrix, aligned.found, aligned.summary()
    if matrix.shape[1] != emb_dim:
        raise ParamsError(
            f"{key}.emb_dim is {emb_dim} but {path} holds {matrix.shape[1]}-dimensional vectors; "
            f"set {key}.emb_dim: {matrix.shape[1]}"
        )
    return matrix, found, {"path": str(path), **summary}


# --- data ----------------------------------------------------------------------------------


class LabelledRows:
    """One split's padded rows, lengths and labels (memory-mapped)."""

    def __init__(self, folder: Path, classes: list[str]):
        self.folder = Path(folder)
        self.padded = open_array(folder, "padded.npy")  # (R, M)
        self.lengths = np.asarray(open_array(folder, "lengths.npy"), np.int64)  # (R,)
        try:
            self.labels = np.asarray(np.load(self.folder / "labels.npy"), np.int64)  # (R,)
        except FileNotFoundError:
            raise DataError(
                f"{self.folder}/labels.npy: not found; the documents have no labels "
                "(a classifier needs a labelled source such as IMDB)"
            ) from None
        if (self.labels < 0).any():
            raise DataError(f"{self.folder}: {int((self.labels < 0).sum())} rows have no label; drop unlabelled splits")
        counts = np.bincount(self.labels, minlength=len(classes))
        empty = [c for c, n in zip(classes, counts) if n == 0]
        if empty:
            raise DataError(
                f"{self.folder}: class {', '.join(map(repr, empty))} has no rows here; every class "
                "needs examples in every split"
            )
        self.counts = counts

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """x (T, B) int64 with T the longest length among ``rows``, lengths (B,), labels (B,)."""
        lengths = self.lengths[rows]
        width = int(lengths.max())
        x = torch.from_numpy(np.ascontiguousarray(self.padded[rows, :width].T, dtype=np.int64))
        return x.to(device), torch.from_numpy(lengths).to(device), torch.from_numpy(self.labels[rows]).to(device)


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    return np.bincount(truth * classes + pred, minlength=classes * classes).reshape(classes, classes)


def classification_metrics(truth: np.ndarray, pred: np.ndarray, names: list[str]) -> dict[str, Any]:
    cm = confusion_matrix(truth, pred, len(names))
    return {
        "accuracy": float((truth == pred).mean()) if len(truth) else 0.0,
        "examples": len(truth),
        "classes": names,
        "confusion": cm.tolist(),  # rows: true class, columns: predicted, in `classes` order
    }


class SentimentTask(Task):
    """Review classification on ``data_dir/{train,valid,...}``; the ``Task`` a Trainer runs."""

    unit = "reviews"

    def __init__(
        self,
        p: SentimentParams,
        data_dir: Path,
        vocab: Vocab,
        device: torch.device,
        *,
        vocab_path: str,
        tokenizer: dict[str, Any] | None = None,
        embeddings: tuple[np.ndarray, np.ndarray, dict[str, Any]] | None = None,
        key: str = "sentiment",
    ):
        self.p, self.device, self.key = p, device, key
        self.data_dir = Path(data_dir)
        self.meta = read_meta(self.data_dir, vocab)
        self.names: list[str] = self.meta.get("labels") or []
        if len(self.names) < 2:
            raise DataError(
                f"{self.data_dir}/meta.json: labels {self.names}; a classifier needs at least two classes "
                "(a labelled source such as IMDB, windows with 'padded' in modes)"
            )
        self.vocab_ref = ckpt.vocab_ref(vocab, vocab_path)
        self.tokenizer = tokenizer
        self.train = LabelledRows(self.data_dir / "train", self.names)
        self._splits: dict[str, LabelledRows] = {"train": self.train}  # opened once, validated every epoch
        self.cfg = ClassifierConfig(
            len(vocab), len(self.names), p.cell, p.emb_dim, p.hidden, p.layers, p.dropout, p.readout
        )
        try:
            self.model = SequenceClassifier(self.cfg).to(device)
        except ModelConfigError as e:
            raise ModelConfigError(f"{key}: {e}") from None
        self.embeddings_info: dict[str, Any] | None = None
        if embeddings is not None:
            matrix, found, self.embeddings_info = embeddings
            with torch.no_grad():
                rows = torch.from_numpy(np.flatnonzero(found)).to(device)
                self.model.embedding.weight[rows] = torch.from_numpy(matrix[found]).to(device)
        self.model.embedding.weight.requires_grad_(not p.freeze_embeddings)
        self.steps_per_pass = math.ceil(len(self.train) / p.batch_size)

    def rows(self, step: int) -> np.ndarray:
        return shuffled_rows(self.p.seed, step, self.steps_per_pass, len(self.train), self.p.batch_size)

    def train_loss(self, model: nn.Module, step: int) -> tuple[Tensor, int]:
        x, lengths, y = self.train.batch(self.rows(step), self.device)
        return F.cross_entropy(model(x, lengths).float(), y, reduction="sum"), len(y)

    @torch.no_grad()
    def predict(self, split: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(true labels, predicted labels, summed loss) over a split, in row order."""
        if split not in self._splits:
            self._splits[split] = LabelledRows(self.data_dir / split, self.names)
        data = self._splits[split]
        preds, loss = [], 0.0
        with eval_mode(self.model):
            for start in range(0, len(data), self.p.eval_batch_size):
                rows = np.arange(start, min(start + self.p.eval_batch_size, len(data)))
                x, lengths, y = data.batch(rows, self.device)
                logits = self.model(x, lengths).float()
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
                preds.append(logits.argmax(-1).cpu().numpy())
        return data.labels, np.concatenate(preds), loss

    def evaluate(self, split: str) -> dict[str, Any]:
        truth, pred, loss = self.predict(split)
        return {"loss": loss / len(truth), **classification_metrics(truth, pred, self.names)}

    def validate(self) -> dict[str, float]:
        m = self.evaluate("valid")
        return {"loss": m["loss"], "accuracy": m["accuracy"]}

    def checkpoint_fields(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "classifier": self.cfg.to_dict(),
            "labels": self.names,
            "max_length": self.meta["params"]["max_length"],
            "vocab": self.vocab_ref,
            "tokenizer": self.tokenizer,
            "embeddings": self.embeddings_info,
        }


# --- inference -------------------------------------------------------------------------------


class Classifier:
    """A trained sentiment classifier with its vocabulary and tokenizer: text in, class probabilities out."""

    def __init__(self, model: SequenceClassifier, vocab: Vocab, saved: dict[str, Any], device: torch.device):
        from pipeline.tokenize import WordTokenizer

        self.model, self.vocab, self.device = model.eval(), vocab, device
        self.labels: list[str] = saved["labels"]
        self.max_length: int = saved["max_length"]
        tok = saved["tokenizer"] or {}
        self._tokenize = WordTokenizer(tok.get("pattern", r"[A-Za-z]+|[!?.:,()]"), tok.get("lowercase", True))

    @classmethod
    def load(cls, path: str | Path, vocab: str | Path | None = None, device: torch.device | None = None) -> Classifier:
        device = device or torch.device("cpu")
        saved = ckpt.load(path, map_location=device, expect=FORMAT)
        v = ckpt.load_vocab(saved, vocab)
        model = SequenceClassifier(ClassifierConfig.from_dict(saved["classifier"]))
        model.load_state_dict(saved["model"])
        return cls(model.to(device), v, saved, device)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> list[dict[str, float]]:
        """Class probabilities per text, tokenized and truncated as in training."""
        import pyarrow as pa

        from pipeline.vocab import EOS

        token_lists = self._tokenize(pa.array(texts, pa.string())).to_pylist()
        rows = [(self.vocab.encode(t) + [EOS])[: self.max_length] for t in token_lists]
        lengths = torch.tensor([len(r) for r in rows])
        x = torch.zeros(int(lengths.max()), len(rows), dtype=torch.long)  # (T, B), <pad> = 0
        for b, r in enumerate(rows):
            x[: len(r), b] = torch.tensor(r)
        probs = torch.softmax(self.model(x.to(self.device), lengths.to(self.device)).float(), -1).cpu()
        return [dict(zip(self.labels, p.tolist())) for p in probs]
