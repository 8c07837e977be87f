"""Scores of a language model on a split: loss (nats/token), perplexity, bits, error rate, oracle gap.

    scores = score(model, eval_batches("stream", folder, 64, 35, 17), device, logits_mb=64)
    split_metrics(scores, level="word", oracle=oracle_json["word"]["test"])

Every target of the split is scored exactly once (models.data.eval_batches), so on
the grammar corpus the token count equals the oracle's and the gap is fair. The
output layer runs over slices of the batch's rows, none of whose logits exceed
``logits_mb`` MiB (RNNLanguageModel.score_targets): memory does not grow with V.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.data import IGNORE, Batch, eval_batch_count, eval_batches, eval_window
from models.device import autocast
from models.rnn import RNNLanguageModel, detach
from pipeline.progress import Progress

logger = logging.getLogger(f"rnnlab.{__name__}")


def lm_loss(logits: Tensor, targets: Tensor, reduction: str = "sum") -> Tensor:
    """Summed cross-entropy (nats, fp32) over targets that are not IGNORE.

    logits (T, B, V), targets (T, B). Positions marked IGNORE contribute neither
    loss nor gradient, whatever their logits: divide by the real-token count.
    ``reduction="none"`` gives the (T * B,) per-position losses instead (0 at IGNORE).
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=IGNORE, reduction=reduction
    )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the block, then back to the mode it was in, even on an error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@dataclass
class Scores:
    nats: float = 0.0  # summed negative log-likelihood
    tokens: int = 0  # scored targets
    correct: int = 0  # targets that were the model's top-1 guess

    @property
    def loss(self) -> float:
        return self.nats / max(self.tokens, 1)


@torch.no_grad()
def score(
    model: RNNLanguageModel,
    batches: Iterable[Batch],
    device: torch.device,
    logits_mb: float | None,
    progress: Progress | None = None,
) -> Scores:
    """Sum loss and top-1 hits over batches; the state carries between batches unless one is ``fresh``.

    ``logits_mb``: the largest logits slice held at once (MiB; None: a whole batch's, as before).
    ``progress``: told of each batch.
    """
    out = Scores()
    state = None
    with eval_mode(model):
        for b in batches:
            inputs, targets = b.inputs.to(device), b.targets.to(device)  # (T, B)
            with autocast(device):
                h, state = model.features(inputs, None if b.fresh else state)  # (T, B, H)
                nats, hits = model.score_targets(h, targets, logits_mb)
            state = detach(state)
            out.nats += nats
            out.correct += hits
            out.tokens += b.tokens
            if progress is not None:
                progress.update()
    return out


def score_split(
    model: RNNLanguageModel,
    mode: str,
    windows: Path,
    meta: dict[str, Any],
    split: str,
    batch_size: int,
    device: torch.device,
    logits_mb: float | None,
    *,
    progress: str | None = None,
    leave: bool = True,
) -> Scores:
    """Score ``split`` of a windows dataset (``meta``: its meta.json) in ``mode``, every target once,
    with no logits slice over ``logits_mb`` MiB (``evaluate.logits_mb``).

    ``progress``: the name to report progress under (batches; None: none); ``leave``: keep its bar.
    """
    window, stride = eval_window(meta)
    folder = Path(windows) / split
    batches = eval_batches(mode, folder, batch_size, window, stride)
    if progress is None:
        return score(model, batches, device, logits_mb)
    total = eval_batch_count(mode, folder, batch_size, window)
    with Progress(progress, total, unit="batches", logger=logger, leave=leave) as p:
        return score(model, batches, device, logits_mb, p)


def bits_key(level: str) -> str:
    """The name of a level's bits score: per character at char level (a token is a character), else per token."""
    return "bits_per_char" if level == "char" else "bits_per_token"


def loss_scores(loss: float, tokens: int, level: str) -> dict[str, Any]:
    """What every language model (the RNN, the n-gram) reports of a split from its loss (nats/token)."""
    return {"loss": loss, "perplexity": math.exp(loss), bits_key(level): loss / math.log(2), "tokens": tokens}


def oracle_comparison(perplexity: float, oracle: dict[str, Any]) -> dict[str, Any]:
    """The oracle's perplexity (oracle.json's level/split) and the gap to it."""
    # >= 1 up to noise: nothing beats the oracle
    return {"oracle_perplexity": oracle["perplexity"], "oracle_gap": perplexity / oracle["perplexity"]}


def split_metrics(s: Scores, level: str, oracle: dict[str, Any] | None = None) -> dict[str, Any]:
    """An evaluation.json entry for one split; with ``oracle`` (oracle.json's level/split) also the gap."""
    out = loss_scores(s.loss, s.tokens, level) | {"error_rate": 1.0 - s.correct / max(s.tokens, 1)}
    if oracle is not None:
        out |= oracle_comparison(out["perplexity"], oracle)
        out |= {"oracle_loss": oracle["nats_per_token"], "oracle_tokens": oracle["targets"]}
    return out
