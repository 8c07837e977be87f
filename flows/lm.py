"""Stage ``lm@<level>``: one level's language model, trained, measured and sampled in one process.

    python -m flows.lm --level word

One Prefect flow, ``lm``, runs four subflows in order, each visible in the UI:

    train      fit (or resume, or reuse) the RNN                artifacts/<level>/checkpoints/ (persist)
    ngram      the Kneser-Ney baseline on the same windows       artifacts/<level>/ngram.json
    evaluate   the RNN on each held-out split, the oracle gap    artifacts/<level>/evaluation.json
    sample     text from the trained model                       artifacts/<level>/samples.txt

DVCLive records the training curves (``artifacts/<level>/plots/metrics/*.tsv``: train and valid
loss, learning rate and training wall-clock per epoch) and the test split's headline numbers
(``artifacts/<level>/metrics.json``, the DVC metrics: perplexity, bits, oracle gap, the n-gram's
perplexity, and the epoch whose weights were scored) as soon as the evaluation is done, before
sampling: a later failure cannot lose them. Beside the curves, ``plots/perplexity.json`` holds the
RNN's, the n-gram's and the oracle's perplexity per split; dvc.yaml's ``plots`` draw them all, and
the link artifact ``<level>-plots`` points at the page ``dvc plots show`` writes.

Before the flow starts, models/preflight.py checks every param that depends on the data (the
splits against batch_size × bptt, the vocabulary, adaptive cutoffs, a leftover checkpoint, the
sampling prime and stop token), so that a run on any corpus either works or stops with one
``error:`` line before any training.

Why one stage and not four: a stage is a process that imports torch and Prefect (about 4 s)
and registers with the API; on the default corpus four stages per level spent more time
starting than working. The rerun rules hold all the same. DVC reruns the stage when one of
its params or inputs changes, and the training inside is a cache hit (flows/train.py) unless
``train.<level>``, ``tokenize.<level>``, the data or the models code changed: changing
``sample.word.temperature`` re-samples, re-scores in a second and retrains nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import stage_main, tokenizer_settings, warn, write_live
from flows.evaluate import PERPLEXITIES, evaluate
from flows.ngram import ngram
from flows.sample import sample
from flows.train import train
from models.evaluate import bits_key
from models.preflight import check_lm
from pipeline import paths, stage
from pipeline.codedeps import code_deps
from pipeline.io import write_json
from pipeline.params import EvaluateParams, Level, NgramParams, SampleParams, TrainParams, load_params
from pipeline.paths import checkpoints, evaluation, lm_outputs, metrics_file, ngram_scores, plots, samples

CURVES = ("train_loss", "valid_loss", "lr")  # per epoch, the DVC plots (loss in nats per token); and "seconds"
PERPLEXITY_PLOT = "perplexity.json"  # in plots(level): the bars of dvc.yaml's <level>-perplexity


def spec(level: str) -> stage.StageSpec:
    return stage.StageSpec(
        params=(f"train.{level}", f"tokenize.{level}", f"ngram.{level}", "evaluate", f"sample.{level}"),
        deps=(
            *code_deps("flows.lm"),
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
        "best_epoch": m["epoch"],
    }
    if "oracle_gap" in m:
        out["oracle_gap"] = m["oracle_gap"]
    if "ngram_perplexity" in m:
        out["ngram_perplexity"] = m["ngram_perplexity"]
    return out


def perplexity_rows(result: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The perplexity bars: per held-out split, the oracle's (grammar corpus only), the n-gram's and the RNN's."""
    return [
        {"split": split, "model": model, "perplexity": m[key]}
        for split, m in result.items()
        for model, key in PERPLEXITIES
        if key in m
    ]


@task(name="publish-plots", cache_policy=NO_CACHE)
def publish_plots(level: Level, result: dict[str, dict[str, Any]]) -> None:
    """Write the perplexity bars beside DVCLive's curves, and the link artifact ``<level>-plots``.

    The link points at the page of every DVC plot that ``dvc plots show`` writes, not at the plots
    folder: the folder holds the data (TSV, JSON), the page draws it, offline (.dvc/config's
    plots.html_template bundles vega), and ``dvc plots diff`` writes it with other experiments
    beside this one. It is written once the run is over: inside the stage it would cost another
    dvc process, and show the other stages' plots before they ran.
    """
    write_json(plots(level) / PERPLEXITY_PLOT, perplexity_rows(result))
    create_link_artifact(
        key=f"{level}-plots",
        link=(Path.cwd() / paths.PLOTS_PAGE).as_uri(),
        link_text=f"{level} level: loss per epoch and per second, learning rate, perplexity beside the n-gram's",
        description=f"The DVC plots page (`dvc plots show` writes it; `dvc plots diff` compares experiments). "
        f"Its data: {Path.cwd() / plots(level)}/",
    )


@flow(name="lm")
def language_model(
    level: Level,
    train_params: TrainParams,
    tokenizer: dict[str, Any],
    ngram_params: NgramParams,
    evaluate_params: EvaluateParams,
    sample_params: SampleParams,
) -> dict[str, Any]:
    """Train, baseline and evaluate ``level``'s model, log curves and metrics with DVCLive, then sample."""
    record = train(level, train_params, tokenizer)
    baseline = ngram(level, ngram_params)
    result = evaluate(level, evaluate_params, baseline)
    write_live(lm_outputs(level), record["history"], CURVES, headline(level, result))
    publish_plots(level, result)
    sample(level, sample_params)
    return {"train": record, "evaluation": result}


def run(level: Level, params_file: str) -> dict[str, Any]:
    cfg = load_params(spec(level).params, params_file)
    tokenizer = tokenizer_settings(level, cfg[f"tokenize.{level}"])
    train_params, evaluate_params = cfg[f"train.{level}"], cfg["evaluate"]
    sample_params = check_lm(level, train_params, tokenizer, evaluate_params, cfg[f"sample.{level}"], warn)
    return language_model(level, train_params, tokenizer, cfg[f"ngram.{level}"], evaluate_params, sample_params)


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(__doc__, argv, run, level=True)


if __name__ == "__main__":
    raise SystemExit(main())
