"""Shared by every flow: output paths, training fingerprints, the epoch task, DVCLive, stage plumbing.

Outputs of one language-model level live under ``artifacts/<level>/`` (dvc.yaml repeats these paths)::

    checkpoints/last.pt   the rolling training checkpoint (persist: true, so a killed run resumes)
    ngram.json            the Kneser-Ney baseline's held-out scores
    evaluation.json       every held-out split's loss, perplexity, bits, error rate and oracle gap
    samples.txt           generated text
    plots/metrics/*.tsv   DVCLive: train and valid loss per epoch (the DVC plots)
    metrics.json          DVCLive: the headline numbers of the test split (the DVC metrics)

Caching rule, for the language models and every other task: DVC decides whether a stage runs;
the Trainer's checkpoint (``persist: true`` in dvc.yaml) decides whether training runs. A
checkpoint records its fingerprint (data hashes, params, code hashes); a rerun with the same
fingerprint finds it finished and trains nothing, a killed run resumes from it, one of another
fingerprint is ignored. The language models also key Prefect's cache of ``fit`` on it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from models.device import set_threads
from pipeline import paths, stage
from pipeline.errors import RnnlabError
from pipeline.io import atomic_open, read_json, sha256_file
from pipeline.params import CharTokenizeParams, TrainParams, WordTokenizeParams

if TYPE_CHECKING:  # only for the annotation: importing the trainer would make it a dep of every stage
    from models.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]  # the repository: code files are hashed from here
ARTIFACTS = Path("artifacts")


def checkpoints(level: str) -> Path:
    return ARTIFACTS / level / "checkpoints"


def ngram_scores(level: str) -> Path:
    return ARTIFACTS / level / "ngram.json"


def evaluation(level: str) -> Path:
    return ARTIFACTS / level / "evaluation.json"


def plots(level: str) -> Path:
    """DVCLive's plots folder of a run logged with ``write_live(ARTIFACTS / level, ...)``."""
    return ARTIFACTS / level / "plots"


def metrics_file(level: str) -> Path:
    """DVCLive's summary: the DVC metrics file."""
    return ARTIFACTS / level / "metrics.json"


def samples(level: str) -> Path:
    return ARTIFACTS / level / "samples.txt"


def tokenizer_settings(level: str, cfg: WordTokenizeParams | CharTokenizeParams) -> dict[str, Any]:
    """What turns text into this level's tokens: stored in checkpoints so the CLI needs no params file."""
    if level == "word":
        return {"level": "word", "pattern": cfg.pattern, "lowercase": cfg.lowercase}
    return {"level": "char", "lowercase": cfg.lowercase}


def module_file(name: str) -> str:
    """The repository path of project module ``name`` ("models.rnn" -> "models/rnn.py")."""
    base = name.replace(".", "/")
    return f"{base}/__init__.py" if (ROOT / base).is_dir() else f"{base}.py"


@functools.cache  # each flow module's CODE walks the shared modules again at import: parse each once
def _load_time_imports(name: str) -> frozenset[str]:
    """The project modules that importing ``name`` imports itself: its module-level ``import`` and
    ``from ... import`` statements (inside ``if``/``try`` too), not those in functions (lazy) or
    under ``if TYPE_CHECKING`` (annotations only), which a run never loads with it."""
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out.add(node.module)
                submodules = (f"{node.module}.{a.name}" for a in node.names)  # `from models import cells`
                out.update(m for m in submodules if (ROOT / module_file(m)).is_file())
            elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(part)

    visit(ast.parse((ROOT / module_file(name)).read_text(encoding="utf-8")).body)
    return frozenset(m for m in out if m.split(".")[0] in ("flows", "models") and m not in ("flows", "models"))


def model_code(flow_module: str, *extra: str) -> tuple[str, ...]:
    """What a training's fingerprint hashes: the models/ modules that importing ``flow_module`` loads
    (through the flows/ and models/ modules it imports, and theirs), plus ``extra`` (a task's data
    helper outside models/). Sorted module names; tests/test_dvc_yaml.py checks each stage's list
    against the imports its command really makes, through ``spec()``'s ``code_files``."""
    seen: set[str] = set()
    todo = [flow_module]
    while todo:
        if (name := todo.pop()) not in seen:
            seen.add(name)
            todo.extend(_load_time_imports(name))
    return tuple(sorted({m for m in seen if m.startswith("models.")} | set(extra)))


def code_files(modules: Iterable[str]) -> tuple[str, ...]:
    """The files of ``modules`` (e.g. a flow's ``CODE``), as ``spec()`` lists them in its deps."""
    return tuple(module_file(m) for m in modules)


def fingerprint(task: str, params: BaseModel | Mapping[str, Any], data: Mapping[str, Any], code: Iterable[str]) -> str:
    """A training's identity: sha256 over the data's file hashes, the params and the code's hashes.

    ``data`` names files by their sha256 (e.g. a windows stage's meta.json), ``code`` the modules
    the training imports (``model_code``), by name, so that a module keeps its key wherever its
    file lives. File hashes only: no tensor is hashed.
    """
    dumped = params.model_dump(mode="json") if isinstance(params, BaseModel) else dict(params)
    hashes = {m: sha256_file(ROOT / module_file(m)) for m in sorted(code)}
    parts = {"task": task, "data": data, "params": dumped, "code": hashes}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def train_fingerprint(
    task: str, windows: Path, train: TrainParams, tokenizer: dict[str, Any], code: Iterable[str]
) -> str:
    """A language model's fingerprint: its windows and vocabulary, its train params and the
    tokenizer settings the checkpoint records, and the models/ code its stage imports."""
    params = {"train": train.model_dump(mode="json"), "tokenizer": tokenizer}
    return fingerprint(task, params, windows_data(windows), code)


