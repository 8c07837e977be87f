"""Flow ``retrain``: pull, reproduce, compare with the promoted model, promote if better, push.

    python -m flows.retrain                          # once, now (make retrain)
    python -m flows.retrain --level word -S train.word.lr=0.01 --remote team
    python -m ops.serve                              # on the `schedule` in params.yaml (make serve)

Each run, in the repository ``repo``:

1. ``dvc pull`` when a remote is configured (retried with backoff: the network);
2. ``dvc repro``, or ``dvc exp run -S key=value ...`` when ``overrides`` are given; only the
   chosen levels' ``lm`` stages (and what they need) when ``levels`` is a subset. A failed
   stage fails the run with the stage's own error in the logs, and the promoted model is
   untouched;
3. per level, the new model's perplexity on ``retrain.split`` (from the lm stage's
   ``artifacts/<level>/evaluation.json``) against the promoted model's on the same held-out data
   (its recorded number when the data and the evaluation are the same, else the promoted
   checkpoint re-scored on the current split);
4. promotion when better by ``retrain.margin`` (models/registry.py: an atomic pointer update,
   tracked by ``dvc add registry``), a markdown artifact ``promotion-<level>`` that states the
   decision, and a table artifact ``promotion-<level>-decision`` with its numbers;
5. ``dvc push`` when a remote is configured (retried).

The stages DVC starts are Prefect flows in their own processes: they inherit this run's
PREFECT_API_URL, so they record to the same server (and start no temporary ones).
"""

# No `from __future__ import annotations` here: the runner of a served flow ships the flow to its
# process by value, and string annotations would name types its namespace lacks (`Level`).

import argparse
import datetime
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.settings import get_current_settings

from flows.common import markdown_table, quiet_prefect_logs, stop_as_stage
from models import registry
from pipeline import dvc_remote, paths, procs, stage
from pipeline.errors import ParamsError, RnnlabError
from pipeline.io import read_json, sha256_file
from pipeline.overrides import override_text, parse_sets
from pipeline.params import LEVELS, Level, Params, validate
from pipeline.paths import PARAMS_FILE, checkpoints, evaluation

Override = str | int | float | bool
NETWORK_RETRIES = 3
NETWORK_BACKOFF = [10, 30, 90]  # seconds: a flaky link or a busy remote usually recovers within minutes


class RetrainError(RnnlabError):
    """The retraining run cannot start as asked."""


def _log(line: str) -> None:
    get_run_logger().info(line)


def prefect_env() -> dict[str, str]:
    """PREFECT_API_URL of this run, passed on to the stage flows that DVC starts."""
    url = get_current_settings().api.url  # the environment, the active profile, prefect.toml
    return {"PREFECT_API_URL": url} if url else {}


def params_with(root: Path, overrides: dict[str, Override]) -> Params:
    """params.yaml with ``overrides`` applied, validated, so a bad key fails before DVC edits the file.

    A value given as text is read as DVC will read it from ``-S`` (pipeline/overrides.py)."""
    path = root / PARAMS_FILE
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in overrides.items():
        node, parts = raw, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or not isinstance(node.get(part), dict):
                raise ParamsError(f"override {key}={value!r}: {part!r} is not a section of {path}")
            node = node[part]
        node[parts[-1]] = parse_sets([f"{key}={value}"], "retrain")[key][0] if isinstance(value, str) else value
    source = f"{path} with overrides {overrides}" if overrides else str(path)
    return validate(raw, source)


@task(name="dvc-pull", retries=NETWORK_RETRIES, retry_delay_seconds=NETWORK_BACKOFF, cache_policy=NO_CACHE)
def pull(root: Path, name: str) -> None:
    dvc_remote.pull(root, name, log=_log)


@task(name="dvc-push", retries=NETWORK_RETRIES, retry_delay_seconds=NETWORK_BACKOFF, cache_policy=NO_CACHE)
def push(root: Path, name: str) -> None:
    dvc_remote.push(root, name, log=_log)


