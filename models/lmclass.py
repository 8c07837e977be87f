"""LM-based text classification: one language model per class, the likelier one wins.

    per_class = {label: ckpt.load_model(f"artifacts/lmclass/checkpoints/{label}", device)[0] for label in labels}
    scores = class_scores(per_class, padded, lengths, device)     # (C, R) mean log-prob per token
    predicted = scores.argmax(0)

Each class's model is the ordinary language model (models/lm.py's task and
``lm_trainer``, unchanged) trained on that class's reviews only
(``data/imdb/lm/<label>/``, pipeline/lmclass/data.py), all with the one shared
vocabulary. A review is scored as a document, as evaluation does: from a zero
state after ``<eos>``, every token and the closing ``<eos>`` predicted once
(models.data.padded_batch). Its score under a class is the length-normalised
log-likelihood, log P(review | class) / tokens: the same tokens are scored by
every class, so normalising never changes the decision for one review, but it
puts reviews of different lengths on one scale (the margins in the report).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from models.data import IGNORE, padded_batch
from models.device import autocast
from models.evaluate import eval_mode, lm_loss


@torch.no_grad()
def document_logprobs(
    model: nn.Module, padded: np.ndarray, lengths: np.ndarray, device: torch.device, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Total log-probability (nats, ≤ 0) and scored tokens of each padded row: two (R,) arrays."""
    total = np.zeros(len(padded))
    tokens = np.zeros(len(padded), np.int64)
    with eval_mode(model):
        for start in range(0, len(padded), batch_size):
            rows = slice(start, start + batch_size)
            b = padded_batch(np.asarray(padded[rows]), np.asarray(lengths[rows]))
            inputs, targets = b.inputs.to(device), b.targets.to(device)  # (T, B)
            with autocast(device):
                logits, _ = model(inputs)  # (T, B, V), from a zero state
            nll = lm_loss(logits, targets, reduction="none").view(targets.shape)  # (T, B), 0 at IGNORE
            stop = start + targets.size(1)
            total[start:stop] = -nll.sum(0).double().cpu().numpy()
            tokens[start:stop] = (targets != IGNORE).sum(0).cpu().numpy()
    return total, tokens


def class_scores(
    models: Mapping[str, nn.Module], padded: np.ndarray, lengths: np.ndarray, device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """(C, R) length-normalised log-likelihood of each row under each class's model, in ``models``' order."""
    rows = []
    for model in models.values():
        total, tokens = document_logprobs(model, padded, lengths, device, batch_size)
        rows.append(total / np.maximum(tokens, 1))
    return np.stack(rows)
