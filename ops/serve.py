"""Serve the retraining flow on its schedule, for the Prefect UI: ``python -m ops.serve`` (``make serve``).

    make server                                                     # 1. a Prefect server and its UI
    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api    # 2. once: point clients at it
    make serve                                                      # 3. this: runs retrain on the schedule
    # then open http://127.0.0.1:4200/deployments (retrain/scheduled), or /runs

The ``schedule`` section of params.yaml sets the deployment's name, its cron (or interval)
and time zone, and the overrides each run passes to ``dvc exp run -S``; ``--cron`` and
``--interval`` replace them for one serve. Runs execute here, one at a time (``limit=1``):
two runs on one repository would fight over DVC's lock, so a run that comes due while
another is going waits its turn. Stop with Ctrl-C or SIGTERM (the schedule is paused, and a run in
progress is cancelled: its dvc and stage processes stop, and the next run resumes its training).
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ops import server
from pipeline import procs, stage
from pipeline.errors import ParamsError, RnnlabError
from pipeline.params import ScheduleParams, validate
from pipeline.paths import PARAMS_FILE

START_SERVER = (
    "start one with `make server` (or `rnnlab server --port 4200`), then "
    "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`"
)


class PrefectApiError(RnnlabError):
    """No Prefect API is configured, or the configured one does not answer."""


def check_api(url: str | None, timeout: float = 5.0) -> str:
    """Return ``url`` once its /health answers; raise PrefectApiError saying what to do otherwise."""
    if not url:
        raise PrefectApiError(
            "PREFECT_API_URL is not set, so there is no Prefect server to serve to (a scheduled "
            f"deployment needs one, and its UI shows the runs); {START_SERVER}"
        )
    if not procs.healthy(url, timeout):
        raise PrefectApiError(
            f"the Prefect API at PREFECT_API_URL={url} does not answer; "
            f"is the server running? {START_SERVER}, or set PREFECT_API_URL to a running one"
        )
    return url


def schedule_params(root: Path, params: str, cron: str | None, interval: float | None) -> ScheduleParams:
    """The ``schedule`` section, with ``--cron``/``--interval`` replacing its cron and interval."""
    path = root / params
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the repository root, or pass --repo") from None
    if cron is not None or interval is not None:
        raw.setdefault("schedule", {}).update(cron=cron, interval=interval)
        return validate(raw, f"{path} with --cron/--interval").schedule
    return validate(raw, str(path)).schedule


def prefect_schedule(cfg: ScheduleParams) -> Any:
    """A Prefect Cron or Interval schedule; Prefect's own cron parser has the last word."""
    from prefect.schedules import Cron, Interval

    if cfg.cron is not None:
        try:
            return Cron(cfg.cron, timezone=cfg.timezone)
        except ValueError as e:
            raise ParamsError(
                f"schedule.cron: not a valid cron expression for Prefect ({e}), got {cfg.cron!r}"
            ) from None
    assert cfg.interval is not None  # ScheduleParams: exactly one of the two
    return Interval(datetime.timedelta(seconds=cfg.interval), timezone=cfg.timezone)


def serve(root: Path, cfg: ScheduleParams) -> None:
    """Create (or update) the deployment ``retrain/<cfg.deployment>`` and execute its runs until stopped."""
    from prefect.deployments.runner import EntrypointType

    from flows.retrain import retrain

    schedule = prefect_schedule(cfg)
    url = check_api(server.configured_api())
    when = f"cron {cfg.cron!r}" if cfg.cron else f"every {cfg.interval:g} s"
    print(f"serving retrain/{cfg.deployment} ({when}, {cfg.timezone}) for {root} against {url}", flush=True)
    # Prefect's runner stops gracefully on SIGTERM: it cancels the run in progress, whose dvc and
    # stage processes stop with it (flows/retrain.py). On SIGINT it only leaves, and the run goes on
    # without it. So SIGINT (Ctrl-C; `kill -INT` of a background job, whose shell had it ignored)
    # means SIGTERM here.
    signal.signal(signal.SIGINT, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    retrain.serve(
        name=cfg.deployment,
        schedule=schedule,
        parameters={"repo": str(root), "overrides": dict(cfg.overrides)},
        description=f"Scheduled retraining of {root} (flows/retrain.py): promote only if better.",
        tags=["rnnlab", "retrain"],
        limit=1,  # one run at a time: DVC locks the repository
        # By module, not file path: each run imports flows.retrain from the repository it serves.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=".", help="repository to retrain (default: %(default)s)")
    p.add_argument(
        "--params",
        default=str(PARAMS_FILE),
        help="where the schedule section is read, relative to --repo; the runs "
        "read the repository's params.yaml, as DVC does (default: %(default)s)",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", help="cron expression, instead of schedule.cron")
    when.add_argument("--interval", type=float, help="seconds between runs, instead of schedule.cron/interval")
    args = p.parse_args(argv)

    def body() -> None:
        root = Path(args.repo).resolve()
        serve(root, schedule_params(root, args.params, args.cron, args.interval))

    return stage.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
