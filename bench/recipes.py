"""The recipes (recipes/*.yaml) on real text, each against a reference given the same wall time.

    .venv/bin/python -m bench.recipes                        # both, 10-15 minutes on 2 shared cores
    .venv/bin/python -m bench.recipes --only char --char-seconds 600
    .venv/bin/python -m bench.recipes --threads 2            # a dedicated machine
    .venv/bin/python -m bench.recipes --screen char          # the recipe against the candidates it beat

Both parts build their data as `rnnlab recipe` does: params.yaml with the recipe's keys and the
corpus keys applied (ops/recipes.py checks them), then the corpus, tokenize, vocab and windows
stages, in a temporary folder. The shared corpora are read in place.

char-text: WikiText-2 valid.txt (../shared/data/wikitext-2) as one plain-text file, one document
per line, with corpus.text.holdout of its lines held out for validation (what a user who gives
one file gets). Validation bits per character against wall time, for the recipe and for
params.yaml's default char model (GRU 1x128, Adam 3e-3) on the same windows.

word-wikitext: trained on WikiText-2 valid.txt (WikiText-2's train split is not in
../shared/data), validated on its held-out lines, tested on test.txt. The recipe's model
against pytorch/examples' word_language_model loop (2x200 LSTM, SGD lr 20, clip 0.25, dropout
0.2, batch 20, bptt 35: bench/train_throughput.py's ``Reference``) on the same token ids (the
windows stage's stream.npy), given the same wall time; both then scored the same way, as
main.py's evaluate() does (10 columns, bptt 35, state carried), on valid and test.

Fairness on a shared machine: the two sides of each part run interleaved in one process with
the same thread count, one recipe epoch at a time, each followed by the other side training
until its clock catches up, so a load spike hits both. Each clock counts training and the
per-epoch validations (the recipe's Trainer validates every epoch; the reference, like main.py,
at the end of each pass), not the data preparation or the final scoring. The reference keeps
lr 20: main.py divides it by 4 only when validation stops improving, and the bench says when
that happened.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from bench.train_throughput import (
    BATCH,
    BPTT,
    CLIP,
    DROPOUT,
    EVAL_BATCH,
    HID,
    LAYERS,
    LR,
    Reference,
    batchify,
    examples_params,
)
from models.device import DEFAULT_THREADS, set_threads
from models.evaluate import eval_mode
from models.lm import lm_trainer
from models.trainer import Trainer
from ops import recipes
from pipeline import corpus, tokenize, vocab, windows
from pipeline.params import Params, TrainParams, read_params, validate
from pipeline.vocab import Vocab

ROOT = Path(__file__).resolve().parents[1]
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2"
LN2 = math.log(2)


# --- data, as `rnnlab recipe` would make it ---------------------------------------------------


def recipe_config(name: str, corpus_keys: dict[str, Any]) -> tuple[dict[str, Any], Params]:
    """params.yaml with the recipe's keys, then the corpus keys, applied and checked."""
    path = recipes.recipe_path(name, ROOT / "recipes")
    raw = recipes.check(ROOT / "params.yaml", [(str(path), recipes.load_recipe(path)), ("bench corpus", corpus_keys)])
    return raw, validate(raw)


