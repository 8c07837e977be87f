"""The recipes on real text, as a user runs them, against the n-gram and pytorch/examples' main.py.

    .venv/bin/python -m bench.own_text --work /tmp/own_text           # every corpus, both levels: hours
    .venv/bin/python -m bench.own_text --work /tmp/own_text --corpora wikitext2 --levels char
    .venv/bin/python -m bench.own_text --work /tmp/own_text --table    # print the cached rows only

For each real corpus in ../shared/data (WikiText-2 valid.txt; the Lee background corpus; the
enwiki fragment's prose, stripped by pipeline/sources/wikipedia.py, one paragraph per line; the
IMDB sample's reviews, cleaned as pipeline/sources/imdb.py cleans them, one per line) and each
level, one row:

1. the recipe (recipes/word-wikitext.yaml or recipes/char-text.yaml) exactly as a user runs it:
   a fresh copy of the repository (bench/harness.py ``copy_repo``), then
   ``rnnlab recipe <name> corpus.txt`` with the full default budget. Its test perplexity comes
   from artifacts/<level>/evaluation.json, the Kneser-Ney n-gram's from artifacts/<level>/ngram.json
   (the same stage fits it). Its training time is the ``fit`` task's, from the Prefect log lines'
   timestamps (its first line, the model's configuration, to its "Finished" line): the epochs and
   their validations, without the DVC data stages, the Prefect server, evaluation or sampling;
2. the real pytorch/examples main.py (copied from ../shared/peers/word_language_model into the
   work folder, never into the project) on exactly the same tokens: the windows stage's
   stream.npy of each split decoded through the vocabulary, one document per line, tokens
   space-separated, out-of-vocabulary tokens as <unk> (main.py adds <eos> per line, as rnnlab
   does per document). A character is written as one whitespace-free symbol ("▁" for a space).
   Default settings (2x200 LSTM, SGD lr 20, clip 0.25, dropout 0.2, batch 20, bptt 35), a fixed
   seed, one thread, many epochs, and SIGINT once its training has run as long as the recipe's:
   main.py then reloads its best saved model and prints the test perplexity. Its training clock
   starts at its first batch (found exactly from its first progress line) and so leaves out
   importing torch and reading the corpus too. main.py saves a model only at an epoch's end: when
   its first epoch is longer than the recipe's training, it is stopped right after that epoch
   and the row says so (its time is then longer than the recipe's); when that epoch has not
   ended by twice the recipe's time, it is stopped without a score and the row says how far it got.

Both sides run one after the other with the same thread count (main.py: OMP_NUM_THREADS=1;
the lm stage pins torch to one thread, models/device.py), a corpus's recipe right before its
main.py, so that the load other work puts on a shared machine hits both alike. Each finished
row is cached in <work>/rows.json with the sha256 of the recipe file it ran: rerunning resumes
where it stopped, and runs again a row whose recipe has changed since.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import procs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
PEER = SHARED / "peers" / "word_language_model"
VENV_BIN = Path(sys.executable).parent
LN2 = math.log(2)

RECIPES = {"word": "word-wikitext", "char": "char-text"}
LEVELS = ("word", "char")
MAIN_SEED = 1111  # main.py's own default, passed explicitly
MAIN_EPOCHS = 100_000  # "forever": main.py is stopped by SIGINT
MAIN_LOG_INTERVAL = 10  # batches per progress line: the first one dates main.py's training start
MAIN_CAP = 2.0  # main.py's first epoch may take this many times the recipe's training, no more
SPACE = "\u2581"  # how a space character is written for main.py, which splits lines at whitespace


# --- the corpora --------------------------------------------------------------------------------


def _wikitext2(out: Path) -> None:
    shutil.copyfile(DATA / "wikitext-2" / "valid.txt", out)


def _lee(out: Path) -> None:
    shutil.copyfile(DATA / "gensim-lee-corpus" / "lee_background.cor", out)


def _enwiki(out: Path) -> None:
    from pipeline.sources.dumpfiles import open_dump
    from pipeline.sources.wikipedia import iter_articles

    dump = DATA / "wikipedia-xml" / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    with open_dump(dump) as stream, open(out, "w", encoding="utf-8") as f:
        for article in iter_articles(stream, source=str(dump)):
            # One paragraph per line: ~11k documents rather than ~100 articles, so that the
            # 5% held out for valid and for test is a fair sample of the text.
            for para in article.text.split("\n"):
                if para.strip():
                    f.write(para.strip() + "\n")


def _imdb(out: Path) -> None:
    from pipeline.sources.imdb import iter_folder

    with open(out, "w", encoding="utf-8") as f:
        for review in iter_folder(DATA / "aclImdb-sample"):  # train and test, pos, neg and unsup
            text = " ".join(review.text.split())  # cleaned of <br /> already; one review per line
            if text:
                f.write(text + "\n")


CORPORA: dict[str, Callable[[Path], None]] = {
    "wikitext2": _wikitext2,
    "enwiki": _enwiki,
    "imdb": _imdb,
    "lee": _lee,
}


def corpus_file(name: str, work: Path) -> Path:
    """The corpus as one plain-text file under ``work``/corpora, built once."""
    path = work / "corpora" / f"{name}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        CORPORA[name](tmp)
        tmp.replace(path)
    return path


# --- processes whose output lines are dated as they arrive ---------------------------------------


@dataclass
class Proc:
    """A child in its own process group (SIGINT at its default, whatever launched us), its merged
    output read by a thread, each line stamped with ``time.monotonic()`` on arrival."""

    popen: subprocess.Popen[str]
    log: Any
    lines: queue.Queue[tuple[float, str] | None] = field(default_factory=queue.Queue)
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, cmd: Sequence[str], cwd: Path, env: dict[str, str], log_path: Path) -> Proc:
        log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed by finish()
        log.write(f"$ {' '.join(map(str, cmd))}\n")
        log.flush()
        popen = procs.start(
            [str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        p = cls(popen, log)
        threading.Thread(target=p._read, daemon=True).start()
        return p

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            now = time.monotonic()
            self.log.write(f"[{now - self.started:9.2f}] {line}")
            self.log.flush()
            self.lines.put((now, line.rstrip("\n")))
        self.lines.put(None)

    def events(self, poll: float = 0.5) -> Iterator[tuple[float, str | None]]:
        """(arrival, line) as lines come, and (now, None) every ``poll`` s without one, until EOF."""
        while True:
            try:
                item = self.lines.get(timeout=poll)
            except queue.Empty:
                yield time.monotonic(), None
                continue
            if item is None:
                return
            yield item

    def interrupt(self) -> None:
        os.kill(self.popen.pid, signal.SIGINT)

    def finish(self, timeout: float = 1800) -> int:
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            procs.stop(self.popen)
            rc = self.popen.wait()
        self.log.close()
        return rc


def child_env(repo: Path | None, threads: int) -> dict[str, str]:
    """The environment of every child: one thread count for all, this venv, analytics off."""
    from bench.harness import tool_env

    extra = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "RNNLAB_THREADS": str(threads)}
    if repo is not None:
        extra["PREFECT_HOME"] = str(repo / ".prefect")
    return tool_env(**extra)


# --- the recipe, as a user runs it --------------------------------------------------------------

_PREFECT_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d(?:\.\d+)?) \|")
_FIT_START = re.compile(r"ModelConfig\(")  # the fit task's first line: the model, then training
_PLANNED = re.compile(r"ModelConfig\(.*, (\d+) epochs\s*$")
_FIT_END = re.compile(r"Task run 'fit-[^']*' - Finished in state (\w+)")
_EPOCH = re.compile(r"epoch (\d+)/(\d+) step (\d+): train ([-\d.eE+]+), valid loss ([-\d.eE+]+)")
_EPOCH_DONE = re.compile(r"Task run 'epoch-(\d+)' - Finished in state Completed")
_EARLY = re.compile(r"early stop after epoch (\d+)")
_WORKED = re.compile(r"rnnlab: stage lm@(\w+) worked ([\d.]+) s")


def _clock(line: str) -> float | None:
    """Seconds of the day of a Prefect log line, or None."""
    m = _PREFECT_TIME.match(line)
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else None


def _since(t0: float, t: float) -> float:
    return (t - t0) % 86400  # Prefect prints the time of day: a run may cross midnight


@dataclass
class RecipeRun:
    """What ``rnnlab recipe`` printed: the fit task's clock, its epochs, how it ended."""

    rc: int | None = None
    fit_start: float | None = None  # Prefect time of day
    fit_start_arrival: float | None = None  # our monotonic clock
    fit_seconds: float | None = None
    fit_state: str | None = None
    epochs: list[dict[str, float]] = field(default_factory=list)  # seconds since fit start, epoch, valid loss
    epoch_done: dict[int, float] = field(default_factory=dict)  # epoch -> seconds since fit start at its task's end
    early_stop: int | None = None
    stage_seconds: float | None = None
    planned_epochs: int | None = None
    stopped_at: float | None = None  # seconds of training when we sent SIGINT (a race), else None


