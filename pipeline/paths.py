"""Where each stage reads and writes, relative to the repository root.

dvc.yaml names the same paths; ``tests/test_dvc_yaml.py`` keeps the two equal.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
METRICS = DATA / "metrics"

DOCS = DATA / "corpus" / "docs"  # the document table: Parquet shards
ORACLE = DATA / "corpus" / "oracle.json"  # true entropy per split (grammar corpus only)
CORPUS_METRICS = METRICS / "corpus.json"
DOWNLOADS = DATA / "cache"  # downloads: not a DVC output, so they survive reruns


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