def prepare(work: Path, raw: dict[str, Any], level: str) -> Path:
    """The data stages for ``level`` in ``work`` (its own params.yaml); returns the windows folder."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    with contextlib.chdir(work):
        corpus.run("params.yaml")
        tokenize.run(level, "params.yaml", 1)
        vocab.run(level, "params.yaml")
        windows.run(level, "params.yaml")
    return work / "data" / "windows" / level


def trainer(p: TrainParams, level: str, work: Path, ckpt: str) -> Trainer:
    """The lm stage's Trainer for ``p`` on ``work``'s windows, on the CPU, checkpointing each epoch."""
    v = Vocab.load(work / "data" / "vocab" / f"{level}.json")
    p = p.model_copy(update={"device": "cpu"})
    run = {"fingerprint": f"bench-{ckpt}", "vocab_path": "-"}
    return lm_trainer(p, work / "data" / "windows" / level, work / ckpt, v, run)


def describe(p: TrainParams) -> str:
    out = "tied, " if p.tie_weights else ""
    out += f"{p.output} softmax, " if p.output != "full" else ""
    return (
        f"{p.cell.upper()} {p.layers}x{p.hidden}, emb {p.emb_dim}, dropout {p.dropout:g}, {out}"
        f"{p.optimizer} {p.lr:g}, batch {p.batch_size} x bptt {p.bptt}"
    )


# --- clocks: each side's own training time, interleaved -------------------------------------


@dataclass
class Side:
    """One side of a race: a clock that counts only its own work, and its validation points."""

    name: str
    clock: float = 0.0
    tokens: int = 0
    points: list[tuple[float, int, float]] = field(default_factory=list)  # (clock s, tokens, valid loss)

    def timed(self, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.clock += time.perf_counter() - t0


class TrainerSide(Side):
    """An rnnlab Trainer, one epoch (epoch_size steps, then validation and a checkpoint) at a time."""

    def __init__(self, name: str, tr: Trainer, forever: bool = False):
        super().__init__(name)
        self.tr = tr
        self.forever = forever  # the side that catches up runs past its own epochs

    @property
    def done(self) -> bool:
        return self.tr.done and not self.forever

    def epoch(self) -> None:
        if self.forever and self.tr.done:
            self.tr.p = self.tr.p.model_copy(update={"epochs": self.tr.epoch + 1})
        first = self.tr.step
        record = self.timed(self.tr.run_epoch)
        # Targets trained, counted outside the clock (the batches are a pure function of the step).
        self.tokens += sum(self.tr.task.data.batch(s).tokens for s in range(first, self.tr.step))
        self.points.append((self.clock, self.tokens, record["valid_loss"]))

    def catch_up(self, until: float) -> None:
        while self.clock < until:
            self.epoch()


class ReferenceSide(Side):
    """bench/train_throughput.py's pytorch/examples loop, validated (main.py's evaluate) after each pass."""

    def __init__(self, train_ids: np.ndarray, valid_ids: np.ndarray, ntoken: int):
        super().__init__("pytorch/examples main.py")
        torch.manual_seed(0)
        self.ref = Reference(train_ids, ntoken)
        self.valid_ids = valid_ids
        self.stalled = False  # main.py would have divided lr by 4 here; this loop keeps 20

    def catch_up(self, until: float) -> None:
        while self.clock < until:
            before = self.ref.i
            self.tokens += self.timed(self.ref.step)
            if self.ref.i < before:  # Reference.step wrapped around: a pass ended, main.py validates
                loss = self.timed(
                    lambda: main_py_loss(self.ref.model, reference_forward(self.ref.model), self.valid_ids)
                )
                self.stalled |= bool(self.points) and loss >= min(p[2] for p in self.points)
                self.points.append((self.clock, self.tokens, loss))


# --- scoring, the same for both sides: main.py's evaluate() -----------------------------------

Forward = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]  # x (T, B) -> log-probs (T*B, V), state


def reference_forward(model: nn.Module) -> Forward:
    return lambda x, h: model(x, h if h is not None else _zeros(x.size(1)))


def _zeros(bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.zeros(LAYERS, bsz, HID) for _ in range(2))  # type: ignore[return-value]


def rnnlab_forward(model: nn.Module) -> Forward:
    def forward(x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        out, state = model(x, state)  # (T, B, V): logits, or log-probabilities when adaptive
        return F.log_softmax(out.reshape(-1, out.size(-1)), dim=-1), state

    return forward


@torch.no_grad()
def main_py_loss(model: nn.Module, forward: Forward, ids: np.ndarray) -> float:
    """Nats per token as pytorch/examples main.py's evaluate(): ``EVAL_BATCH`` columns, ``BPTT`` steps at a
    time with the state carried (detached), every target of the columns scored once. ``model`` is the
    one training: in eval mode (no dropout) while scored, back in its mode afterwards."""
    with eval_mode(model):
        data = batchify(ids, EVAL_BATCH)  # (n, EVAL_BATCH)
        total, state = 0.0, None
        for i in range(0, data.size(0) - 1, BPTT):
            n = min(BPTT, data.size(0) - 1 - i)
            x, y = data[i : i + n], data[i + 1 : i + 1 + n].reshape(-1)
            logp, state = forward(x, state)  # (n * EVAL_BATCH, V)
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            total += F.nll_loss(logp, y, reduction="sum").item()
    return total / ((data.size(0) - 1) * EVAL_BATCH)


# --- the two parts ------------------------------------------------------------------------------


def race(lead: TrainerSide, other: Side, budget: float, log: Callable[[str], None]) -> None:
    """``lead`` runs epoch by epoch (or to its last epoch) and stops at the epoch end nearest to
    ``budget`` s on its clock; after each epoch, ``other`` trains until its own clock has caught up."""
    last = 0.0  # the lead's last epoch, s: on a busy machine one can take a minute
    while not lead.done and lead.clock + last / 2 < budget:
        start = lead.clock
        lead.epoch()
        last = lead.clock - start
        other.catch_up(lead.clock)
        log(f"  {lead.name} {lead.clock:6.0f} s, {other.name} {other.clock:6.0f} s")


def char_part(args: argparse.Namespace, work: Path) -> None:
    text = Path(args.char_corpus)
    raw, params = recipe_config("char-text", {"corpus.source": "text", "corpus.text.train": str(text)})
    prepare(work, raw, "char")
    stats = yaml.safe_load((work / "data/metrics/corpus.json").read_text())["splits"]
    base = read_params(ROOT / "params.yaml").train.char
    rec = params.train.char
    lead = TrainerSide("recipe", trainer(rec, "char", work, "recipe"))
    other = TrainerSide("default", trainer(base, "char", work, "default"), forever=True)
    print(
        f"\n## char-text: {text.name} ({text.parent.name}) as one text file: train {stats['train']['chars']:,} chars, "
        f"valid {stats['valid']['chars']:,} (held-out lines); {torch.get_num_threads()} thread(s), "
        f"{args.char_seconds:.0f} s each"
    )
    race(lead, other, args.char_seconds, log=print if args.verbose else lambda _: None)
    print(f"recipe:  {describe(rec)}, {rec.epoch_size} steps per epoch")
    print(f"default: {describe(base)} (params.yaml's train.char), validated every {base.epoch_size} steps")
    print("| wall s | recipe: chars trained | recipe: valid bpc | default: valid bpc at that time |")
    print("|---|---|---|---|")
    for clock, tokens, loss in lead.points:
        seen = [p for p in other.points if p[0] <= clock * 1.02] or other.points[:1]
        print(
            f"| {clock:.0f} | {tokens / 1e6:.2f}M | {loss / LN2:.3f} | {seen[-1][2] / LN2:.3f} ({seen[-1][0]:.0f} s) |"
        )
    done = "all its" if lead.tr.done else "the budget's"
    print(f"recipe: {lead.tr.epoch} of {rec.epochs} epochs ({done}) in {lead.clock:.0f} s")


def word_part(args: argparse.Namespace, work: Path) -> None:
    keys = {
        "corpus.source": "text",
        "corpus.text.train": str(WIKITEXT / "valid.txt"),
        "corpus.text.test": str(WIKITEXT / "test.txt"),
    }
    raw, params = recipe_config("word-wikitext", keys)
    folder = prepare(work, raw, "word")
    ids = {s: np.load(folder / s / "stream.npy").astype(np.int64) for s in ("train", "valid", "test")}
    v = Vocab.load(work / "data/vocab/word.json")
    rec = params.train.word
    lead = TrainerSide("recipe", trainer(rec, "word", work, "recipe"))
    other = ReferenceSide(ids["train"], ids["valid"], len(v))
    print(
        f"\n## word-wikitext: WikiText-2 valid.txt to train ({len(ids['train']):,} tokens) and validate "
        f"({len(ids['valid']):,}, held-out lines), test.txt to test ({len(ids['test']):,}); vocabulary "
        f"{len(v):,}; {torch.get_num_threads()} thread(s), {args.word_seconds:.0f} s each"
    )
    race(lead, other, args.word_seconds, log=print if args.verbose else lambda _: None)
    ref_name = (
        f"pytorch/examples: LSTM {LAYERS}x{HID}, emb {HID}, dropout {DROPOUT:g}, sgd {LR:g}, clip {CLIP:g}, "
        f"batch {BATCH} x bptt {BPTT}"
    )
    rows = [
        ("recipe word-wikitext: " + describe(rec), lead, lead.tr.model, rnnlab_forward(lead.tr.model)),
        (ref_name, other, other.ref.model, reference_forward(other.ref.model)),
    ]
    print("| | wall s | tokens trained | valid ppl | test ppl |")
    print("|---|---|---|---|---|")
    ppl = {}
    for name, side, model, fwd in rows:
        valid, test = (math.exp(main_py_loss(model, fwd, ids[s])) for s in ("valid", "test"))
        ppl[side.name] = test
        print(f"| {name} | {side.clock:.0f} | {side.tokens / 1e6:.2f}M | {valid:.1f} | {test:.1f} |")
    note = " (its validation stalled: main.py would have annealed lr to 5)" if other.stalled else ""
    print(f"test perplexity recipe / reference: {ppl['recipe'] / ppl[other.name]:.3f}{note}")


# --- --screen: the candidates the recipes were chosen from ------------------------------------

# Overrides of params.yaml's train.<level>, each trained for the same wall time on the recipe's
# data (docs/models.md, "Your own text", lists what they gave). Epoch sizes keep validations ~20-50 s apart.
CHAR_CANDIDATES: dict[str, dict[str, Any]] = {
    "params.yaml's default": {},
    "GRU 1x128, Adam 0.01": {"lr": 0.01, "epoch_size": 300},
    "LSTM 1x256, Adam 0.01, 64 x 100": {"cell": "lstm", "emb_dim": 32, "hidden": 256, "lr": 0.01, "epoch_size": 100},
    "LSTM 1x256, Adam 0.02, 32 x 100": {
        "cell": "lstm",
        "emb_dim": 32,
        "hidden": 256,
        "batch_size": 32,
        "lr": 0.02,
        "epoch_size": 200,
    },
    "LSTM 1x512, Adam 0.01, 32 x 50": {
        "cell": "lstm",
        "emb_dim": 32,
        "hidden": 512,
        "batch_size": 32,
        "bptt": 50,
        "lr": 0.01,
        "epoch_size": 200,
    },
}
WORD_CANDIDATES: dict[str, dict[str, Any]] = {
    "pytorch/examples' configuration": {},  # bench/train_throughput.py's examples_params
    "the same, Adam 3e-3": {"optimizer": "adam", "lr": 0.003, "clip_value": 1.0},
    "LSTM 1x256 tied, full softmax, Adam 3e-3, 32 x 35": {
        "emb_dim": 256,
        "hidden": 256,
        "layers": 1,
        "tie_weights": True,
        "optimizer": "adam",
        "lr": 0.003,
        "clip_value": 1.0,
        "batch_size": 32,
    },
    "LSTM 1x512, adaptive, Adam 2e-3, dropout 0.2": {
        "emb_dim": 256,
        "hidden": 512,
        "layers": 1,
        "output": "adaptive",
        "optimizer": "adam",
        "lr": 0.002,
        "clip_value": 1.0,
        "batch_size": 32,
    },
}


def screen(args: argparse.Namespace, level: str, work: Path) -> None:
    """The recipe and each candidate on the recipe's data, round robin (the side whose clock is
    furthest behind runs its next epoch) until every clock reaches ``--screen-seconds``."""
    if level == "char":
        raw, params = recipe_config("char-text", {"corpus.source": "text", "corpus.text.train": str(args.char_corpus)})
        base, candidates, unit = read_params(ROOT / "params.yaml").train.char, CHAR_CANDIDATES, "bpc"
    else:
        keys = {"corpus.source": "text", "corpus.text.train": str(WIKITEXT / "valid.txt")}
        raw, params = recipe_config("word-wikitext", keys)
        base, candidates, unit = examples_params(device="auto", epoch_size=300), WORD_CANDIDATES, "ppl"
    prepare(work, raw, level)
    sides = [TrainerSide(f"recipe {level}", trainer(getattr(params.train, level), level, work, "recipe"), forever=True)]
    for i, (name, over) in enumerate(candidates.items()):
        sides.append(TrainerSide(name, trainer(base.model_copy(update=over), level, work, f"c{i}"), forever=True))
    while active := [s for s in sides if s.clock < args.screen_seconds]:
        min(active, key=lambda s: s.clock).epoch()
    print(f"\n## {level} candidates, {args.screen_seconds:.0f} s each, {torch.get_num_threads()} thread(s)")
    print(f"| | model | wall s | steps | valid {unit} |")
    print("|---|---|---|---|---|")
    for side in sides:
        loss = side.points[-1][2]
        shown = loss / LN2 if level == "char" else math.exp(loss)
        print(f"| {side.name} | {describe(side.tr.p)} | {side.clock:.0f} | {side.tr.step} | {shown:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (default: %(default)s)")
    ap.add_argument(
        "--char-seconds", type=float, default=150.0, help="training wall time per side (default: %(default)s)"
    )
    ap.add_argument(
        "--word-seconds", type=float, default=150.0, help="training wall time per side (default: %(default)s)"
    )
    ap.add_argument("--char-corpus", default=str(WIKITEXT / "valid.txt"), help="(default: WikiText-2 valid.txt)")
    ap.add_argument("--only", choices=("char", "word"), help="run one part")
    ap.add_argument("--verbose", action="store_true", help="print the clocks after each epoch")
    ap.add_argument("--screen", choices=("char", "word"), help="instead: the recipe against the candidates it beat")
    ap.add_argument(
        "--screen-seconds", type=float, default=120.0, help="--screen: per candidate (default: %(default)s)"
    )
    args = ap.parse_args()
    set_threads(args.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-recipes-") as tmp:
        if args.screen:
            screen(args, args.screen, Path(tmp) / args.screen)
        else:
            if args.only in (None, "char"):
                char_part(args, Path(tmp) / "char")
            if args.only in (None, "word"):
                word_part(args, Path(tmp) / "word")
    print(f"\n(bench.recipes: {time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
