"""Training tokens/s, and peak memory, of models.trainer against pytorch/examples' word_language_model loop.

    .venv/bin/python -m bench.train_throughput                 # 1 thread, 2x200 LSTM, bptt 35, batch 20
    .venv/bin/python -m bench.train_throughput --threads 2
    .venv/bin/python -m bench.train_throughput --rss           # peak RSS of training + evaluation, 6 epochs

Both train the same model (emb 200, 2x200 LSTM, dropout 0.2, untied) with SGD lr 20 and
global-norm clipping 0.25 on the same real data: WikiText-2 valid (../shared/data),
split on whitespace with <eos> per line, as the examples' data.Corpus does. The
reference slices one int64 tensor (batchify + get_batch + repackage_hidden + a manual
SGD update); the trainer reads the memory-mapped stream.npy layout the windows stage
writes and runs its real train_step (NaN check, clipping, optimizer). Rounds alternate
the two back to back, so a load spike on a shared machine hits both; the ratio is the
median over rounds of (trainer tokens/s / reference tokens/s in the same round).

``--rss``: peak memory instead of speed, each side in its own process so that each peak RSS
(getrusage's ru_maxrss) is its own. Both run pytorch/examples' configuration above for
``--epochs`` (6) epochs on the first ``--train-tokens`` (74,000) tokens of WikiText-2 valid,
validating after each epoch on its next ``--valid-tokens`` (20,000), then score the first
``--test-tokens`` (100,000) of WikiText-2 test, with one vocabulary over all of both files
(18,329 words, as data.Corpus builds it). Any split over 64 x 256 tokens filled the old
evaluation's (256, 64, V) logits; these sizes keep one invocation near 13 minutes on 2 shared cores.
The reference is main.py's train() / evaluate() (eval batch 10, lr / 4 when validation
stalls, the best model saved and reloaded for test); rnnlab is lm_trainer (ReduceLROnPlateau
with factor 0.25) and score_split (evaluate.batch_size 64) at ``--logits-mb`` (64).
Rounds alternate the sides; the figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.device import set_threads
from models.lm import lm_trainer
from models.trainer import Trainer
from pipeline.params import TrainParams, read_params
from pipeline.vocab import Vocab

ROOT = Path(__file__).resolve().parents[1]

WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2"
DATA = WIKITEXT / "valid.txt"
EMB = HID = 200
LAYERS, BPTT, BATCH, DROPOUT, LR, CLIP = 2, 35, 20, 0.2, 20.0, 0.25
EVAL_BATCH = 10  # main.py's eval_batch_size


def corpus(path: Path, vocab: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """pytorch/examples data.Corpus.tokenize: words of each line, then <eos>; ``vocab`` grows
    in place, so that several files share one dictionary as data.Corpus's do."""
    vocab = vocab if vocab is not None else ["<pad>", "<unk>", "<eos>"]
    index = {w: i for i, w in enumerate(vocab)}
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        for w in line.split() + ["<eos>"]:
            if w not in index:
                index[w] = len(vocab)
                vocab.append(w)
            ids.append(index[w])
    return vocab, np.array(ids, dtype=np.int64)


def write_windows(root: Path, splits: dict[str, np.ndarray], vocab: Vocab, bptt: int = BPTT) -> None:
    """Token ids in the windows stage's layout (``<split>/stream.npy`` + meta.json), stream mode."""
    for split, ids in splits.items():
        (root / split).mkdir(parents=True)
        np.save(root / split / "stream.npy", ids.astype(np.uint16 if len(vocab) <= 65536 else np.int32))
    (root / "meta.json").write_text(
        json.dumps({"vocab_sha256": vocab.sha256, "params": {"length": bptt, "stride": None}})
    )


