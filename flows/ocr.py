"""Flow ``ocr``: sequence labelling of handwritten words, bidirectional against unidirectional.

    python -m flows.ocr                    # tasks/dvc.yaml, after ocr_data

Trains models/ocr.py's GRU labeller with the shared Trainer on ``data/ocr/docs``
and, with ``ocr.compare: true``, its twin in the other direction, epoch by epoch
side by side. Writes under ``artifacts/ocr/``:

    checkpoints/<direction>/last.pt   rolling checkpoints (persist), direction = bidirectional | unidirectional
    errors.csv                        valid per-letter error of each per epoch: the DVC plot (tasks/dvc.yaml)
    metrics.json                      per direction: test loss, per-letter and per-word error

and a markdown artifact ``ocr-metrics``. Padded frames count in neither the loss
nor the errors. The task follows Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow
for Machine Intelligence* (Bleeding Edge Press, 2016), chapter 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import (
    fingerprint,
    folder_data,
    markdown_table,
    stage_main,
    train_all,
    write_csv,
)
from models.ocr import OcrTask
from models.trainer import Trainer
from pipeline import stage
from pipeline.codedeps import code_deps, model_code
from pipeline.io import write_json
from pipeline.params import OcrTaskParams, load_params
from pipeline.paths import OCR_CHECKPOINTS, OCR_DOCS, OCR_ERRORS, OCR_LABELLER_METRICS

DIRECTIONS = {"bidirectional": True, "unidirectional": False}
# What the fingerprint hashes: the models/ modules this flow loads, and the OCR split reader.
CODE = model_code("flows.ocr", "pipeline.ocr.table")


def spec() -> stage.StageSpec:
    return stage.StageSpec(
        params=("ocr",),
        deps=(
            *code_deps("flows.ocr"),
            str(OCR_DOCS),
        ),
        # Not DVC metrics: `dvc metrics show` must not warn for users who never ran tasks/dvc.yaml.
        outs=(str(OCR_CHECKPOINTS), str(OCR_ERRORS), str(OCR_LABELLER_METRICS)),
    )


@task(name="evaluate-test", cache_policy=NO_CACHE, task_run_name="{direction}")
def evaluate_test(trainer: Trainer, direction: str) -> dict[str, Any]:
    m = trainer.task.evaluate("test")
    get_run_logger().info(f"{direction} test: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))
    return m


@flow(name="ocr")
def ocr(params: OcrTaskParams) -> dict[str, Any]:
    """Train (or resume, or reuse) the labeller(s); write the error curves and the test metrics."""
    log = get_run_logger()
    data = folder_data(OCR_DOCS)
    main = "bidirectional" if params.bidirectional else "unidirectional"
    names = [main] + ([d for d in DIRECTIONS if d != main] if params.compare else [])
    trainers: dict[str, Trainer] = {}
    for name in names:
        fp = fingerprint(f"ocr-{name}", params, data, CODE)

        def build(device: Any, bi: bool = DIRECTIONS[name]) -> OcrTask:
            return OcrTask(params, OCR_DOCS, device, bidirectional=bi)

        trainers[name] = Trainer(build, params, OCR_CHECKPOINTS / name, fp, key="ocr")
        log.info(f"{name}: {trainers[name].task.cfg}, {trainers[name].steps_per_epoch} steps per epoch")
    train_all(trainers)
    epochs = [
        {"epoch": h["epoch"], **{n: t.history[i]["valid_letter_error"] for n, t in trainers.items()}}
        for i, h in enumerate(trainers[main].history)
    ]
    write_csv(OCR_ERRORS, epochs, ["epoch", *DIRECTIONS])
    result = {name: evaluate_test(t, name) for name, t in trainers.items()}
    write_json(OCR_LABELLER_METRICS, result)
    rows = [{"model": f"GRU {params.hidden}, {name}", **m} for name, m in result.items()]
    create_markdown_artifact(
        key="ocr-metrics",
        markdown="# OCR letters: test errors\n\n"
        + markdown_table(rows, ["model", "letter_error", "word_error", "loss", "letters", "words"])
        + "\n\n## Valid per-letter error per epoch\n\n"
        + markdown_table(epochs, ["epoch", *trainers]),
        description="per-letter and per-word error, bidirectional against unidirectional",
    )
    return result


def run(params_file: str) -> dict[str, Any]:
    return ocr(load_params(spec().params, params_file)["ocr"])


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(__doc__, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
