"""Retraining's parts, fast: the schedule params, the promotion rule, the registry's atomic update,
and the errors a user meets first (a bad cron, an unreachable Prefect API). The real scheduled runs
are in tests/test_schedule_server.py; the DVC remote round trip in tests/test_remote.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.harness import ROOT, load_params, merge, tool_env, write_params
from flows import retrain
from models import registry
from ops import serve
from ops.server import free_port
from pipeline.errors import ParamsError
from pipeline.io import read_json, sha256_file
from pipeline.overrides import override_text
from pipeline.params import cron_problem, read_params, validate
from pipeline.vocab import Vocab

# --- the schedule section ---------------------------------------------------------------------

VALID_CRON = [
    "0 3 * * *",
    "*/15 * * * *",
    "0 3 * * mon-fri",
    "30 2 1,15 * *",
    "0 0 L * *",
    "0 9 * * L5",
    "0 9 * * fri#2",
    "0 0 * jan-mar sun",
    "5-2 * * * *",
    "0 12 ? * *",
    "@daily",
    "@HOURLY",
    "0 0 * * 7",
]
INVALID_CRON = [
    "61 * * * *",
    "0 24 * * *",
    "0 0 0 * *",
    "0 0 * 13 *",
    "0 0 * * 8",
    "*/0 * * * *",
    "0 3 * *",
    "a * * * *",
    "1,,3 * * * *",
    "@reboot",
    "@every 5m",
    "H * * * *",
    "0 3 * * 1#6",
    "? * * * *",
]


def schedule(**kw: Any) -> dict[str, Any]:
    return merge(load_params(), {"schedule": kw})


def test_repo_schedule_and_retrain_sections_are_valid() -> None:
    p = read_params(ROOT / "params.yaml")
    assert p.schedule.cron is not None and p.schedule.interval is None
    assert 0 <= p.retrain.margin < 1 and p.retrain.split in p.evaluate.splits


@pytest.mark.parametrize("cron", VALID_CRON)
def test_cron_expressions_we_accept_prefect_accepts(cron: str) -> None:
    from prefect._vendor.croniter import croniter  # what Prefect's schedules parse with
    from prefect.schedules import Cron

    assert cron_problem(cron) is None
    assert croniter.is_valid(cron)
    Cron(cron)  # and the schedule object serve builds


@pytest.mark.parametrize("cron", INVALID_CRON)
def test_invalid_cron_names_the_key_and_the_value(cron: str) -> None:
    with pytest.raises(ParamsError) as e:
        validate(schedule(cron=cron))
    msg = str(e.value)
    assert "schedule.cron: not a valid cron expression (" in msg and f"got {cron!r}" in msg, msg


def test_cron_messages_say_what_is_wrong() -> None:
    assert cron_problem("61 * * * *") == "minute field '61': '61' is not a value from 0 to 59"
    assert cron_problem("0 3 * *") == "needs 5 fields (minute hour day-of-month month day-of-week), got 4"
    assert "a name (jan, feb, ...)" in str(cron_problem("0 0 * foo *"))
    assert "step after '/'" in str(cron_problem("*/0 * * * *"))


def test_schedule_needs_one_of_cron_and_interval_a_time_zone_and_dotted_overrides() -> None:
    with pytest.raises(ParamsError, match=r"schedule: set exactly one of cron and interval"):
        validate(schedule(cron=None, interval=None))
    with pytest.raises(ParamsError, match=r"schedule: set exactly one of cron and interval"):
        validate(schedule(cron="@daily", interval=60))
    with pytest.raises(ParamsError, match=r"schedule.interval: must be > 0(\.0)?, got 0"):
        validate(schedule(cron=None, interval=0))
    with pytest.raises(ParamsError, match=r"schedule.timezone: must be an IANA time zone .* got 'Mars/Olympus'"):
        validate(schedule(timezone="Mars/Olympus"))
    with pytest.raises(ParamsError, match=r"schedule.overrides: keys must be dotted params keys"):
        validate(schedule(overrides={"lr": 0.1}))
    assert validate(schedule(cron=None, interval=30, timezone="Europe/Berlin")).schedule.interval == 30
    with pytest.raises(ParamsError, match=r"retrain.margin: must be < 1"):
        validate(merge(load_params(), {"retrain": {"margin": 1.5}}))


def test_serve_refuses_a_bad_cron_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main(["--repo", str(ROOT), "--cron", "0 25 * * *"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "schedule.cron: not a valid cron expression" in err and "'0 25 * * *'" in err


# --- the Prefect API ----------------------------------------------------------------------------


def test_an_unreachable_prefect_api_says_what_it_is_and_how_to_start_a_server() -> None:
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    with pytest.raises(serve.PrefectApiError) as e:
        serve.check_api(url, timeout=2)
    msg = str(e.value)
    assert f"PREFECT_API_URL={url}" in msg and "make server" in msg and "rnnlab server" in msg
    with pytest.raises(serve.PrefectApiError, match=r"PREFECT_API_URL is not set.*make server"):
        serve.check_api(None)


@pytest.mark.slow
def test_serve_without_a_server_prints_one_clean_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    env = tool_env(PREFECT_HOME=str(tmp_path / "home"), PREFECT_API_URL=url)
    proc = subprocess.run(
        [sys.executable, "-m", "ops.serve", "--repo", str(ROOT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: the Prefect API at PREFECT_API_URL={url} does not answer") and "make server" in line


# --- the promotion rule -------------------------------------------------------------------------


def promoted(sha: str = "a" * 64, ppl: float = 10.0) -> dict[str, Any]:
    return {"checkpoint_sha256": sha, "metrics": {"valid": {"perplexity": ppl}}}


@pytest.mark.parametrize(
    ("candidate", "sha", "current", "incumbent", "force", "promote", "reason"),
    [
        (12.0, "b" * 64, None, None, False, True, "nothing was promoted yet"),
        (10.0, "a" * 64, promoted(), 10.0, False, False, "byte for byte the promoted one"),
        (9.0, "b" * 64, promoted(), 10.0, False, True, "perplexity fell by 10.00%, at least the margin of 1.00%"),
        (9.9, "b" * 64, promoted(), 10.0, False, True, "fell by 1.00%"),  # exactly the margin
        (9.95, "b" * 64, promoted(), 10.0, False, False, "fell by only 0.50%, less than the margin of 1.00%"),
        (11.0, "b" * 64, promoted(), 10.0, False, False, "did not fall (it rose by 10.00%)"),
        (11.0, "b" * 64, promoted(), 10.0, True, True, "forced"),
        (5.0, "b" * 64, promoted(), None, False, False, "not comparable"),
        (5.0, "b" * 64, promoted(), None, True, True, "forced"),
    ],
)
def test_the_promotion_rule(
    candidate: float,
    sha: str,
    current: dict[str, Any] | None,
    incumbent: float | None,
    force: bool,
    promote: bool,
    reason: str,
) -> None:
    d = registry.decide(candidate, sha, current, incumbent, "valid", 0.01, force)
    assert d.promote is promote and reason in d.reason, d


def test_a_zero_margin_still_needs_a_gain() -> None:
    assert not registry.decide(10.0, "b" * 64, promoted(), 10.0, "valid", 0.0).promote
    assert registry.decide(9.999, "b" * 64, promoted(), 10.0, "valid", 0.0).promote


def test_the_artifact_states_the_decision_and_the_numbers() -> None:
    d = registry.decide(9.0, "b" * 64, promoted(), 10.0, "valid", 0.01)
    md = retrain.report(
        "word",
        {
            "decision": d.to_dict(),
            "model": "registry/models/word-bbbbbbbbbbbb",
            "promoted": {**promoted(), "model": "registry/models/word-aaaaaaaaaaaa"},
        },
    )
    assert md.startswith("# Promotion, word level\n\nDecision: **promoted**. perplexity fell by 10.00%")
    assert "| new | 9.0000 | this run |" in md and "| promoted before | 10.0000 | registry/models/word-aaaa" in md
    assert "relative improvement +10.00%, margin 1.00%" in md and "git add registry.dvc dvc.lock" in md


# --- the registry -------------------------------------------------------------------------------


def fake_model(folder: Path, payload: bytes) -> tuple[Path, Path, dict[str, Any]]:
    """A "checkpoint" (any bytes: the registry never unpickles) and a real vocabulary file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / registry.CHECKPOINT).write_bytes(payload)
    vocab = Vocab("word", ("<pad>", "<unk>", "<eos>", "the"), (0, 0, 0, 5))
    vocab.save(folder / "vocab.json")
    record = {
        "checkpoint_sha256": sha256_file(folder / registry.CHECKPOINT),
        "vocab_sha256": vocab.sha256,
        "metrics": {"valid": {"perplexity": 9.0}},
    }
    return folder / registry.CHECKPOINT, folder / "vocab.json", record


