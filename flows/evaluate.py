"""Flow ``evaluate``: score one level's trained model on each split; the oracle gap on the grammar corpus.

    python -m flows.evaluate --level word

Writes ``artifacts/<level>/metrics.json`` (DVC metrics): per split the loss in
nats/token, perplexity, bits per token (per character at char level), next-token
error rate and, when ``data/corpus/oracle.json`` is available, ``oracle_gap =
model_ppl / oracle_ppl``. Every target of a split is scored exactly once, so the
token count equals the oracle's (padded mode: minus the tokens max_length cut off).
The n-gram baseline's perplexity (``artifacts/<level>/ngram.json``, flows/ngram.py)
joins each split as ``ngram_perplexity``, and the ``<level>-metrics`` artifact shows
the oracle, the n-gram and the model side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import ARTIFACTS, checkpoints, markdown_table, metrics, stage_main
from models import checkpoint as ckpt
from models.device import resolve_device
from models.evaluate import metrics as split_metrics
from models.evaluate import score_split
from models.rnn import RNNLanguageModel
from pipeline import paths, stage
from pipeline.io import read_json, write_json
from pipeline.params import EvaluateParams, Level, load_params


def spec(level: str) -> stage.StageSpec:
    return stage.StageSpec(
        params=("evaluate",),
        deps=(
            "flows/evaluate.py",
            "flows/common.py",
            "models/checkpoint.py",
            "models/cells.py",
            "models/config.py",
            "models/data.py",
            "models/device.py",
            "models/evaluate.py",
            "models/rnn.py",
            "pipeline/io.py",
            "pipeline/params.py",
            "pipeline/shards.py",
            "pipeline/vocab.py",
            str(checkpoints(level)),
            str(paths.windows(level)),
            str(paths.vocab(level)),
            str(paths.ORACLE),
            str(ngram_metrics(level)),
        ),
        outs=(),
        metrics=(str(metrics(level)),),
    )


def ngram_metrics(level: str) -> Path:
    """The n-gram baseline's metrics (flows/ngram.py), shown beside the model's: the stage runs first."""
    return ARTIFACTS / level / "ngram.json"


def side_by_side(result: dict[str, dict[str, Any]]) -> str:
    """Perplexity per split of the oracle (grammar corpus), the n-gram baseline and the model."""
    splits = list(result)
    rows = [
        {"model": name, **{s: result[s][key] for s in splits if key in result[s]}}
        for name, key in (("oracle", "oracle_perplexity"), ("n-gram", "ngram_perplexity"), ("RNN", "perplexity"))
        if any(key in result[s] for s in splits)
    ]
    return "## Perplexity side by side\n\n" + markdown_table(rows, ["model", *splits])


@task(name="load-model", cache_policy=NO_CACHE)
def load_model(level: Level) -> tuple[RNNLanguageModel, dict[str, Any]]:
    """The trained model (vocabulary checked) and its training params."""
    model, _, c = ckpt.load_model(checkpoints(level), resolve_device("auto"))
    if not c["progress"]["done"]:
        get_run_logger().warning(f"{checkpoints(level)}: training stopped at step {c['progress']['step']}, unfinished")
    return model, c["train"]


@task(name="evaluate-split", cache_policy=NO_CACHE, task_run_name="{split}")
def evaluate_split(model: RNNLanguageModel, train: dict[str, Any], level: Level, split: str, batch_size: int,
                   oracle: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    meta = read_json(paths.windows(level) / "meta.json")
    device = next(model.parameters()).device
    m = split_metrics(score_split(model, train["mode"], paths.windows(level), meta, split, batch_size, device),
                      level, oracle)  # fmt: skip
    get_run_logger().info(f"{level} {split}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))
    return m


@task(name="write-metrics", cache_policy=NO_CACHE)
def write_metrics(level: Level, result: dict[str, dict[str, Any]]) -> None:
    write_json(metrics(level), result)
    rows = [{"split": split, **m} for split, m in result.items()]
    bits = "bits_per_char" if level == "char" else "bits_per_token"
    cols = ["split", "loss", "perplexity", bits, "error_rate", "tokens"]
    if any("oracle_gap" in r for r in rows):
        cols += ["oracle_perplexity", "oracle_gap"]
    if any("ngram_perplexity" in r for r in rows):
        cols += ["ngram_perplexity"]
    create_markdown_artifact(
        key=f"{level}-metrics",
        markdown=f"# Held-out metrics, {level} level\n\n" + markdown_table(rows, cols) + "\n\n" + side_by_side(result),
        description=f"loss (nats/token), perplexity and oracle gap of the {level}-level model",
    )


@flow(name="evaluate")
def evaluate(level: Level, params: EvaluateParams) -> dict[str, dict[str, Any]]:
    """Score ``artifacts/<level>/checkpoints`` on ``params.splits``; write metrics.json."""
    oracle = read_json(paths.ORACLE) if paths.ORACLE.exists() else {"available": False}
    ngram = read_json(ngram_metrics(level)) if ngram_metrics(level).exists() else {}
    model, train = load_model(level)
    result = {}
    for split in params.splits:
        ref = oracle[level][split] if oracle.get("available") else None
        result[split] = evaluate_split(model, train, level, split, params.batch_size, ref)
        if split in ngram:  # the baseline scored the same targets (flows/ngram.py)
            result[split] |= {"ngram_perplexity": ngram[split]["perplexity"], "ngram_loss": ngram[split]["loss"]}
    write_metrics(level, result)
    return result


def run(level: Level, params_file: str) -> dict[str, dict[str, Any]]:
    return evaluate(level, load_params(spec(level).params, params_file)["evaluate"])


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(__doc__, argv, run, level=True)


if __name__ == "__main__":
    raise SystemExit(main())
