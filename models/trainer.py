"""The training loop: TBPTT / windows / padded documents, checkpoints, exact resume.

    trainer = Trainer(params.train.word, Path("data/windows/word"), Path("artifacts/word/checkpoints"),
                      vocab, run_info={"fingerprint": fp, "tokenizer": {...}, "vocab_path": "data/vocab/word.json"})
    while not trainer.done:
        record = trainer.run_epoch()      # epoch_size steps, validation, LR schedule, checkpoint

Exact resume: a checkpoint (every ``checkpoint_every`` steps and at each epoch's
end) holds the weights, optimizer, scheduler, every RNG state, the carried
stream state and the running epoch sums. Batches are a pure function of the
step (models.data), so a run killed at any point and restarted from its last
checkpoint repeats exactly the same operations: on CPU, with the same thread
count, its final weights are bit-identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import checkpoint as ckpt
from models.config import ModelConfig, ModelConfigError
from models.data import eval_batches, train_batches
from models.device import autocast, resolve_device
from models.evaluate import lm_loss, score
from models.rnn import build_model, detach, state_from_list, state_to_list
from pipeline.errors import DataError, RnnlabError
from pipeline.params import TrainParams
from pipeline.vocab import Vocab


class TrainingDiverged(RnnlabError):
    """The loss or the gradients became NaN or infinite."""


def make_optimizer(p: TrainParams, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    if p.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


def clip_gradients(params: list[nn.Parameter], how: str, value: float) -> float | None:
    """Clip in place: by global L2 norm (seed 002) or each element by value (seed 001).

    Returns the global norm before clipping when ``how == "norm"``, else None.
    """
    if how == "norm":
        return float(nn.utils.clip_grad_norm_(params, value))
    if how == "value":
        nn.utils.clip_grad_value_(params, value)
    return None


def read_meta(data_dir: Path, vocab: Vocab) -> dict[str, Any]:
    """The windows stage's meta.json, checked against the vocabulary the model will use."""
    path = data_dir / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `dvc repro` (stage windows) first") from None
    if meta["vocab_sha256"] != vocab.sha256:
        raise DataError(f"{path}: encoded with another vocabulary than {vocab.level}'s; rerun `dvc repro`")
    return meta