def run_recipe(
    repo: Path,
    recipe: str,
    corpus: Path,
    *,
    valid: Path | None = None,
    test: Path | None = None,
    sets: Sequence[str] = (),
    threads: int = 1,
    log_path: Path,
    stop_after: float | None = None,
) -> RecipeRun:
    """``rnnlab recipe`` in ``repo``; with ``stop_after``, SIGINT once its training has run that long."""
    cmd = [VENV_BIN / "rnnlab", "recipe", recipe, corpus]
    cmd += ["--valid", valid] if valid else []
    cmd += ["--test", test] if test else []
    for s in sets:
        cmd += ["-S", s]
    p = Proc.start(cmd, repo, child_env(repo, threads), log_path)
    out = RecipeRun()

    def seconds(t: float | None, arrival: float) -> float:
        # Prefect's own time stamps where the line has one; else when it reached us.
        if t is not None and out.fit_start is not None:
            return _since(out.fit_start, t)
        assert out.fit_start_arrival is not None
        return arrival - out.fit_start_arrival

    for arrival, line in p.events():
        if line is not None:
            t = _clock(line)
            if _FIT_START.search(line) and out.fit_start_arrival is None:
                out.fit_start, out.fit_start_arrival = t, arrival
                out.planned_epochs = int(m[1]) if (m := _PLANNED.search(line)) else None
            elif (m := _EPOCH.search(line)) and out.fit_start_arrival is not None:
                out.epochs.append({"seconds": seconds(t, arrival), "epoch": int(m[1]), "valid_loss": float(m[5])})
            elif (m := _EPOCH_DONE.search(line)) and out.fit_start_arrival is not None:
                out.epoch_done[int(m[1])] = seconds(t, arrival)
            elif (m := _FIT_END.search(line)) and out.fit_start_arrival is not None:
                out.fit_seconds, out.fit_state = seconds(t, arrival), m[1]
            elif m := _EARLY.search(line):
                out.early_stop = int(m[1])
            elif m := _WORKED.search(line):
                out.stage_seconds = float(m[2])
        if (
            stop_after is not None
            and out.stopped_at is None
            and out.fit_start_arrival is not None
            and arrival - out.fit_start_arrival >= stop_after
        ):
            out.stopped_at = arrival - out.fit_start_arrival
            p.interrupt()  # rnnlab recipe stops DVC, the stage and its server, and exits 130
    out.rc = p.finish()
    return out


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def curve(run: RecipeRun, repo: Path, level: str) -> list[dict[str, Any]]:
    """Validation loss per epoch against the seconds since training began.

    The losses come from the checkpoint's history (last.pt, saved at every epoch's end, so an
    interrupted run has them too); the seconds from the end of each epoch's Prefect task, else
    from the epoch's log line. ``history_seconds`` is the trainer's own clock where it keeps one.
    """
    from models import checkpoint

    path = repo / "artifacts" / level / "checkpoints"
    history = checkpoint.load(path)["history"] if (path / "last.pt").is_file() else []
    logged = {int(e["epoch"]): e["seconds"] for e in run.epochs}
    return [
        {
            "seconds": run.epoch_done.get(int(r["epoch"]), logged.get(int(r["epoch"]))),
            "epoch": int(r["epoch"]),
            "valid_loss": float(r["valid_loss"]),
            "history_seconds": r.get("seconds"),
        }
        for r in history
    ]