@task(name="reproduce", cache_policy=NO_CACHE)
def reproduce(root: Path, targets: list[str], overrides: dict[str, Override]) -> None:
    """``dvc repro``, or ``dvc exp run -S ...`` (which needs a git commit to record the experiment)."""
    if overrides and _git(root, "rev-parse", "--verify", "HEAD") is None:
        raise RetrainError(
            f"overrides run `dvc exp run`, which records each experiment in git and needs a commit in {root}; "
            "commit first (git add -A && git commit -m baseline), or retrain without overrides"
        )
    if overrides:
        sets = [a for k, v in overrides.items() for a in ("-S", f"{k}={override_text(v)}")]
        _dvc(root, "exp", "run", *sets, *targets)
    else:
        _dvc(root, "repro", *targets)


def _dvc(root: Path, *args: str) -> None:
    """``dvc ARGS`` with its output in the run's log, as pipeline/dvc_remote.py runs it, except that its
    whole process tree (the running stage, torchrun under it) stops with this run: when SIGTERM or
    Ctrl-C stops ``make retrain``, or when the run is cancelled (the UI, ``prefect flow-run cancel``:
    the runner sends SIGTERM, which Prefect raises here as TerminationSignal)."""
    code, tail = procs.stream(
        [str(dvc_remote.DVC), *args], _log, tail=dvc_remote.TAIL_LINES, cwd=root, env=dvc_remote.env(prefect_env())
    )
    if code != 0:
        shown = "\n".join(x for x in tail if x.strip())
        raise dvc_remote.DvcError(f"`dvc {' '.join(args)}` failed (exit {code}) in {root}:\n{shown}")


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except OSError:  # no git here: the record says so with nulls
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _checkpoints_md5(root: Path, level: str) -> str | None:
    """DVC's hash of ``artifacts/<level>/checkpoints`` in dvc.lock: finds this run's lock in git history."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    outs = stages.get(f"lm@{level}", {}).get("outs", [])
    return next((o.get("md5") for o in outs if o.get("path") == checkpoints(level).as_posix()), None)


@task(name="score-promoted", cache_policy=NO_CACHE, task_run_name="score-promoted-{level}")
def score_promoted(
    root: Path, level: Level, record: dict[str, Any], split: str, batch_size: int, logits_mb: float
) -> float | None:
    """The promoted checkpoint's perplexity on the current ``split``; None when its vocabulary differs."""
    import torch

    from models import checkpoint as ckpt
    from models.evaluate import score_split, split_metrics

    meta = read_json(root / paths.windows(level) / "meta.json")
    if record["vocab_sha256"] != meta["vocab_sha256"]:
        return None  # ids mean other tokens now: its perplexity over them would be meaningless
    folder = root / record["model"]
    model, _, saved = ckpt.load_model(folder, torch.device("cpu"), folder / registry.VOCAB)
    scores = score_split(
        model,
        saved["train"]["mode"],
        root / paths.windows(level),
        meta,
        split,
        batch_size,
        torch.device("cpu"),
        logits_mb,
    )
    ppl = split_metrics(scores, level)["perplexity"]
    get_run_logger().info(f"promoted {level} model re-scored on the current {split} split: perplexity {ppl:.4f}")
    return float(ppl)