def test_promotion_swaps_the_pointer_atomically_and_prunes_the_old_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    ck_a, vocab, rec_a = fake_model(tmp_path / "a", b"model A")
    folder_a = registry.promote(root, "word", rec_a, ck_a, vocab)
    assert (
        registry.read_promoted(root, "word")["model"]
        == folder_a.as_posix()
        == f"registry/models/word-{rec_a['checkpoint_sha256'][:12]}"
    )
    assert (root / folder_a / registry.CHECKPOINT).read_bytes() == b"model A"
    assert (root / folder_a / "vocab.json").read_bytes() == vocab.read_bytes()

    # A crash as the pointer is written: the old pointer and its model stay, whole.
    ck_b, _, rec_b = fake_model(tmp_path / "b", b"model B")

    def crash(*_: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(registry, "write_json", crash)
        with pytest.raises(OSError):
            registry.promote(root, "word", rec_b, ck_b, vocab)
    assert read_json(root / "registry/word.json")["checkpoint_sha256"] == rec_a["checkpoint_sha256"]
    assert (root / folder_a / registry.CHECKPOINT).read_bytes() == b"model A"

    folder_b = registry.promote(root, "word", rec_b, ck_b, vocab)
    assert registry.read_promoted(root, "word")["checkpoint_sha256"] == rec_b["checkpoint_sha256"]
    assert sorted(p.name for p in (root / "registry/models").iterdir()) == [folder_b.name]  # A pruned


def test_a_checkpoint_that_changes_while_being_copied_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    ck, vocab, rec = fake_model(tmp_path / "a", b"model A")
    with pytest.raises(registry.RegistryError, match=r"best\.pt changed while being promoted"):
        registry.promote(root, "word", {**rec, "checkpoint_sha256": "0" * 64}, ck, vocab)
    assert registry.read_promoted(root, "word") is None
    assert not any((root / "registry/models").iterdir())


def test_a_foreign_pointer_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry/word.json").write_text("{}")
    with pytest.raises(registry.RegistryError, match=r"registry/word.json: not a registry pointer"):
        registry.read_promoted(tmp_path, "word")


def test_overrides_are_validated_before_dvc_touches_params_yaml(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", {})
    p = retrain.params_with(tmp_path, {"train.word.lr": "0.01", "train.word.epochs": 4})
    assert p.train.word.lr == 0.01 and p.train.word.epochs == 4
    with pytest.raises(ParamsError, match=r"train.word.nosuch: unknown key"):
        retrain.params_with(tmp_path, {"train.word.nosuch": "1"})
    with pytest.raises(ParamsError, match=r"'lr' is not a section"):
        retrain.params_with(tmp_path, {"train.word.lr.x": "1"})
    assert override_text(True) == "true" and override_text(0.5) == "0.5" and override_text("a b") == "a b"
    assert override_text("null") == "null" and override_text(None) == "null"  # text as typed; values for Hydra
