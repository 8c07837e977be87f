"""Stage ``lm@<level>``: one level's language model, trained, measured and sampled in one process.

    python -m flows.lm --level word

One Prefect flow, ``lm``, runs four subflows in order, each visible in the UI:

    train      fit (or resume, or reuse) the RNN                artifacts/<level>/checkpoints/ (persist)
    ngram      the Kneser-Ney baseline on the same windows       artifacts/<level>/ngram.json
    evaluate   the RNN on each held-out split, the oracle gap    artifacts/<level>/evaluation.json
    sample     text from the trained model                       artifacts/<level>/samples.txt

then DVCLive records the training curves (``artifacts/<level>/plots/metrics/*.tsv``, the DVC
plots) and the test split's headline numbers (``artifacts/<level>/metrics.json``, the DVC
metrics: perplexity, bits, oracle gap, the n-gram's perplexity).

Why one stage and not four: a stage is a process that imports torch and Prefect (about 4 s)
and registers with the API; on the default corpus four stages per level spent more time
starting than working. The rerun rules hold all the same. DVC reruns the stage when one of
its params or inputs changes, and the training inside is a cache hit (flows/train.py) unless
``train.<level>``, ``tokenize.<level>``, the data or the models code changed: changing
``sample.word.temperature`` re-samples, re-scores in a second and retrains nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow

from flows.common import (
    ARTIFACTS,
    checkpoints,
    code_files,
    evaluation,
    metrics_file,
    model_code,
    ngram_scores,
    plots,
    samples,
    stage_main,
    tokenizer_settings,
    write_live,
)
from flows.evaluate import evaluate
from flows.ngram import ngram
from flows.sample import sample
from flows.train import train
from models.evaluate import bits_key
from pipeline import paths, stage
from pipeline.params import EvaluateParams, Level, NgramParams, SampleParams, TrainParams, load_params

CURVES = ("train_loss", "valid_loss")  # nats per token, per epoch: the DVC plots


def spec(level: str) -> stage.StageSpec:
    return stage.StageSpec(
        params=(f"train.{level}", f"tokenize.{level}", f"ngram.{level}", "evaluate", f"sample.{level}"),
        deps=(
            "flows/lm.py",
            "flows/common.py",
            "flows/evaluate.py",
            "flows/ngram.py",
            "flows/sample.py",
            "flows/train.py",
            *code_files(model_code("flows.lm")),  # the trained model's, the n-gram's and the sampler's
            "pipeline/docs.py",
            "pipeline/io.py",
            "pipeline/params.py",
            "pipeline/shards.py",
            "pipeline/threads.py",
            "pipeline/tokenize.py",
            "pipeline/vocab.py",
            str(paths.windows(level)),
            str(paths.vocab(level)),
            str(paths.ORACLE),
        ),
        outs=tuple(
            str(p) for p in (checkpoints(level), ngram_scores(level), evaluation(level), samples(level), plots(level))
        ),
        metrics=(str(metrics_file(level)),),
    )


def headline(level: Level, result: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The few numbers ``dvc metrics show`` prints per level: the test split's (else the last one scored)."""
    split = "test" if "test" in result else list(result)[-1]
    m = result[split]
    out = {
        f"{split}_perplexity": m["perplexity"],
        f"{split}_bits": m[bits_key(level)],
    }
    if "oracle_gap" in m:
        out["oracle_gap"] = m["oracle_gap"]
    if "ngram_perplexity" in m:
        out["ngram_perplexity"] = m["ngram_perplexity"]
    return out


@flow(name="lm")
def language_model(
    level: Level,
    train_params: TrainParams,
    tokenizer: dict[str, Any],
    ngram_params: NgramParams,
    evaluate_params: EvaluateParams,
    sample_params: SampleParams,
) -> dict[str, Any]:
    """Train, baseline, evaluate and sample ``level``'s model; log curves and metrics with DVCLive."""
    record = train(level, train_params, tokenizer)
    baseline = ngram(level, ngram_params)
    result = evaluate(level, evaluate_params, baseline)
    sample(level, sample_params)
    write_live(ARTIFACTS / level, record["history"], CURVES, headline(level, result))
    return {"train": record, "evaluation": result}


def run(level: Level, params_file: str) -> dict[str, Any]:
    cfg = load_params(spec(level).params, params_file)
    return language_model(
        level,
        cfg[f"train.{level}"],
        tokenizer_settings(level, cfg[f"tokenize.{level}"]),
        cfg[f"ngram.{level}"],
        cfg["evaluate"],
        cfg[f"sample.{level}"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(__doc__, argv, run, level=True)


if __name__ == "__main__":
    raise SystemExit(main())