@task(name="compare", cache_policy=NO_CACHE, task_run_name="compare-{level}")
def compare(root: Path, level: Level, p: Params, overrides: dict[str, Override], force: bool) -> dict[str, Any]:
    """Decide on ``level``; promote when the rule says so. Returns the decision and the record."""
    split, evaluate = p.retrain.split, p.evaluate.model_dump(mode="json")
    if split not in p.evaluate.splits:
        raise ParamsError(f"retrain.split is {split!r} but evaluate.splits {list(p.evaluate.splits)} lacks it; add it")
    new_metrics = read_json(root / evaluation(level))
    ckpt_file = paths.model_file(root / checkpoints(level))  # the best validation epoch's weights
    meta = read_json(root / paths.windows(level) / "meta.json")
    heldout = registry.heldout_id(root, level, split, evaluate)
    sha, candidate = sha256_file(ckpt_file), float(new_metrics[split]["perplexity"])
    promoted = registry.read_promoted(root, level)
    if promoted is None:
        incumbent = None
    elif promoted["checkpoint_sha256"] == sha:
        incumbent = candidate  # the same model, just scored on the current data
    elif promoted.get("heldout") == heldout:  # same arrays, vocabulary and evaluation: its number stands
        incumbent = float(promoted["metrics"][split]["perplexity"])
    else:
        incumbent = score_promoted(root, level, promoted, split, p.evaluate.batch_size, p.evaluate.logits_mb)
    decision = registry.decide(candidate, sha, promoted, incumbent, split, p.retrain.margin, force)
    record: dict[str, Any] = {
        "checkpoint_sha256": sha,
        "vocab_sha256": meta["vocab_sha256"],
        "split": split,
        "heldout": heldout,
        "metrics": new_metrics,
        "train": getattr(p.train, level).model_dump(mode="json"),
        "overrides": overrides,
        "dvc": {"checkpoints_md5": _checkpoints_md5(root, level)},
        "git": {"commit": _git(root, "rev-parse", "HEAD"), "dirty": bool(_git(root, "status", "--porcelain"))},
        "promoted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "flow_run": {"id": str(flow_run.id) if flow_run.id else None, "name": flow_run.name},
        "decision": decision.reason,
        "previous": None
        if promoted is None
        else {
            "checkpoint_sha256": promoted["checkpoint_sha256"],
            "model": promoted["model"],
            "perplexity": incumbent,
            "promoted_at": promoted.get("promoted_at"),
        },
    }
    model = None
    if decision.promote:
        model = registry.promote(root, level, record, ckpt_file, root / paths.vocab(level))
    get_run_logger().info(
        f"{level}: {'promoted' if decision.promote else 'kept the promoted model'}: {decision.reason}"
    )
    return {"decision": decision.to_dict(), "model": str(model) if model else None, "promoted": promoted}


@task(name="track-registry", cache_policy=NO_CACHE)
def track_registry(root: Path) -> None:
    """``dvc add registry``: one .dvc file versions every pointer with its model (a no-op when unchanged)."""
    dvc_remote.dvc(root, "add", "--quiet", paths.REGISTRY.as_posix(), log=_log)


def report(level: str, outcome: dict[str, Any]) -> str:
    """The markdown of the ``promotion-<level>`` artifact."""
    d, before = outcome["decision"], outcome["promoted"]
    verdict = "promoted" if d["promote"] else "kept"
    pct = "n/a" if d["improvement"] is None else f"{d['improvement']:+.2%}"
    rows = [
        {"model": "new", "perplexity": d["candidate"], "checkpoint": "this run"},
        {
            "model": "promoted before",
            "perplexity": "n/a" if d["incumbent"] is None else d["incumbent"],
            "checkpoint": before["model"] if before else "none",
        },
    ]
    where = (
        f"Registry: `{paths.registry_pointer(level)}` now points at `{outcome['model']}`. Commit it "
        "(`git add registry.dvc dvc.lock && git commit`) so the team sees it; `dvc push` shares the files."
        if d["promote"]
        else f"Registry unchanged: `{paths.registry_pointer(level)}`."
    )
    return (
        f"# Promotion, {level} level\n\nDecision: **{verdict}**. {d['reason']}.\n\n"
        + markdown_table(rows, ["model", "perplexity", "checkpoint"])
        + f"\n\nPerplexity on the `{d['split']}` split; relative improvement {pct}, margin {d['margin']:.2%}.\n\n"
        + where
        + "\n"
    )