def peak_rss_mb() -> float:
    """This process's peak resident set so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(module: str, spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run ``python -m module --child SPEC`` in a fresh process; return the JSON of its last line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RNNLAB_THREADS": str(threads)}
    argv = [sys.executable, "-m", module, "--child", json.dumps(spec)]
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{module} child {spec} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class RNNModel(nn.Module):
    """pytorch/examples word_language_model/model.py, LSTM branch."""

    def __init__(self, ntoken: int):
        super().__init__()
        self.drop = nn.Dropout(DROPOUT)
        self.encoder = nn.Embedding(ntoken, EMB)
        self.rnn = nn.LSTM(EMB, HID, LAYERS, dropout=DROPOUT)
        self.decoder = nn.Linear(HID, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]):
        output, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.decoder.out_features)
        return F.log_softmax(decoded, dim=1), hidden


class Reference:
    """main.py's train(): batchify, get_batch, repackage_hidden, clip_grad_norm_, p.data.add_."""

    def __init__(self, ids: np.ndarray, ntoken: int):
        data = torch.from_numpy(ids)
        nbatch = data.size(0) // BATCH
        self.data = data[: nbatch * BATCH].view(BATCH, -1).t().contiguous()  # (n, B)
        self.model = RNNModel(ntoken)
        self.criterion = nn.NLLLoss()
        self.hidden = tuple(torch.zeros(LAYERS, BATCH, HID) for _ in range(2))
        self.i = 0

    def step(self) -> int:
        if self.i >= self.data.size(0) - 1 - BPTT:
            self.i = 0
        seq_len = min(BPTT, len(self.data) - 1 - self.i)
        x, y = self.data[self.i : self.i + seq_len], self.data[self.i + 1 : self.i + 1 + seq_len].reshape(-1)
        self.hidden = tuple(h.detach() for h in self.hidden)
        self.model.zero_grad()
        output, self.hidden = self.model(x, self.hidden)
        loss = self.criterion(output, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        for p in self.model.parameters():
            p.data.add_(p.grad, alpha=-LR)
        self.total = loss.item()
        self.i += seq_len
        return y.numel()


def examples_params(**over: Any) -> TrainParams:
    """pytorch/examples' word_language_model configuration as train params: params.yaml's train.word
    with that shape and loop, and checkpoints at the end of each epoch only, as examples saves."""
    shape = {"cell": "lstm", "emb_dim": EMB, "hidden": HID, "layers": LAYERS, "dropout": DROPOUT}
    loop = {"optimizer": "sgd", "lr": LR, "clip": "norm", "clip_value": CLIP, "epochs": 1, "device": "cpu"}
    base = read_params(ROOT / "params.yaml").train.word.model_dump()
    run = {"mode": "stream", "batch_size": BATCH, "bptt": BPTT, "checkpoint_every": None}
    return TrainParams.model_validate({**base, **shape, **loop, **run, **over})


def trainer_on(ids: np.ndarray, vocab_tokens: list[str], root: Path) -> Trainer:
    """A Trainer over the same ids, written in the windows stage's layout."""
    vocab = Vocab("word", tuple(vocab_tokens), (0,) * len(vocab_tokens))
    write_windows(root, {"train": ids, "valid": ids}, vocab)
    run = {"fingerprint": "bench", "vocab_path": "-"}
    return lm_trainer(examples_params(), root, root / "ckpt", vocab, run)


def timed(step, steps: int) -> float:
    """Tokens per second over ``steps`` calls of ``step`` (returning tokens trained)."""
    start, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += step()
    return tokens / (time.perf_counter() - start)


# --- --rss: peak memory of training + evaluation, one process per side ------------------------


def rss_splits(train_tokens: int, valid_tokens: int, test_tokens: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """Train and valid from WikiText-2 valid, test from WikiText-2 test, one dictionary over both files."""
    vocab, valid = corpus(WIKITEXT / "valid.txt")
    vocab, test = corpus(WIKITEXT / "test.txt", vocab)
    held_out = valid[train_tokens : train_tokens + valid_tokens]
    return vocab, {"train": valid[:train_tokens], "valid": held_out, "test": test[:test_tokens]}


def batchify(ids: np.ndarray, bsz: int) -> torch.Tensor:
    """main.py's batchify: (n // bsz, bsz) columns of the stream."""
    data = torch.from_numpy(ids)
    nbatch = data.size(0) // bsz
    return data[: nbatch * bsz].view(bsz, -1).t().contiguous()


def reference_run(splits: dict[str, np.ndarray], ntoken: int, epochs: int, workdir: Path) -> dict[str, Any]:
    """pytorch/examples main.py: train(), evaluate(val_data) each epoch, lr /= 4 when it stalls,
    the best model saved (torch.save) and reloaded, then evaluate(test_data)."""
    train_data, val_data = batchify(splits["train"], BATCH), batchify(splits["valid"], EVAL_BATCH)
    test_data = batchify(splits["test"], EVAL_BATCH)
    model, criterion, lr, best = RNNModel(ntoken), nn.NLLLoss(), LR, None

    def hidden(bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.zeros(LAYERS, bsz, HID) for _ in range(2))

    def evaluate(data: torch.Tensor) -> float:
        model.eval()
        total, h = 0.0, hidden(EVAL_BATCH)
        with torch.no_grad():
            for i in range(0, data.size(0) - 1, BPTT):
                n = min(BPTT, len(data) - 1 - i)
                x, y = data[i : i + n], data[i + 1 : i + 1 + n].reshape(-1)
                output, h = model(x, h)
                h = tuple(t.detach() for t in h)
                total += n * criterion(output, y).item()
        return total / (len(data) - 1)

    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        h = hidden(BATCH)
        for i in range(0, train_data.size(0) - 1, BPTT):
            n = min(BPTT, len(train_data) - 1 - i)
            x, y = train_data[i : i + n], train_data[i + 1 : i + 1 + n].reshape(-1)
            h = tuple(t.detach() for t in h)
            model.zero_grad()
            output, h = model(x, h)
            criterion(output, y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
        val = evaluate(val_data)
        if best is None or val < best:
            torch.save(model.state_dict(), workdir / "model.pt")
            best = val
        else:
            lr /= 4.0
    model.load_state_dict(torch.load(workdir / "model.pt", weights_only=True))
    test = evaluate(test_data)
    return {"seconds": time.perf_counter() - t0, "valid_ppl": math.exp(best), "test_ppl": math.exp(test)}


def rnnlab_run(
    splits: dict[str, np.ndarray], tokens: list[str], epochs: int, logits_mb: float, workdir: Path
) -> dict[str, Any]:
    """lm_trainer.fit() (validating each epoch), then score_split on test, as the flows do."""
    from models.evaluate import score_split

    vocab = Vocab("word", tuple(tokens), (0,) * len(tokens))
    write_windows(workdir, splits, vocab)
    # ReduceLROnPlateau(factor 0.25, patience 0): main.py's lr / 4 when validation stalls.
    p = examples_params(epochs=epochs, plateau_factor=0.25, logits_mb=logits_mb)
    t0 = time.perf_counter()
    run = {"fingerprint": "rss", "vocab_path": "-"}
    history = lm_trainer(p, workdir, workdir / "ckpt", vocab, run).fit()
    trainer_model = build_and_load(workdir / "ckpt")
    meta = {"params": {"length": BPTT, "stride": None}}
    test = score_split(trainer_model, "stream", workdir, meta, "test", 64, torch.device("cpu"), logits_mb)
    valid = min(h["valid_perplexity"] for h in history)
    return {"seconds": time.perf_counter() - t0, "valid_ppl": valid, "test_ppl": math.exp(test.loss)}


def build_and_load(ckpt_dir: Path) -> nn.Module:
    """The trained model from its checkpoint, as flows/evaluate.py loads it (no vocabulary check here)."""
    from models import checkpoint as ckpt
    from models.config import ModelConfig
    from models.rnn import RNNLanguageModel

    c = ckpt.load(ckpt_dir)
    model = RNNLanguageModel(ModelConfig.from_dict(c["config"]))
    model.load_state_dict(c["model"])
    return model


def rss_child(spec: dict[str, Any]) -> None:
    set_threads(spec["threads"])
    torch.manual_seed(0)
    tokens, splits = rss_splits(spec["train_tokens"], spec["valid_tokens"], spec["test_tokens"])
    start = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        if spec["side"] == "reference":
            out = reference_run(splits, len(tokens), spec["epochs"], Path(tmp))
        else:
            out = rnnlab_run(splits, tokens, spec["epochs"], spec["logits_mb"], Path(tmp))
    print(json.dumps({**out, "vocab": len(tokens), "start_rss_mb": start, "peak_rss_mb": peak_rss_mb()}))


def rss_main(args: argparse.Namespace) -> None:
    # side name -> logits_mb (None: the reference)
    sides: dict[str, float | None] = {"pytorch/examples main.py": None, "rnnlab": args.logits_mb}
    spec = {"threads": args.threads, "epochs": args.epochs, "train_tokens": args.train_tokens}
    spec |= {"valid_tokens": args.valid_tokens, "test_tokens": args.test_tokens}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(args.rounds):  # interleaved: a load spike hits every side alike
        for name, mb in sides.items():
            side = {"side": "reference" if mb is None else "rnnlab", "logits_mb": mb}
            runs[name].append(child("bench.train_throughput", {**spec, **side}, args.threads))
    ref = runs["pytorch/examples main.py"]
    print(
        f"WikiText-2: train {args.train_tokens:,} tokens and valid {args.valid_tokens:,} (valid.txt), test "
        f"{args.test_tokens:,} (test.txt); vocabulary {ref[0]['vocab']:,}; {args.epochs} epochs of 2x200 LSTM, "
        f"SGD lr 20, clip 0.25, dropout 0.2, batch 20, bptt 35; rnnlab at logits_mb {args.logits_mb:g}; "
        f"{args.threads} thread(s); median of {args.rounds} round(s)"
    )
    print("| | wall, train + eval | best valid ppl | test ppl | peak RSS | RSS / reference |")
    print("|---|---|---|---|---|---|")
    ref_rss = statistics.median(r["peak_rss_mb"] for r in ref)
    for name, rs in runs.items():
        wall, rss = statistics.median(r["seconds"] for r in rs), statistics.median(r["peak_rss_mb"] for r in rs)
        valid, test = statistics.median(r["valid_ppl"] for r in rs), statistics.median(r["test_ppl"] for r in rs)
        print(f"| {name} | {wall:.0f} s | {valid:.1f} | {test:.1f} | {rss / 1024:.2f} GB | {rss / ref_rss:.2f}x |")
    ratio = statistics.median(o["peak_rss_mb"] / r["peak_rss_mb"] for o, r in zip(runs["rnnlab"], ref))
    starts = f"reference {ref[0]['start_rss_mb']:.0f} MB, rnnlab {runs['rnnlab'][0]['start_rss_mb']:.0f} MB"
    print(f"peak RSS rnnlab / reference: {ratio:.2f}x (target <= 1.0); after imports and reading the data: {starts}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed round (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=None, help="(default: 5; with --rss 1)")
    ap.add_argument("--rss", action="store_true", help="peak RSS of training + evaluation against the reference")
    ap.add_argument("--epochs", type=int, default=6, help="--rss: epochs (default: %(default)s)")
    ap.add_argument("--train-tokens", type=int, default=74_000, help="--rss (default: %(default)s)")
    ap.add_argument("--valid-tokens", type=int, default=20_000, help="--rss (default: %(default)s)")
    ap.add_argument("--test-tokens", type=int, default=100_000, help="--rss (default: %(default)s)")
    budget = read_params(ROOT / "params.yaml").train.word.logits_mb
    ap.add_argument("--logits-mb", type=float, default=budget, help="--rss: rnnlab's budget (default: %(default)s)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return rss_child(json.loads(args.child))
    if args.rss:
        args.rounds = args.rounds or 1
        return rss_main(args)
    args.rounds = args.rounds or 5
    set_threads(args.threads)
    vocab, ids = corpus(DATA)
    print(f"WikiText-2 valid: {len(ids):,} tokens, vocabulary {len(vocab):,}; {torch.get_num_threads()} thread(s)")
    torch.manual_seed(0)
    ref = Reference(ids, len(vocab))
    with tempfile.TemporaryDirectory() as tmp:
        ours = trainer_on(ids, vocab, Path(tmp))
        ours.model.train()

        def ours_step() -> int:
            tokens0 = ours.count
            ours.train_step()
            return ours.count - tokens0

        timed(ref.step, 5), timed(ours_step, 5)  # warm-up: allocator, first-call overheads
        ratios, r_rates, o_rates = [], [], []
        for _ in range(args.rounds):
            r, o = timed(ref.step, args.steps), timed(ours_step, args.steps)
            r_rates.append(r), o_rates.append(o), ratios.append(o / r)
    print(f"reference (pytorch/examples loop): {statistics.median(r_rates):,.0f} tokens/s")
    print(f"models.trainer.Trainer:            {statistics.median(o_rates):,.0f} tokens/s")
    print(
        f"ratio trainer / reference: {statistics.median(ratios):.3f}x (median of {args.rounds} rounds; "
        f"range {min(ratios):.3f}-{max(ratios):.3f}; target >= 1.0)"
    )


if __name__ == "__main__":
    main()
