"""The language-modelling task: an ``RNNLanguageModel`` on one level's windows datasets.

    provenance = {"fingerprint": fp, "tokenizer": {...}, "vocab_path": str(paths.vocab("word"))}
    trainer = lm_trainer(params.train.word, paths.windows("word"), paths.checkpoints("word"), vocab, provenance)
    trainer.fit()

Trains in any of the three data modes the windows stage wrote: stream
(contiguous TBPTT, the recurrent state carried across batches and detached),
window, or padded (the loss masked so that padding counts for nothing).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models import checkpoint as ckpt
from models import distributed
from models.config import ModelConfig, ModelConfigError
from models.data import block, read_meta, train_batches
from models.evaluate import score_split
from models.rnn import RNNLanguageModel, detach, state_from_list, state_to_list
from models.trainer import Trainer
from pipeline.errors import ParamsError
from pipeline.params import TrainParams
from pipeline.vocab import Vocab


class LanguageModelTask:
    """Next-token prediction on ``data_dir/{train,valid}``; the ``Task`` a Trainer runs."""

    unit = "tokens"

    def __init__(
        self,
        params: TrainParams,
        data_dir: Path,
        vocab: Vocab,
        device: torch.device,
        *,
        vocab_path: str,
        tokenizer: dict[str, Any] | None,
        key: str = "train",
        eval_batch_size: int = 64,
    ):
        self.p, self.device, self.key = params, device, key
        self.data_dir = Path(data_dir)
        self.meta = read_meta(self.data_dir, vocab)
        self.vocab_ref = ckpt.vocab_ref(vocab, vocab_path)
        self.tokenizer = tokenizer  # stored with the model, so sampling needs no params file
        self.eval_batch_size = eval_batch_size
        self.cfg = ModelConfig.from_params(params, len(vocab))
        try:
            self.model = RNNLanguageModel(self.cfg).to(device)
        except ModelConfigError as e:
            raise ModelConfigError(f"{key}: {e}") from None
        # Under torchrun, this rank's block of every global batch (models/distributed.py).
        self.dist = distributed.current()
        if params.batch_size < self.dist.world:
            raise ParamsError(
                f"{key}.batch_size={params.batch_size} is smaller than the {self.dist.world} training processes "
                f"({key}.distributed.nproc): each needs at least one row; raise batch_size or lower nproc"
            )
        self.data = train_batches(
            params.mode,
            self.data_dir / "train",
            params.batch_size,
            params.bptt,
            params.seed,
            rank=self.dist.rank,
            world=self.dist.world,
        )
        self.steps_per_pass = self.data.steps_per_pass
        self.state = None  # stream mode: the recurrent state carried between batches

    def train_loss(self, model: nn.Module, step: int) -> tuple[Tensor, int]:
        batch = self.data.batch(step)
        if batch.fresh:
            self.state = None
        inputs, targets = batch.inputs.to(self.device), batch.targets.to(self.device)  # (T, B)
        # Summed nats, the output layer run in slices of at most logits_mb (models/rnn.py).
        loss, state = model(inputs, self.state, targets=targets, logits_mb=self.p.logits_mb)
        # TBPTT: the next batch starts from this state, cut from this batch's graph.
        self.state = detach(state) if self.p.mode == "stream" else None
        return loss, batch.tokens

    def validate(self) -> dict[str, float]:
        split = (self.model, self.p.mode, self.data_dir, self.meta, "valid", self.eval_batch_size, self.device)
        # A bar of its own that goes when it is done: a large valid split takes a while each epoch.
        loss = score_split(*split, logits_mb=self.p.logits_mb, progress=f"{self.key} valid", leave=False).loss
        return {"loss": loss, "perplexity": math.exp(loss)}

    def state_dict(self) -> dict[str, Any]:
        """The carried state of the whole global batch: each rank's rows, gathered in rank order
        (a collective: every rank calls it), so that any number of processes can resume it."""
        if not self.dist.active:
            return {"state": state_to_list(self.state)}
        parts = distributed.gather(state_to_list(self.state), self.dist)  # per rank: [(layers, b_r, H), ...] | None
        if parts[0] is None:  # fresh at the same step on every rank
            return {"state": None}
        return {"state": [torch.cat(tensors, dim=1) for tensors in zip(*parts)]}  # [(layers, B, H), ...]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take this rank's rows of a whole-batch state (written by any number of processes)."""
        parts = state["state"]
        if parts is not None and self.dist.active:
            lo, hi = block(self.p.batch_size, self.dist.rank, self.dist.world)
            parts = [t[:, lo:hi].contiguous() for t in parts]
        self.state = state_from_list(parts, self.device)

    def checkpoint_fields(self) -> dict[str, Any]:
        cfg, vocab, tokenizer = self.cfg.to_dict(), self.vocab_ref, self.tokenizer
        fields = {"format": ckpt.FORMAT, "config": cfg, "vocab": vocab, "tokenizer": tokenizer}
        assert fields.keys() == ckpt.LM_KEYS.keys(), "update models.checkpoint.LM_KEYS"
        return fields


def lm_trainer(
    params: TrainParams,
    data_dir: Path,
    ckpt_dir: Path,
    vocab: Vocab,
    provenance: dict[str, Any],
    *,
    key: str = "train",
    eval_batch_size: int = 64,
) -> Trainer:
    """A Trainer for one level's language model. ``provenance``: what identifies the run and its model,
    recorded in the checkpoint: fingerprint, tokenizer, vocab_path."""

    def build(device: torch.device) -> LanguageModelTask:
        return LanguageModelTask(
            params,
            data_dir,
            vocab,
            device,
            vocab_path=provenance["vocab_path"],
            tokenizer=provenance.get("tokenizer"),
            key=key,
            eval_batch_size=eval_batch_size,
        )

    return Trainer(build, params, ckpt_dir, provenance["fingerprint"], key=key)
