"""Checkpoints: plain dicts of tensors and plain types, written atomically, read with weights_only.

A checkpoints folder holds two files. ``last.pt``, the rolling training checkpoint, is one flat
dict (nanoGPT style): the keys of ``TRAINER_KEYS``, which the Trainer writes for every task
(models/trainer.py checks that it writes exactly these), and the task's own
``checkpoint_fields()``, for a language model those of ``LM_KEYS``. ``best.pt`` holds the weights
of the epoch with the lowest validation loss so far: ``BEST_KEYS`` and the same task fields. A
model is loaded from ``best.pt`` (``model_file``), as pytorch/examples' word_language_model and
nanoGPT keep their best weights; training resumes from ``last.pt``.

Everything loads with ``torch.load(weights_only=True)``: no pickled classes.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from models.config import ModelConfig
from models.rnn import RNNLanguageModel
from pipeline import paths
from pipeline.errors import RnnlabError
from pipeline.io import atomic_open, sha256_file
from pipeline.stage import stops_deferred
from pipeline.vocab import Vocab

FORMAT = "rnnlab-lm/1"  # language models (models/lm.py); every task names its own "rnnlab-<task>/<version>"
FILE = paths.LAST_CHECKPOINT  # the rolling training checkpoint in a checkpoints folder
BEST = paths.BEST_CHECKPOINT  # the best validation epoch's weights beside it

# What Trainer.checkpoint writes for every task: each key and what it holds.
TRAINER_KEYS: dict[str, str] = {
    "model": "the model's state_dict (CPU tensors)",
    "train": "the loop params, model_dump() (TrainParams for a language model)",
    "optimizer": "the optimizer's state_dict",
    "scheduler": "the LR scheduler's state_dict",
    "rng": "rank 0's torch / cuda generator states (tensors)",
    "rng_ranks": "every rank's generator states, in rank order",
    "world_size": "how many training processes wrote it",
    "progress": "step, epoch, loss_sum and count (the running epoch's sums), done, seconds (training so far)",
    "task_state": "the task's state_dict(); a language model's {'state': carried recurrent state or None}",
    "history": "one dict per finished epoch",
    "fingerprint": "the training cache key (flows.common.fingerprint)",
    "threads": "torch intra-op threads it ran with",
}
# What Trainer.save_best writes to best.pt for every task, beside the task's checkpoint_fields().
BEST_KEYS: dict[str, str] = {
    "model": "the model's state_dict (CPU tensors) at the end of the best validation epoch",
    "train": "the loop params, model_dump()",
    "fingerprint": "the training cache key of the run that wrote it",
    "best": "{epoch, step, valid: the validation metrics}: where these weights come from",
}
# What a language model adds (LanguageModelTask.checkpoint_fields); other tasks name their own.
LM_KEYS: dict[str, str] = {
    "format": f"{FORMAT!r}",
    "config": "ModelConfig.to_dict() (output: full | adaptive and cutoffs; older ones lack them: full)",
    "vocab": "{path, sha256, size}: the vocabulary file it was trained with",
    "tokenizer": "{level, pattern, lowercase}: how text became tokens",
}


class CheckpointError(RnnlabError):
    """A checkpoint is missing, unreadable, of another format, or does not match its vocabulary."""


def save(obj: dict[str, Any], path: str | Path) -> str:
    """Write ``obj`` atomically (temp file + os.replace); return the file's sha256. A stop signal
    that arrives while it writes takes effect once the file is whole (``stops_deferred``)."""
    path = Path(path)
    with stops_deferred(), atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return sha256_file(path)


def model_file(path: str | Path) -> Path:
    """The file to load a trained model from: a checkpoints folder's ``best.pt`` (``last.pt`` when it
    has none: a training that never validated, or one written before best weights were kept), or
    ``path`` itself when it names a file."""
    path = Path(path)
    return paths.model_file(path) if path.is_dir() or not path.suffix else path  # a folder, existing or not


def weights_epoch(saved: dict[str, Any]) -> int:
    """The epoch whose weights a loaded checkpoint holds (best.pt's best epoch, or last.pt's last)."""
    return int(saved["best"]["epoch"] if "best" in saved else saved["progress"]["epoch"])


def load(
    path: str | Path, map_location: str | torch.device = "cpu", expect: str | None = None, mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint written by ``save``; raise CheckpointError with the fix if it is not one.

    A folder means its training checkpoint, ``last.pt`` (``model_file`` picks the weights to use).
    ``expect``: the format the caller can use (e.g. ``FORMAT``); None accepts any rnnlab task's
    (the Trainer's resume, which then matches the fingerprint). ``mmap``: map the tensors instead
    of reading them (a cheap readability check).
    """
    path = Path(path)
    if path.is_dir() or not path.suffix:  # a checkpoints folder, existing or not
        path = path / FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here; train one with `dvc repro` (stage train) or pass its path")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # weights_only names what it refused: "Unsupported global: GLOBAL print was not an allowed
        # global", "unsupported GLOBAL posix.system whose module posix is blocked". Anything else
        # ("Unsupported operand 110": bytes that are not a pickle at all) is merely unreadable.
        refused = re.search(r"GLOBAL ([\w.]{1,120})", str(e))
        if "Weights only load failed" not in str(e) or refused is None:
            raise CheckpointError(_unreadable(path, e)) from None
        raise CheckpointError(
            f"{path}: holds objects other than tensors and plain types ({refused.group(1)}), which "
            "torch.load(weights_only=True) refused; do not trust this file (loaded without weights_only it "
            "could run code): it is not a checkpoint rnnlab wrote. Delete it, or retrain"
        ) from None
    except Exception as e:
        raise CheckpointError(_unreadable(path, e)) from None
    got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
    if not isinstance(got, str) or not got.startswith("rnnlab-"):
        raise CheckpointError(f"{path}: checkpoint format {got!r} is not an rnnlab one; retrain it with rnnlab")
    if expect is not None and got != expect:
        raise CheckpointError(
            f"{path}: a {got!r} checkpoint where {expect!r} is needed; pass the right task's checkpoint, "
            "or retrain it with this version of rnnlab"
        )
    return obj


