"""Helpers only tests use: which stages a run ran, a history without its wall-clock, a word model trained.

What tests share with the benchmarks (a throwaway copy of the repository, params, data, servers)
is in bench/harness.py.
"""

from __future__ import annotations

import re
from typing import Any


def ran(output: str) -> set[str]:
    """The stages that ``dvc repro`` (or ``rnnlab repro``) says it ran, from its output."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def deterministic(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A training history without its wall-clock ("seconds"), which no two runs share."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def run_train(level: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """The lm stage's train subflow on ``params_file``, as the stage calls it (needs a Prefect API)."""
    from flows import lm, train
    from flows.common import tokenizer_settings
    from pipeline.params import load_params as load_typed

    cfg = load_typed(lm.spec(level).params, params_file)
    return train.train(level, cfg[f"train.{level}"], tokenizer_settings(level, cfg[f"tokenize.{level}"]))


def train_word_model(fingerprint: str) -> None:
    """Train params.yaml's word model in the working directory (``lm_workdir``), where the CLI and
    ``evaluate`` look for its checkpoint, through the Trainer alone (no Prefect)."""
    from flows.common import tokenizer_settings
    from models.lm import lm_trainer
    from pipeline import paths
    from pipeline.params import read_params
    from pipeline.vocab import Vocab

    p = read_params("params.yaml")
    run = {
        "fingerprint": fingerprint,
        "tokenizer": tokenizer_settings("word", p.tokenize.word),
        "vocab_path": str(paths.vocab("word")),
    }
    vocab = Vocab.load(paths.vocab("word"))
    lm_trainer(p.train.word, paths.windows("word"), paths.checkpoints("word"), vocab, run).fit()