# --- the same tokens for main.py ----------------------------------------------------------------


def symbol(token: str, level: str) -> str:
    """``token`` as main.py can read it back: no whitespace inside (it splits lines at whitespace)."""
    if level == "char" and token == " ":
        return SPACE
    if token == SPACE or token == "<eos>" or any(c.isspace() for c in token):
        # Written as code points: distinct from every one-character symbol and from each other.
        return "".join(f"<U+{ord(c):04X}>" if (c.isspace() or c == SPACE) else c for c in token) + (
            "<>" if token == "<eos>" else ""
        )
    return token


def export_for_main(repo: Path, level: str, dest: Path) -> dict[str, int]:
    """train/valid/test.txt in ``dest`` from the windows' stream.npy: one document per line (the
    <eos> ids end lines), out-of-vocabulary tokens as <unk>. Returns each split's targets."""
    vocab = read_json(repo / "data" / "vocab" / f"{level}.json")
    meta = read_json(repo / "data" / "windows" / level / "meta.json")
    eos = meta["specials"]["eos"]
    names = np.array([symbol(t, level) for t in vocab["tokens"]], dtype=object)
    names[meta["specials"]["unk"]] = "<unk>"
    dest.mkdir(parents=True, exist_ok=True)
    targets = {}
    for split in ("train", "valid", "test"):
        ids = np.load(repo / "data" / "windows" / level / split / "stream.npy").astype(np.int64)
        ends = np.flatnonzero(ids == eos)
        assert ends.size and ends[0] == 0 and ends[-1] == ids.size - 1, "a stream starts and ends with <eos>"
        words = names[ids]
        with open(dest / f"{split}.txt", "w", encoding="utf-8") as f:
            for a, b in itertools.pairwise(ends):
                f.write(" ".join(words[a + 1 : b]) + "\n")
        targets[split] = int(ids.size - 1)  # every token after the leading <eos>: main.py's tokens too
    return targets