class Trainer:
    """One level's model, optimizer and progress; resumes from ``ckpt_dir/last.pt`` when it matches."""

    def __init__(
        self,
        params: TrainParams,
        data_dir: Path,
        ckpt_dir: Path,
        vocab: Vocab,
        run_info: dict[str, Any],
        *,
        key: str = "train",
        eval_batch_size: int = 64,
        log: Callable[[str], None] = print,
    ):
        self.p, self.key, self.log = params, key, log
        self.data_dir, self.path = Path(data_dir), Path(ckpt_dir) / ckpt.FILE
        self.run_info = run_info  # fingerprint, tokenizer, vocab_path: stored in every checkpoint
        self.meta = read_meta(self.data_dir, vocab)
        self.vocab_ref = {"path": str(run_info["vocab_path"]), "sha256": vocab.sha256, "size": len(vocab)}
        self.device = resolve_device(params.device, f"{key}.device")
        self.eval_batch_size = eval_batch_size

        ckpt.seed_all(params.seed)
        self.cfg = ModelConfig.from_params(params, len(vocab))
        try:
            self.model = build_model(self.cfg).to(self.device)
        except ModelConfigError as e:
            raise ModelConfigError(f"{key}: {e}") from None
        self.params = list(self.model.parameters())
        self.optimizer = make_optimizer(params, self.params)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=params.plateau_factor, patience=params.plateau_patience
        )
        self.data = train_batches(params.mode, self.data_dir / "train", params.batch_size, params.bptt, params.seed)
        self.steps_per_epoch = params.epoch_size or self.data.steps_per_pass

        self.step = 0  # optimizer steps done; also the data position
        self.epoch = 0  # epochs finished (validated)
        self.epoch_nats, self.epoch_tokens = 0.0, 0  # running sums of the current epoch
        self.history: list[dict[str, Any]] = []
        self.state = None  # stream mode: the recurrent state carried between batches
        self.sha256: str | None = None  # of the last checkpoint written
        self.tokens_per_s = 0.0  # of the last epoch, for the log
        self._resume()

    @property
    def done(self) -> bool:
        return self.epoch >= self.p.epochs

    # --- checkpoints --------------------------------------------------------------------

    def _resume(self) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # left by a SIGKILL mid-write
            stale.unlink(missing_ok=True)
        if not self.path.exists():
            return
        c = ckpt.load(self.path, map_location=self.device)
        if c.get("fingerprint") != self.run_info["fingerprint"]:
            self.log(f"{self.path}: from other data, params or code; training from scratch")
            return
        self.model.load_state_dict(c["model"])
        self.optimizer.load_state_dict(c["optimizer"])
        self.scheduler.load_state_dict(c["scheduler"])
        ckpt.set_rng_state(c["rng"])
        pr = c["progress"]
        self.step, self.epoch, self.epoch_nats, self.epoch_tokens = pr["step"], pr["epoch"], pr["nats"], pr["tokens"]
        self.history = c["history"]
        self.state = state_from_list(c["state"], self.device)
        self.sha256 = ckpt.sha256_file(self.path)
        if c.get("threads") != torch.get_num_threads() and self.device.type == "cpu":
            self.log(f"resuming with {torch.get_num_threads()} threads, not {c.get('threads')}: not bit-exact")
        self.log(f"resumed from {self.path} at step {self.step} (epoch {self.epoch}/{self.p.epochs})")

    def checkpoint(self) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "config": self.cfg.to_dict(),
            "train": self.p.model_dump(mode="json"),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            "progress": {"step": self.step, "epoch": self.epoch, "nats": self.epoch_nats,
                         "tokens": self.epoch_tokens, "done": self.done},  # fmt: skip
            "state": state_to_list(self.state),
            "history": self.history,
            "vocab": self.vocab_ref,
            "tokenizer": self.run_info.get("tokenizer"),
            "fingerprint": self.run_info["fingerprint"],
            "threads": torch.get_num_threads(),
        }

    def save(self) -> None:
        """Write the checkpoint, unless the weights are no longer finite (the last good one stays)."""
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise self._diverged("the weights", "non-finite")
        self.sha256 = ckpt.save(self.checkpoint(), self.path)

    def _diverged(self, what: str, value: object) -> TrainingDiverged:
        kept = f"the last good checkpoint is kept at {self.path}" if self.path.exists() else "no checkpoint was written"
        return TrainingDiverged(
            f"training diverged: {what} became {value} at step {self.step + 1} (epoch {self.epoch + 1}); {kept}. "
            f"Lower {self.key}.lr or clip gradients ({self.key}.clip: norm, a smaller {self.key}.clip_value)"
        )

    # --- training -----------------------------------------------------------------------

    def train_step(self) -> None:
        batch = self.data.batch(self.step)
        if batch.fresh:
            self.state = None
        inputs, targets = batch.inputs.to(self.device), batch.targets.to(self.device)  # (T, B)
        with autocast(self.device):
            logits, state = self.model(inputs, self.state)  # (T, B, V)
        nats = lm_loss(logits, targets)
        nats_value = nats.item()
        if not math.isfinite(nats_value):
            raise self._diverged("the loss", nats_value)
        self.optimizer.zero_grad(set_to_none=True)
        (nats / batch.tokens).backward()  # mean over real tokens only
        norm = clip_gradients(self.params, self.p.clip, self.p.clip_value)
        if norm is not None and not math.isfinite(norm):
            raise self._diverged("the gradient norm", norm)
        self.optimizer.step()
        self.state = detach(state) if self.p.mode == "stream" else None
        self.epoch_nats += nats_value
        self.epoch_tokens += batch.tokens
        self.step += 1

    def validate(self) -> float:
        window = self.meta["params"]["length"]
        stride = self.meta["params"]["stride"] or max(1, window // 2)
        batches = eval_batches(self.p.mode, self.data_dir / "valid", self.eval_batch_size, window, stride)
        return score(self.model, batches, self.device).loss

    def run_epoch(self) -> dict[str, Any]:
        """Train to the end of the current epoch, validate, step the LR schedule, checkpoint."""
        t0, tokens0 = time.perf_counter(), self.epoch_tokens
        end = (self.epoch + 1) * self.steps_per_epoch
        every = self.p.checkpoint_every
        self.model.train()
        while self.step < end:
            self.train_step()
            if every and self.step % every == 0 and self.step < end:
                self.save()
        seconds = time.perf_counter() - t0
        trained = self.epoch_tokens - tokens0  # tokens of this process's share of the epoch
        valid = self.validate()
        self.scheduler.step(valid)
        train = self.epoch_nats / max(self.epoch_tokens, 1)
        record = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "train_loss": train,
            "valid_loss": valid,
            "valid_perplexity": math.exp(valid),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        self.history.append(record)
        self.epoch += 1
        self.epoch_nats, self.epoch_tokens = 0.0, 0
        self.save()
        self.tokens_per_s = trained / seconds if seconds > 0 else 0.0
        self.log(
            f"epoch {record['epoch']}/{self.p.epochs} step {self.step}: train {train:.4f} valid {valid:.4f} "
            f"(ppl {math.exp(valid):.3f}) lr {record['lr']:.3g}; {trained:,} tokens at {self.tokens_per_s:,.0f}/s"
        )
        return record

    def fit(self) -> list[dict[str, Any]]:
        """Run the remaining epochs; return the history."""
        while not self.done:
            self.run_epoch()
        return self.history

