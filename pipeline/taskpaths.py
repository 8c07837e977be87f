"""Where the task datasets of tasks/dvc.yaml live (the spine's own paths are in pipeline/paths.py).

tasks/dvc.yaml repeats these paths; tests/test_dvc_yaml.py keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.paths import DATA


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