# --- pytorch/examples main.py -------------------------------------------------------------------

_BATCH = re.compile(r"\| epoch\s+(\d+) \|\s*(\d+)/\s*(\d+) batches \| lr\s+([\d.]+) \| ms/batch\s+([\d.]+)")
_END_EPOCH = re.compile(r"\| end of epoch\s+(\d+) \| time:\s*([\d.]+)s \| valid loss\s+([\d.]+)")
_TEST = re.compile(r"\| End of training \| test loss\s+([\d.]+) \| test ppl\s+([\d.]+)")


def run_main(
    data: Path, budget: float, work: Path, *, threads: int = 1, seed: int = MAIN_SEED, cap: float = MAIN_CAP
) -> dict[str, Any]:
    """The real main.py on ``data``, stopped by SIGINT after ``budget`` s of training (at the
    earliest after its first epoch's model is saved, or given up at ``cap`` x ``budget`` without
    one); its test perplexity and validation curve."""
    peer = work / "word_language_model"
    if peer.exists():
        shutil.rmtree(peer)
    shutil.copytree(PEER, peer)
    cmd = [sys.executable, "main.py", "--data", data, "--epochs", MAIN_EPOCHS, "--seed", seed]
    cmd += ["--save", work / "main-model.pt", "--log-interval", MAIN_LOG_INTERVAL]
    p = Proc.start(cmd, peer, child_env(None, threads), work / "main.log")
    t0: float | None = None
    saving = False  # between an epoch's end line and the next progress line: torch.save may be writing
    epochs: list[dict[str, float]] = []
    stopped: float | None = None
    test: tuple[float, float] | None = None
    lr_last: float | None = None
    gave_up: str | None = None
    batches, ms_batch = "", 0.0
    for arrival, line in p.events():
        if line is not None:
            if m := _BATCH.search(line):
                batches, ms_batch = f"{m[2]}/{m[3]} batches", float(m[5])
                if t0 is None:  # its clock started at train()'s start, MAIN_LOG_INTERVAL batches ago
                    t0 = arrival - float(m[5]) * MAIN_LOG_INTERVAL / 1000
                saving = False
                lr_last = float(m[4])
            elif (m := _END_EPOCH.search(line)) and t0 is not None:
                epochs.append({"seconds": arrival - t0, "epoch": int(m[1]), "valid_loss": float(m[3])})
                saving = True
            elif m := _TEST.search(line):
                test = (float(m[1]), float(m[2]))
        if stopped is None and t0 is not None and epochs and not saving and arrival - t0 >= budget:
            stopped = arrival - t0
            p.interrupt()  # main.py catches KeyboardInterrupt, reloads its best model, scores test
        elif stopped is None and t0 is not None and not epochs and arrival - t0 >= cap * budget:
            # No model saved yet, and none would be for a long while: main.py has nothing to score.
            stopped = arrival - t0
            gave_up = f"no epoch ended in {stopped:.0f} s ({batches} at {ms_batch:.0f} ms/batch)"
            procs.stop(p.popen)
    rc = p.finish()
    best = min(epochs, key=lambda e: e["valid_loss"]) if epochs else None
    return {
        "rc": rc,
        "gave_up": gave_up,
        "train_seconds": stopped,
        "over_budget": bool(epochs) and epochs[0]["seconds"] > budget,  # stopped after its first epoch
        "epochs": epochs,
        "best_epoch": best["epoch"] if best else None,
        "last_lr": lr_last,
        "test_loss": test[0] if test else None,
        "test_ppl": test[1] if test else None,
    }