def _unreadable(path: Path, e: Exception) -> str:
    return (
        f"{path}: not an rnnlab checkpoint (torch.load(weights_only=True) cannot read it: {type(e).__name__}); "
        "pass a checkpoint written by the train flow (artifacts/<level>/checkpoints), or retrain"
    )


def vocab_ref(vocab: Vocab, path: str | Path) -> dict[str, Any]:
    """What a checkpoint records of its vocabulary (``load_vocab`` reads it back): path, sha256, size."""
    return {"path": str(path), "sha256": vocab.sha256, "size": len(vocab)}


def load_vocab(ckpt: dict[str, Any], path: str | Path | None = None) -> Vocab:
    """The vocabulary a checkpoint was trained with (its recorded path, or ``path``), checked by sha256."""
    ref = ckpt["vocab"]
    where = Path(path or ref["path"])
    if not where.is_file():
        raise CheckpointError(
            f"vocabulary {where} not found (the checkpoint's path is relative to the repository root); "
            "run from there, or pass the vocabulary file it was trained with (--vocab)"
        )
    vocab = Vocab.load(where)
    if vocab.sha256 != ref["sha256"]:
        raise CheckpointError(
            f"vocabulary {path or ref['path']} ({len(vocab)} tokens, sha256 {vocab.sha256[:12]}) does not match the "
            f"checkpoint's ({ref['size']} tokens, sha256 {ref['sha256'][:12]}): ids would mean other tokens; "
            "pass the vocabulary it was trained with (--vocab), or retrain"
        )
    return vocab


def load_model(
    path: str | Path, device: torch.device, vocab: str | Path | None = None
) -> tuple[RNNLanguageModel, Vocab, dict[str, Any]]:
    """A language model's checkpoint: its model (in eval mode, on ``device``), its checked vocabulary, and the dict.

    A checkpoints folder gives its best validation epoch's weights (``model_file``).
    """
    path = model_file(path)
    saved = load(path, map_location=device, expect=FORMAT)
    v = load_vocab(saved, vocab)
    try:
        cfg = ModelConfig.from_dict(saved["config"])
        model = RNNLanguageModel(cfg)
        model.load_state_dict(saved["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint does not fit an rnnlab model ({e}); retrain it") from None
    if cfg.vocab_size != len(v):
        raise CheckpointError(f"{path}: the model has {cfg.vocab_size} outputs but the vocabulary {len(v)} tokens")
    return model.to(device).eval(), v, saved


# --- random generators ------------------------------------------------------------------


# Training draws randomness from torch's generators only (initialisation, dropout):
# data order comes from np.random.default_rng([seed, pass]), a pure function of its
# arguments. Python's and numpy's global generators are never used in models/ (other
# libraries, Prefect among them, draw from Python's while a flow runs), so the torch
# and CUDA states are every state a resumed run needs, and checkpoints stay
# byte-identical between runs with the same params.


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """The generators training draws from, as tensors (weights_only-safe)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``; its tensors may have been mapped to a GPU by torch.load."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
