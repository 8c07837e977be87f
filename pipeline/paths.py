"""Where each stage, flow and command reads and writes, relative to the repository root.

dvc.yaml and tasks/dvc.yaml name the same paths; ``tests/test_dvc_yaml.py`` keeps them equal.
No other module spells a path under data/ or artifacts/ itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARAMS_FILE = Path("params.yaml")  # every stage's values (pipeline/params.py validates them)
RECIPES = Path("recipes")  # named configurations for `rnnlab recipe` (ops/recipes.py)

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


def lm_outputs(level: str) -> Path:
    """Everything stage lm@<level> writes, below; DVCLive logs the training here."""
    return ARTIFACTS / level


def checkpoints(level: str) -> Path:
    """``last.pt`` and ``best.pt`` (persist: true, so a killed run resumes)."""
    return lm_outputs(level) / "checkpoints"


def ngram_scores(level: str) -> Path:
    return lm_outputs(level) / "ngram.json"


def evaluation(level: str) -> Path:
    return lm_outputs(level) / "evaluation.json"


def plots(level: str) -> Path:
    """DVCLive's plots folder of a run logged under ``lm_outputs(level)``."""
    return lm_outputs(level) / "plots"


def metrics_file(level: str) -> Path:
    """DVCLive's summary: the DVC metrics file."""
    return lm_outputs(level) / "metrics.json"


def samples(level: str) -> Path:
    return lm_outputs(level) / "samples.txt"


PLOTS_PAGE = Path("dvc_plots/index.html")  # what `dvc plots show` writes (its default out_dir)


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


# --- the side tasks' outputs: the skipgram stage (dvc.yaml) and tasks/dvc.yaml's ----------------

SKIPGRAM = ARTIFACTS / "skipgram"  # flows/skipgram.py; DVCLive logs under it
SKIPGRAM_CHECKPOINTS = SKIPGRAM / "checkpoints"
EMBEDDINGS = SKIPGRAM / "embeddings.npy"  # what `rnnlab neighbors` reads
EMBEDDINGS_META = SKIPGRAM / "embeddings.json"
WORD_VECTORS = SKIPGRAM / "vectors.txt"  # word2vec text format
SKIPGRAM_REPORT = SKIPGRAM / "report.json"
SKIPGRAM_PLOTS = SKIPGRAM / "plots"
SKIPGRAM_METRICS = SKIPGRAM / "metrics.json"

SENTIMENT = ARTIFACTS / "sentiment"  # flows/sentiment.py
SENTIMENT_CHECKPOINTS = SENTIMENT / "checkpoints"  # what `rnnlab classify` loads
SENTIMENT_HISTORY = SENTIMENT / "history.csv"
SENTIMENT_METRICS = SENTIMENT / "metrics.json"  # flows/lmclass.py compares against it too

LMCLASS = ARTIFACTS / "lmclass"  # flows/lmclass.py: checkpoints/<class>/
LMCLASS_CHECKPOINTS = LMCLASS / "checkpoints"
LMCLASS_HISTORY = LMCLASS / "history.csv"
LMCLASS_METRICS = LMCLASS / "metrics.json"

OCR_LABELLERS = ARTIFACTS / "ocr"  # flows/ocr.py: checkpoints/<direction>/
OCR_CHECKPOINTS = OCR_LABELLERS / "checkpoints"
OCR_ERRORS = OCR_LABELLERS / "errors.csv"
OCR_LABELLER_METRICS = OCR_LABELLERS / "metrics.json"


# --- the model registry (models/registry.py): tracked by `dvc add registry` -----------------------

REGISTRY = Path("registry")
REGISTRY_MODELS = REGISTRY / "models"  # <level>-<sha12>/: a promoted model's weights and vocabulary


def registry_pointer(level: str) -> Path:
    """The promoted model of ``level``: its folder, metrics and provenance (JSON)."""
    return REGISTRY / f"{level}.json"