# --- one row ------------------------------------------------------------------------------------


def recipe_sha(root: Path, level: str) -> str:
    """The first 12 hex digits of the sha256 of the level's recipe file under ``root``."""
    return hashlib.sha256((root / "recipes" / f"{RECIPES[level]}.yaml").read_bytes()).hexdigest()[:12]


def row_recipe_sha(row: dict, work: Path) -> str | None:
    """The recipe a cached row ran: recorded, or (rows cached before it was) its repository copy's file."""
    if "recipe_sha" in row:
        return row["recipe_sha"]
    repo = work / f"{row['corpus']}-{row['level']}" / "repo"
    return recipe_sha(repo, row["level"]) if (repo / "recipes").is_dir() else None


def run_row(corpus: str, level: str, work: Path, sets: Sequence[str], threads: int, say: Callable[[str], None]) -> dict:
    """The recipe, then main.py given the same training time, on one corpus at one level."""
    from bench.harness import copy_repo

    text = corpus_file(corpus, work)
    folder = work / f"{corpus}-{level}"
    if folder.exists():
        shutil.rmtree(folder)
    repo = copy_repo(folder / "repo")
    say(f"{corpus}/{level}: rnnlab recipe {RECIPES[level]} {text} {' '.join('-S ' + s for s in sets)}")
    t = time.monotonic()
    rec = run_recipe(repo, RECIPES[level], text, sets=sets, threads=threads, log_path=folder / "recipe.log")
    row: dict[str, Any] = {"corpus": corpus, "level": level, "sets": list(sets), "recipe_rc": rec.rc}
    row["recipe_sha"] = recipe_sha(repo, level)
    row["recipe_wall"] = time.monotonic() - t
    evaluation = repo / "artifacts" / level / "evaluation.json"
    if rec.rc != 0 or not evaluation.is_file():
        say(f"{corpus}/{level}: rnnlab recipe exited {rec.rc}; see {folder / 'recipe.log'}")
        row["error"] = f"rnnlab recipe exited {rec.rc}"
        return row
    ev, ng = read_json(evaluation), read_json(repo / "artifacts" / level / "ngram.json")
    corpus_metrics = read_json(repo / "data" / "metrics" / "corpus.json")["splits"]
    points = curve(rec, repo, level)
    best = min(points, key=lambda e: e["valid_loss"]) if points else None
    row.update(
        recipe={
            "test_ppl": ev["test"]["perplexity"],
            "test_loss": ev["test"]["loss"],
            "epoch": ev["test"].get("epoch"),
            "best_epoch": best["epoch"] if best else None,
            "epochs_run": len(points),
            "planned_epochs": rec.planned_epochs,
            "early_stop": rec.early_stop,
            "train_seconds": rec.fit_seconds,
            "stage_seconds": rec.stage_seconds,
            "curve": points,
        },
        ngram={"test_ppl": ng["test"]["perplexity"], "test_loss": ng["test"]["loss"], "n": ng["model"]["n"]},
        docs={s: v["docs"] for s, v in corpus_metrics.items()},
    )
    row["targets"] = export_for_main(repo, level, folder / "main-data")
    row["vocab_size"] = read_json(repo / "data" / "windows" / level / "meta.json")["vocab_size"]
    budget = rec.fit_seconds or 0.0
    say(
        f"{corpus}/{level}: recipe test ppl {row['recipe']['test_ppl']:.3f} (n-gram {row['ngram']['test_ppl']:.3f}) "
        f"after {budget:.0f} s of training; main.py gets the same"
    )
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)  # copies of data/: not needed any more
    row["main"] = run_main(folder / "main-data", budget, folder, threads=threads)
    (folder / "main-model.pt").unlink(missing_ok=True)
    say(f"{corpus}/{level}: main.py test ppl {row['main']['test_ppl']} after {row['main']['train_seconds']} s")
    return row


# --- the table ----------------------------------------------------------------------------------


