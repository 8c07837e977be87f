"""Progress with an ETA (pipeline/progress.py): a bar on a terminal, a line every N seconds elsewhere,
hooks (the Prefect progress artifact), and the totals the stages and the Trainer give it."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import struct
import termios
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prefect import flow, task

from flows.common import ProgressArtifact, progress_artifact
from pipeline import log, paths
from pipeline.progress import MODE_ENV, SECONDS_ENV, Progress, Snapshot, parquet_rows, parse_line
from tests.support import latest_artifact

LOGGER = logging.getLogger("rnnlab.tests.progress")


class Clock:
    """A clock the test moves: no sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """The messages of every rnnlab logger while the test runs (INFO and up)."""
    with log.capture(level=logging.INFO) as messages:
        yield messages


def test_off_a_terminal_a_line_at_most_every_n_seconds_with_rate_and_eta(lines: list[str]) -> None:
    clock = Clock()
    with open(os.devnull, "w") as devnull:
        p = Progress("tokenize word", 1000, unit="documents", logger=LOGGER, mode="auto", file=devnull)
    assert p.mode == "lines"  # /dev/null is not a terminal
    p = Progress("tokenize word", 1000, unit="documents", logger=LOGGER, mode="lines", every=10, clock=clock)
    times = []
    for _ in range(200):  # 0.25 s and 5 documents per update: 50 s in all
        clock.now += 0.25
        before = len(lines)
        p.update(5)
        if len(lines) > before:
            times.append(clock.now)
    p.close()
    assert np.all(np.diff(times) >= 10) and len(times) == 4  # at 10, 20, 30 and 40 s; at 50 s the closing line
    assert lines[0] == "tokenize word: 200/1,000 documents (20.0%), 20 documents/s, ETA 0:00:40"
    assert lines[-1] == "tokenize word: 1,000/1,000 documents (100.0%) in 0:00:50, 20 documents/s"


def test_a_short_phase_says_nothing_and_bytes_read_in_binary_units(lines: list[str]) -> None:
    clock = Clock()
    with Progress("quick", 10, logger=LOGGER, mode="lines", every=10, clock=clock) as p:
        clock.now += 3
        p.update(10)
    assert lines == []
    with Progress("download x", 4 * 2**30, unit="B", logger=LOGGER, mode="lines", every=10, clock=clock) as p:
        clock.now += 16
        p.update(2**30)
    assert len(lines) == 2
    assert lines[0] == "download x: 1.0 GiB/4.0 GiB (25.0%), 64.0 MiB/s, ETA 0:00:48"
    assert lines[1] == "download x: 1.0 GiB/4.0 GiB (25.0%) in 0:00:16, 64.0 MiB/s"  # ...and the closing one


def test_a_resumed_run_counts_its_rate_from_where_it_resumed(lines: list[str]) -> None:
    clock = Clock()
    p = Progress("train.word", 400, unit="steps", initial=300, logger=LOGGER, mode="lines", every=5, clock=clock)
    clock.now += 5
    p.update(50)
    assert lines == ["train.word: 350/400 steps (87.5%), 10 steps/s, ETA 0:00:05"]
    assert parse_line("rnnlab: " + lines[0]) == parse_line(lines[0])
    seen = parse_line(lines[0])
    assert seen is not None and (seen.desc, seen.done, seen.total, seen.unit) == ("train.word", 350, 400, "steps")
    assert parse_line("rnnlab: epoch 1/3 step 100: train 4.1, valid loss 4.0") is None