def decision_table(level: str, outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``promotion-<level>-decision`` table artifact: one row, the decision and its numbers."""
    d, before = outcome["decision"], outcome["promoted"]
    return [
        {
            "level": level,
            "decision": "promoted" if d["promote"] else "kept",
            "split": d["split"],
            "new_perplexity": d["candidate"],
            "promoted_perplexity": d["incumbent"],  # the model promoted before; None when there was none
            "improvement": d["improvement"],  # relative: 1 - new / promoted
            "margin": d["margin"],
            "reason": d["reason"],
            "registry_model": outcome["model"] or (before["model"] if before else None),
        }
    ]


@task(name="report", cache_policy=NO_CACHE, task_run_name="report-{level}")
def publish(level: str, outcome: dict[str, Any]) -> None:
    """The decision as text (markdown ``promotion-<level>``) and as numbers (table ``promotion-<level>-decision``)."""
    verdict = "promoted" if outcome["decision"]["promote"] else "kept"
    create_markdown_artifact(
        key=f"promotion-{level}",
        markdown=report(level, outcome),
        description=f"{level}: new model {verdict}; perplexity against the promoted one",
    )
    create_table_artifact(
        key=f"promotion-{level}-decision",
        table=decision_table(level, outcome),
        description=f"{level}: the promotion decision and its numbers (perplexity on the held-out split)",
    )


@flow(name="retrain")
def retrain(
    repo: str = ".",
    overrides: dict[str, Override] | None = None,
    levels: list[Level] | None = None,
    remote: str | None = None,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Retrain, compare with the promoted model on the same held-out split, promote if better.

    Args:
        repo: repository root (DVC and git run there).
        overrides: params to set for this run (``dvc exp run -S key=value``); none: ``dvc repro``.
        levels: levels to retrain and judge; none: ``retrain.levels`` from params.yaml.
        remote: DVC remote to pull from and push to; none: the default remote, or no
            pull and push when the repository has none.
        force: promote the new models whatever their numbers.
    """
    root = Path(repo).resolve()
    log = get_run_logger()
    overrides = dict(overrides or {})
    p = params_with(root, overrides)  # before DVC writes the overrides into params.yaml
    chosen: list[Level] = list(levels or p.retrain.levels)
    name = dvc_remote.resolve(root, remote, required=False)
    log.info(f"retraining {', '.join(chosen)} in {root}; DVC remote: {name or 'none (no pull, no push)'}")
    if name:
        pull(root, name)
    targets = [] if set(chosen) == set(LEVELS) else [f"lm@{lvl}" for lvl in chosen]
    reproduce(root, targets, overrides)
    outcomes = {level: compare(root, level, p, overrides, force) for level in chosen}
    for level, outcome in outcomes.items():
        publish(level, outcome)
    if (root / paths.REGISTRY).is_dir():
        track_registry(root)
    if name:
        push(root, name)
    return {level: o["decision"] for level, o in outcomes.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=".", help="repository root (default: %(default)s)")
    ap.add_argument(
        "--level", action="append", choices=LEVELS, help="retrain this level (repeatable; default: retrain.levels)"
    )
    ap.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param for this run (dvc exp run -S)",
    )
    ap.add_argument("--remote", help="DVC remote (default: the default remote, if any)")
    ap.add_argument("--force", action="store_true", help="promote whatever the numbers")
    args = ap.parse_args(argv)
    overrides: dict[str, Override] = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            ap.error(f"-S takes KEY=VALUE, got {item!r}")
        overrides[key] = value

    def body() -> None:
        result = retrain(args.repo, overrides or None, args.level, args.remote, args.force)
        for level, d in result.items():
            print(f"{level}: {'promoted' if d['promote'] else 'kept'} ({d['reason']})")

    quiet_prefect_logs()
    code = stage.run(lambda: stop_as_stage(body))
    if (signum := stage.stopping()) is not None:
        again = shlex.join(["python", "-m", "flows.retrain", *(sys.argv[1:] if argv is None else argv)])
        print(
            f"rnnlab: {procs.signal_name(signum)} interrupted the retraining run; its dvc and stage processes "
            f"stopped, finished stages are kept (dvc.lock); `{again}` resumes, training "
            "from its last checkpoint",
            file=sys.stderr,
            flush=True,
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