def _ppl(row: dict, side: str) -> str:
    value = row.get(side, {}).get("test_ppl")
    if value is None:
        return "-"
    if row["level"] == "char":
        return f"{value:.3f} ({math.log2(value):.3f} bpc)"
    return f"{value:.1f}"


def planned_epochs(row: dict, work: Path | None = None) -> int | None:
    """train.<level>.epochs of the row's run, as its fit task's first line stated it."""
    if row["recipe"].get("planned_epochs"):
        return row["recipe"]["planned_epochs"]
    log = work / f"{row['corpus']}-{row['level']}" / "recipe.log" if work else None  # rows cached before it was kept
    if log is not None and log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            if m := _PLANNED.search(line):
                return int(m[1])
    return None


def table(rows: Sequence[dict], work: Path | None = None) -> str:
    """One Markdown row per corpus and level."""
    head = (
        "| corpus | level (recipe sha256) | tokens train / valid / test | recipe test ppl | n-gram | main.py | "
        "recipe train s (epochs run, best) | main.py train s (epochs run, best) | targets |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    out = []
    for r in rows:
        if "error" in r:
            out.append(f"| {r['corpus']} | {r['level']} | {r['error']} |||||||")
            continue
        tg, rec, ref = r["targets"], r["recipe"], r["main"]
        ok_ngram = rec["test_ppl"] < r["ngram"]["test_ppl"]
        ok_main = ref.get("test_ppl") is not None and rec["test_ppl"] <= ref["test_ppl"]
        planned = planned_epochs(r, work)
        stop = ", stopped early" if planned and rec["epochs_run"] < planned else ""
        main_s = f"{ref['train_seconds']:.0f}" if ref.get("train_seconds") is not None else "-"
        main_s += " (over: 1st epoch)" if ref.get("over_budget") else ""
        main_s += f" ({ref['gave_up']})" if ref.get("gave_up") else ""
        sha = row_recipe_sha(r, work) if work else None
        out.append(
            f"| {r['corpus']} | {r['level']} ({sha or '?'}) | {tg['train']:,} / {tg['valid']:,} / {tg['test']:,} | "
            f"{_ppl(r, 'recipe')} | {_ppl(r, 'ngram')} | {_ppl(r, 'main')} | "
            f"{rec['train_seconds']:.0f} ({rec['epochs_run']}, {rec['best_epoch']}{stop}) | "
            f"{main_s} ({len(ref['epochs'])}, {ref['best_epoch']}) | "
            f"{'beats' if ok_ngram else 'MISSES'} n-gram, {'beats' if ok_main else 'MISSES'} main.py |"
        )
    return head + "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rnnlab-own-text"), help="(default: %(default)s)")
    ap.add_argument("--corpora", default=",".join(CORPORA), help="comma-separated (default: %(default)s)")
    ap.add_argument("--levels", default=",".join(LEVELS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both sides (default: %(default)s)")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an -S override for the recipe (a quick check of the bench; such rows are cached apart)",
    )
    ap.add_argument("--table", action="store_true", help="print the cached rows, run nothing")
    args = ap.parse_args(argv)
    corpora = [c for c in args.corpora.split(",") if c]
    levels = [v for v in args.levels.split(",") if v]
    bad = [c for c in corpora if c not in CORPORA] + [v for v in levels if v not in LEVELS]
    if bad:
        print(f"error: unknown corpus or level {bad[0]!r}; corpora: {', '.join(CORPORA)}; levels: word, char")
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.work / "rows.json"
    rows: dict[str, dict] = read_json(cache) if cache.is_file() else {}

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    current = {level: recipe_sha(ROOT, level) for level in LEVELS}
    wanted = []
    for corpus in corpora:
        for level in levels:
            key = f"{corpus}/{level}" + ("|" + " ".join(args.sets) if args.sets else "")
            wanted.append(key)
            cached = rows.get(key)
            if args.table or (cached and "error" not in cached and row_recipe_sha(cached, args.work) == current[level]):
                continue
            if cached and "error" not in cached:
                say(f"{key}: the cached row ran another version of recipes/{RECIPES[level]}.yaml; running it again")
            rows[key] = run_row(corpus, level, args.work, args.sets, args.threads, say)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(rows, indent=1), encoding="utf-8")
            tmp.replace(cache)
    print(table([rows[k] for k in wanted if k in rows], args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