def test_on_a_terminal_one_bar_with_rate_and_eta_and_log_lines_above_it(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    with os.fdopen(slave, "w", buffering=1) as tty:
        monkeypatch.setattr("sys.stderr", tty)
        log.setup()
        clock = Clock()
        logger = logging.getLogger("rnnlab.tests")
        p = Progress("train.word", 100, unit="steps", logger=logger, mode=None, file=tty, clock=clock)
        assert p.mode == "bar"
        for i in range(100):
            clock.now += 0.125  # the bar appears once the phase has run 0.5 s
            p.update()
            assert (p._bar is None) == (i < 3)
            if i == 50:
                logger.info("epoch 1/2 done")
        p.close()
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other side is closed and everything was read
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    text = out.decode()
    assert "train.word: 100%|" in text and "100/100" in text and "steps/s]" in text, text
    assert "<00:00" in text  # tqdm's elapsed<remaining: the ETA
    assert "rnnlab: epoch 1/2 done" in text


def test_quiet_shows_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(log.LEVEL_ENV, "WARNING")
    try:
        log.setup()
        assert Progress("x", 10, logger=logging.getLogger("rnnlab.tests"), mode="bar").mode == "off"
    finally:
        monkeypatch.delenv(log.LEVEL_ENV)
        log.setup()


def test_the_environment_picks_the_mode_and_the_cadence(monkeypatch: pytest.MonkeyPatch, lines: list[str]) -> None:
    monkeypatch.setenv(MODE_ENV, "off")
    monkeypatch.setenv(SECONDS_ENV, "2.5")
    p = Progress("x", 10, logger=LOGGER)
    assert (p.mode, p.every) == ("off", 2.5)
    monkeypatch.setenv(SECONDS_ENV, "soon")
    monkeypatch.setenv(MODE_ENV, "sometimes")
    with open(os.devnull, "w") as devnull:
        p = Progress("x", 10, logger=LOGGER, file=devnull)
    assert (p.mode, p.every) == ("lines", 10.0)
    assert any("RNNLAB_PROGRESS_SECONDS='soon' is not a positive number" in m for m in lines)


def test_hooks_get_the_start_every_few_seconds_and_the_end_and_a_failing_one_is_dropped(lines: list[str]) -> None:
    clock = Clock()
    seen: list[Snapshot] = []

    def broken(_snap: Snapshot) -> None:
        raise ConnectionError("the API went away")

    p = Progress("x", 100, logger=LOGGER, mode="off", clock=clock, hooks=[(seen.append, 3.0), (broken, 1.0)])
    for _ in range(100):
        clock.now += 0.5
        p.update()
    p.close()
    assert [s.done for s in seen] == [0, 6, 12, *range(18, 100, 6), 100]
    assert seen[-1].final and seen[-1].percent == 100 and not seen[0].final
    assert lines == ["x: progress reporting stopped (ConnectionError: the API went away)"]


# --- the stages and the models -----------------------------------------------------------------


def test_tokenize_reports_documents_out_of_the_parquet_row_count(
    lm_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[str]
) -> None:
    from pipeline import docs
    from pipeline.shards import shard_files
    from pipeline.tokenize import char_tokens, tokenize_table

    monkeypatch.setenv(MODE_ENV, "lines")
    monkeypatch.setenv(SECONDS_ENV, "1e-9")  # a line on every batch
    folder = lm_data / paths.DOCS
    total = parquet_rows(shard_files(folder, docs.DOC_TABLE))
    assert total == 520  # SMALL_CORPUS: 400 + 60 + 60 documents
    tokenize_table(folder, tmp_path / "tokens", char_tokens, 10_000, progress="tokenize char")
    assert lines[-1].startswith(f"tokenize char: {total}/{total} documents (100.0%) in 0:00:00, ")
    assert all(m.startswith("tokenize char: ") for m in lines)


@pytest.mark.parametrize("mode", ["stream", "window", "padded"])
def test_evaluation_counts_its_batches_before_it_starts(lm_data: Path, mode: str) -> None:
    from models.data import eval_batch_count, eval_batches

    folder = lm_data / "data/windows/word/valid"
    for batch_size in (7, 64):
        counted = eval_batch_count(mode, folder, batch_size, 35)
        assert counted == sum(1 for _ in eval_batches(mode, folder, batch_size, 35, 17)), (mode, batch_size)


@pytest.mark.slow
def test_training_progress_covers_every_epoch_and_a_resumed_run_starts_at_its_step(
    lm_data: Path, tmp_path: Path
) -> None:
    from bench.harness import section
    from models.lm import lm_trainer
    from pipeline.vocab import Vocab

    p = section("train.word", emb_dim=8, hidden=16, batch_size=8, bptt=10, epochs=3, epoch_size=5, checkpoint_every=5)
    vocab = Vocab.load(lm_data / "data/vocab/word.json")
    run = {"fingerprint": "progress-test", "tokenizer": None, "vocab_path": "v"}

    def trainer() -> object:
        return lm_trainer(p, lm_data / "data/windows/word", tmp_path, vocab, run, key="train.word")

    first = trainer()
    seen: list[Snapshot] = []
    first.hooks.append((seen.append, 0.0))
    first.run_epoch()
    assert (seen[0].done, seen[0].total, seen[0].unit) == (0, 15, "steps")  # steps x epochs
    assert not first.progress.closed

    second = trainer()  # resumes from the checkpoint of epoch 1
    seen.clear()
    second.hooks.append((seen.append, 0.0))
    second.fit()
    assert second.progress.initial == 5 and seen[0].done == 5
    assert seen[-1].final and seen[-1].done == 15 and second.progress.closed
    assert [s.done for s in seen if not s.final] == list(range(5, 16))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_flows")
def test_a_training_run_keeps_a_prefect_progress_artifact(lm_workdir: Path) -> None:
    from tests.support import run_train

    clock = Clock()

    @task  # as the trainings' progress is, in their train-epoch tasks (latest_artifact reads tasks' artifacts)
    def counting() -> list[float]:
        hook = progress_artifact("unit test")
        p = Progress("unit test", 10, unit="steps", mode="off", clock=clock, hooks=[hook])
        middle = []
        for i in range(10):
            clock.now += 1
            p.update()
            if i == 5:
                middle.append(float(latest_artifact("unit-test-progress")))
        p.close()
        assert isinstance(hook[0], ProgressArtifact) and hook[0].id is not None
        return middle

    @flow
    def one_task() -> list[float]:
        return counting()

    assert one_task() == [50.0]  # updated at t = 5 s (every 5 s), the 6th step is not in yet
    assert float(latest_artifact("unit-test-progress")) == 100.0

    record = run_train("word")
    assert not record["cached"]
    assert float(latest_artifact("train-word-progress")) == 100.0  # the whole run, 2 epochs of 10 steps


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_flows")
def test_a_torchrun_training_reports_its_progress_from_rank_0s_lines(
    lm_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.harness import load_params, write_params
    from tests.support import run_train

    base = load_params(lm_workdir / "params.yaml")
    write_params(lm_workdir / "params.yaml", {"train": {"word": {"distributed": {"nproc": 2}, "device": "cpu"}}}, base)
    monkeypatch.setenv(MODE_ENV, "lines")  # this process's own progress, as the flow shows it off a terminal
    with log.capture("rnnlab.flows.train", logging.INFO) as messages:
        record = run_train("word")
    assert not record["cached"]
    assert float(latest_artifact("train-word-progress")) == 100.0
    assert any(m.startswith("launching 2 training processes: ") for m in messages)
    assert any(m.startswith("epoch 2/2 step 20: ") for m in messages)  # rank 0's lines, without their prefix
    assert not any(m.startswith(("rnnlab: ", "train.word valid: ")) for m in messages)
