"""The model registry: which checkpoint of each level is promoted, with its numbers. No Prefect, no torch.

    registry/
      word.json                      the pointer: the promoted word model, its metrics and provenance
      models/word-<sha12>/best.pt    that model's weights, byte for byte (content-addressed, never overwritten)
      models/word-<sha12>/vocab.json the vocabulary it was trained with
    registry.dvc                     written by `dvc add registry`: commit it; `dvc push` shares the files

**Promotion is one atomic step.** The checkpoint is first copied into a new folder named
by its own hash (a temporary folder renamed into place, and checked against the hash),
then the pointer is replaced with ``os.replace``: that rename is the promotion. A crash
anywhere before it leaves the old pointer and its intact model; a crash after it leaves
at worst an unreferenced folder, removed by the next promotion. One ``registry.dvc``
versions the pointers and the models together, so every git commit names a consistent
pair, and a teammate gets both with ``dvc pull``.

Why a copy rather than only the DVC hash of ``artifacts/<level>/checkpoints``: the next
``dvc repro`` overwrites that folder, and the promoted model must stay loadable from the
workspace (``rnnlab sample --checkpoint registry/models/word-<sha12>``) without checking
out an old commit. The DVC cache stores the bytes once either way; the pointer also
records that md5 (``dvc.checkpoints_md5``), which finds the run's dvc.lock in git history.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import RnnlabError
from pipeline.io import atomic_dir, read_json, sha256_file, write_json
from pipeline.vocab import Vocab

FORMAT = "rnnlab-registry/1"
CHECKPOINT = paths.BEST_CHECKPOINT  # a run's best weights: `--checkpoint <folder>` loads them
VOCAB = "vocab.json"


class RegistryError(RnnlabError):
    """A registry file is unreadable, of another format, or does not match its model."""


def read_promoted(root: Path, level: str) -> dict[str, Any] | None:
    """The promoted record of ``level``, or None when nothing was promoted yet."""
    path = root / paths.registry_pointer(level)
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError) as e:
        raise RegistryError(f"{path}: unreadable ({e}); restore it with `dvc checkout registry.dvc`") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RegistryError(f"{path}: not a registry pointer of format {FORMAT!r}; restore it from git and DVC")
    return record


def heldout_id(root: Path, level: str, split: str, evaluate: dict[str, Any]) -> str:
    """What makes two held-out numbers comparable: the same split's arrays, vocabulary and evaluation.

    sha256 over the windows stage's hashes of ``split``'s arrays, the vocabulary's hash, the
    windows params and the evaluate params (its batching decides each token's context).
    """
    meta = read_json(root / paths.windows(level) / "meta.json")
    parts = {
        "split": split,
        "files": {k: v for k, v in meta["files"].items() if k.startswith(f"{split}/")},
        "vocab_sha256": meta["vocab_sha256"],
        "windows": meta["params"],
        "evaluate": evaluate,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Decision:
    """Whether the new model replaces the promoted one, and the numbers behind it."""

    promote: bool
    reason: str
    split: str
    candidate: float  # the new model's perplexity on ``split``
    incumbent: float | None  # the promoted model's, on the same held-out data; None: none or not comparable
    improvement: float | None  # relative: 1 - candidate / incumbent
    margin: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate: float,
    candidate_sha: str,
    promoted: dict[str, Any] | None,
    incumbent: float | None,
    split: str,
    margin: float,
    force: bool = False,
) -> Decision:
    """The promotion rule (docs/teams.md, "A run, step by step").

    Promote when nothing is promoted yet, or when perplexity on the same held-out data fell
    by at least ``margin`` (relative), or when ``force``d. Keep the promoted model when the
    new checkpoint is the same file, when the gain is below the margin, or when the two
    cannot be compared (the held-out data's vocabulary changed): that needs a person (force).
    """

    def made(promote: bool, reason: str, improvement: float | None = None) -> Decision:
        return Decision(promote, reason, split, candidate, incumbent, improvement, margin)

    if promoted is None:
        return made(True, "nothing was promoted yet")
    if promoted["checkpoint_sha256"] == candidate_sha:
        return made(False, "the new checkpoint is byte for byte the promoted one")
    improvement = None if incumbent is None else 1.0 - candidate / incumbent
    if force:
        return made(True, "forced (force=true)", improvement)
    if incumbent is None or improvement is None:
        return made(
            False,
            "the promoted model cannot be scored on the current held-out data (its vocabulary differs), so "
            "the two are not comparable; run the retrain flow with force=true to promote the new one",
        )
    if improvement > 0 and improvement >= margin:
        return made(True, f"perplexity fell by {improvement:.2%}, at least the margin of {margin:.2%}", improvement)
    if improvement > 0:
        return made(
            False, f"perplexity fell by only {improvement:.2%}, less than the margin of {margin:.2%}", improvement
        )
    return made(False, f"perplexity did not fall (it rose by {-improvement:.2%})", improvement)


def promote(root: Path, level: str, record: dict[str, Any], checkpoint: Path, vocab: Path) -> Path:
    """Copy ``checkpoint`` and ``vocab`` into the registry, then point ``level`` at them atomically.

    ``record`` must hold ``checkpoint_sha256`` (of the file) and ``vocab_sha256`` (of the token
    list, as the windows stage and checkpoints record it); the copies are checked against both
    before the pointer moves. Returns the model folder (relative to ``root``).
    """
    sha = record["checkpoint_sha256"]
    folder = paths.REGISTRY_MODELS / f"{level}-{sha[:12]}"
    target = root / folder
    if not (target / CHECKPOINT).is_file() or sha256_file(target / CHECKPOINT) != sha:
        with atomic_dir(target) as tmp:
            shutil.copyfile(checkpoint, tmp / CHECKPOINT)
            shutil.copyfile(vocab, tmp / VOCAB)
            # Changed between comparison and copy (a concurrent `dvc repro`?): refuse, keep the old pointer.
            got = {CHECKPOINT: sha256_file(tmp / CHECKPOINT), VOCAB: Vocab.load(tmp / VOCAB).sha256}
            for name, want in ((CHECKPOINT, sha), (VOCAB, record["vocab_sha256"])):
                if got[name] != want:
                    raise RegistryError(f"{name} changed while being promoted (sha256 is not {want[:12]}); retry")
    write_json(
        root / paths.registry_pointer(level), {**record, "format": FORMAT, "level": level, "model": folder.as_posix()}
    )
    prune(root)
    return folder


def prune(root: Path) -> list[Path]:
    """Remove model folders that no pointer names (left by earlier promotions); return them."""
    models = root / paths.REGISTRY_MODELS
    if not models.is_dir():
        return []
    named = {Path(r["model"]).name for p in (root / paths.REGISTRY).glob("*.json") if (r := read_json(p)).get("model")}
    gone = [d for d in models.iterdir() if d.is_dir() and d.name not in named and not d.name.startswith(".")]
    for d in gone:
        shutil.rmtree(d)
    return gone