def lm_fingerprint(level: str, train: TrainParams, tokenizer: dict[str, Any], code: Iterable[str]) -> str:
    """The train stage's cache key for ``level``."""
    return train_fingerprint(f"lm-{level}", paths.windows(level), train, tokenizer, code)


def windows_data(folder: Path) -> dict[str, Any]:
    """What identifies a windows dataset: the sha256 of its arrays and of its vocabulary (meta.json)."""
    meta = read_json(Path(folder) / "meta.json")
    return {"files": meta["files"], "vocab_sha256": meta["vocab_sha256"]}


def folder_data(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (a Parquet document table)."""
    folder = Path(folder)
    return {f.relative_to(folder).as_posix(): sha256_file(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def _epoch_run_name(parameters: dict[str, Any]) -> str:
    part = parameters.get("part")
    return f"{part}-epoch-{parameters['epoch']}" if part else f"epoch-{parameters['epoch']}"


@task(name="train-epoch", cache_policy=NO_CACHE, task_run_name=_epoch_run_name)
def train_epoch(trainer: Trainer, epoch: int, part: str = "") -> dict[str, Any]:
    """One epoch block of any task's Trainer: epoch_size steps, validation, LR schedule, checkpoint.

    ``part`` names which of a flow's several models this is (a class, a direction) in the run's name.
    Untagged: the language model's ``fit`` holds the ``gpu`` slot, and a tagged child would wait on it.
    """
    trainer.log = get_run_logger().info
    return trainer.run_epoch()


def train_all(trainers: Mapping[str, Trainer]) -> None:
    """Every trainer to its last epoch (trained, resumed or already done), one ``train_epoch`` task
    per epoch; several side by side, epoch by epoch, so their curves share their epochs. A key
    names its model in the task runs ("" for a flow's only one)."""
    while not all(t.done for t in trainers.values()):
        for part, t in trainers.items():
            if not t.done:
                train_epoch(t, t.epoch + 1, part=part)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV, atomically; floats as repr (they round-trip exactly), missing cells empty."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(columns) + "\n")
        for row in rows:
            f.write(",".join(repr(v) if isinstance(v := row.get(c, ""), float) else str(v) for c in columns) + "\n")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_live(
    folder: Path, history: Sequence[Mapping[str, Any]], curves: Sequence[str], summary: Mapping[str, float]
) -> None:
    """Log a finished training with DVCLive: ``folder/plots/metrics/<curve>.tsv`` per curve, one row per
    epoch (step = epoch), and ``folder/metrics.json`` holding ``summary`` (DVC's metrics file).

    Written from the checkpoint's history once training is over, so a resumed or cached training
    logs exactly what a straight one does. The summary holds only the headline numbers, so that
    ``dvc metrics show`` stays a few columns wide; the curves' last values are in the plots.
    """
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    # save_dvc_exp/dvcyaml off: inside a DVC stage, DVC owns experiments and dvc.yaml already
    # declares these files; DVCLive only writes them.
    try:
        live = Live(dir=str(folder), save_dvc_exp=False, dvcyaml=False)
    except SCMError as e:  # DVCLive reads the git commit the run starts from
        raise RnnlabError(
            f"DVCLive cannot log {folder}: git says {e}; commit once (git add -A && git commit -m baseline) "
            "and run again: training is not repeated"
        ) from None
    with live:
        for row in history:
            live.step = int(row["epoch"])
            for name in curves:
                if row.get(name) is not None:
                    live.log_metric(name, float(row[name]))
        live.summary = {k: float(v) for k, v in summary.items()}  # written, with the last step, on exit


def stage_main(doc: str | None, argv: Sequence[str] | None, body: Callable[..., object], *, level: bool = False) -> int:
    """``python -m flows.X [--level L] [--params FILE]``: fixed torch threads, user errors without a traceback.

    ``body`` is called as ``body(level, params_file)`` with ``level=True``, else ``body(params_file)``.
    With ``PREFECT_API_URL`` set, the flow first waits until that API answers: ``rnnlab repro``
    starts its server while DVC runs the data stages, so it may still be starting.
    """
    args = stage.parser(doc, level=level).parse_args(argv)
    set_threads()
    return stage.run(lambda: body(args.level, args.params) if level else body(args.params), setup=wait_for_prefect)


def wait_for_prefect() -> None:
    """Block until the configured Prefect API answers (none configured: the flow starts its own)."""
    from prefect.settings import get_current_settings

    from flows.server import wait_for_api  # here, not above: it cannot change what a stage writes

    if api := get_current_settings().api.url:
        wait_for_api(api, say=lambda line: print(f"rnnlab: {line}", file=sys.stderr, flush=True))
