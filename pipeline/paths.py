"""Where each stage reads and writes, relative to the repository root.

dvc.yaml and tasks/dvc.yaml name the same paths; ``tests/test_dvc_yaml.py`` keeps them equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA = Path("data")
METRICS = DATA / "metrics"

DOCS = DATA / "corpus" / "docs"  # the document table: Parquet shards
ORACLE = DATA / "corpus" / "oracle.json"  # true entropy per split (grammar corpus only)
CORPUS_METRICS = METRICS / "corpus.json"
DOWNLOADS = DATA / "cache"  # downloads: not a DVC output, so they survive reruns

# In every checkpoints folder: the rolling training checkpoint (a killed run resumes from it), and the
# weights of the best validation epoch (what evaluation, sampling, the CLI and the registry use).
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


def model_file(folder: Path) -> Path:
    """The weights to use from a checkpoints folder: ``best.pt``, or ``last.pt`` when it has none (a
    training that never validated, or a folder written before best weights were kept)."""
    best = Path(folder) / BEST_CHECKPOINT
    return best if best.is_file() else Path(folder) / LAST_CHECKPOINT


def tokens(level: str) -> Path:
    """Token shards (Parquet) of one level."""
    return DATA / "tokens" / level


def vocab(level: str) -> Path:
    return DATA / "vocab" / f"{level}.json"


def vocab_metrics(level: str) -> Path:
    return METRICS / f"vocab-{level}.json"


def windows(level: str) -> Path:
    """Encoded datasets of one level: ``meta.json`` and one folder per split."""
    return DATA / "windows" / level


def windows_metrics(level: str) -> Path:
    return METRICS / f"windows-{level}.json"


# --- the language models' outputs (stage lm@<level>, flows/lm.py) ------------------------------

ARTIFACTS = Path("artifacts")


def checkpoints(level: str) -> Path:
    """``last.pt`` and ``best.pt`` (persist: true, so a killed run resumes)."""
    return ARTIFACTS / level / "checkpoints"


def ngram_scores(level: str) -> Path:
    return ARTIFACTS / level / "ngram.json"


def evaluation(level: str) -> Path:
    return ARTIFACTS / level / "evaluation.json"


def plots(level: str) -> Path:
    """DVCLive's plots folder of a run logged under ``ARTIFACTS / level``."""
    return ARTIFACTS / level / "plots"


def metrics_file(level: str) -> Path:
    """DVCLive's summary: the DVC metrics file."""
    return ARTIFACTS / level / "metrics.json"


def samples(level: str) -> Path:
    return ARTIFACTS / level / "samples.txt"


# --- the side tasks' data (tasks/dvc.yaml), beside the spine's and never over it ---------------


@dataclass(frozen=True)
class TextDataset:
    """One text task's data: the spine's outputs (documents, tokens, vocabulary, windows) under ``root``."""

    root: Path

    @property
    def docs(self) -> Path:
        return self.root / "docs"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def vocab(self) -> Path:
        return self.root / "vocab.json"

    @property
    def windows(self) -> Path:
        return self.root / "windows"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def lm(self) -> Path:
        """Per-class windows for the class language models: ``lm/<label>/``."""
        return self.root / "lm"


IMDB_DATA = TextDataset(DATA / "imdb")
OCR = DATA / "ocr"
OCR_DOCS = OCR / "docs"  # one row per word: pixels, mask, letters (pipeline/sources/ocr.py)
OCR_METRICS = OCR / "metrics.json"
