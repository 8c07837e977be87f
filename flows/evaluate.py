"""Flow ``evaluate``: score one level's trained model on each split; the oracle gap on the grammar corpus.

A subflow of the ``lm@<level>`` stage (flows/lm.py). Writes ``artifacts/<level>/evaluation.json``:
per split the loss in nats/token, perplexity, bits per token (per character at char level),
next-token error rate and, when ``data/corpus/oracle.json`` is available, ``oracle_gap =
model_ppl / oracle_ppl``. Every target of a split is scored exactly once, so the
token count equals the oracle's (padded mode: minus the tokens max_length cut off).
The n-gram baseline's scores (flows/ngram.py), when given, join each split as
``ngram_perplexity``. Two table artifacts: ``<level>-metrics`` (a row per split) and
``<level>-perplexity`` (the oracle, the n-gram and the model side by side).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from models import checkpoint as ckpt
from models.device import resolve_device
from models.evaluate import bits_key, score_split, split_metrics
from models.rnn import RNNLanguageModel
from pipeline import paths
from pipeline.io import read_json, write_json
from pipeline.params import EvaluateParams, Level
from pipeline.paths import checkpoints, evaluation


def oracle_splits(level: Level) -> dict[str, Any]:
    """The grammar oracle's scores per split of ``level`` (oracle.json); empty for other corpora."""
    oracle = read_json(paths.ORACLE) if paths.ORACLE.exists() else {"available": False}
    return oracle[level] if oracle.get("available") else {}


def score_columns(level: Level, rows: list[dict[str, Any]], *extra: str) -> list[str]:
    """A held-out scores table's columns: loss, perplexity, bits, ``extra``, tokens, and the
    oracle's when the rows have them (the model's and the n-gram baseline's tables)."""
    columns = ["split", "loss", "perplexity", bits_key(level), *extra, "tokens"]
    if any("oracle_gap" in r for r in rows):
        columns += ["oracle_perplexity", "oracle_gap"]
    return columns


# The models compared on each split, and their perplexity's key in a split's result.
PERPLEXITIES = (("oracle", "oracle_perplexity"), ("n-gram", "ngram_perplexity"), ("RNN", "perplexity"))


def side_by_side(result: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Perplexity per split (a column each) of the oracle (grammar corpus), the n-gram baseline and the model."""
    splits = list(result)
    return [
        {"model": name, **{s: result[s][key] for s in splits if key in result[s]}}
        for name, key in PERPLEXITIES
        if any(key in result[s] for s in splits)
    ]


def table(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """``rows`` as a table artifact's rows: ``columns`` in order, missing cells empty (None)."""
    return [{c: r.get(c) for c in columns} for r in rows]


@task(name="load-model", cache_policy=NO_CACHE)
def load_model(level: Level) -> tuple[RNNLanguageModel, dict[str, Any], int]:
    """The trained model's best validation epoch (vocabulary checked), its training params, and that epoch."""
    model, _, saved = ckpt.load_model(checkpoints(level), resolve_device("auto"))
    if "progress" in saved and not (progress := saved["progress"])["done"]:  # last.pt: no best.pt was kept
        get_run_logger().warning(f"{checkpoints(level)}: training stopped at step {progress['step']}, unfinished")
    return model, saved["train"], ckpt.weights_epoch(saved)


@task(name="evaluate-split", cache_policy=NO_CACHE, task_run_name="{split}")
def evaluate_split(
    model: RNNLanguageModel,
    train: dict[str, Any],
    level: Level,
    split: str,
    batch_size: int,
    logits_mb: float,
    oracle: dict[str, Any] | None,
) -> dict[str, Any]:
    meta = read_json(paths.windows(level) / "meta.json")
    device = next(model.parameters()).device
    windows, progress = paths.windows(level), f"evaluate {level} {split}"
    scores = score_split(model, train["mode"], windows, meta, split, batch_size, device, logits_mb, progress=progress)
    m = split_metrics(scores, level, oracle)
    get_run_logger().info(f"{level} {split}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))
    return m


@task(name="write-evaluation", cache_policy=NO_CACHE)
def write_evaluation(level: Level, result: dict[str, dict[str, Any]]) -> None:
    write_json(evaluation(level), result)
    rows = [{"split": split, **m} for split, m in result.items()]
    cols = score_columns(level, rows, "error_rate")
    if any("ngram_perplexity" in r for r in rows):
        cols += ["ngram_perplexity"]
    create_table_artifact(
        key=f"{level}-metrics",
        table=table(rows, cols),
        description=f"Held-out metrics of the {level}-level model, a row per split: loss (nats/token), "
        "perplexity, bits, error rate, the oracle's perplexity and gap (grammar corpus), the n-gram's perplexity",
    )
    create_table_artifact(
        key=f"{level}-perplexity",
        table=side_by_side(result),
        description=f"Perplexity side by side, {level} level, a column per split: the oracle (the grammar "
        "corpus's true distribution: the best possible), the Kneser-Ney n-gram baseline and the RNN",
    )


@flow(name="evaluate")
def evaluate(level: Level, params: EvaluateParams, ngram: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Score ``artifacts/<level>/checkpoints`` (its best validation epoch) on ``params.splits``; write evaluation.json.

    ``ngram``: the n-gram baseline's scores per split (flows/ngram.py), shown beside the model's.
    """
    oracle = oracle_splits(level)
    ngram = ngram or {}
    model, train, epoch = load_model(level)
    result = {}
    for split in params.splits:
        result[split] = evaluate_split(
            model, train, level, split, params.batch_size, params.logits_mb, oracle.get(split)
        )
        result[split]["epoch"] = epoch  # the validation epoch whose weights were scored
        if split in ngram:  # the baseline scored the same targets (flows/ngram.py)
            result[split] |= {"ngram_perplexity": ngram[split]["perplexity"], "ngram_loss": ngram[split]["loss"]}
    write_evaluation(level, result)
    return result
