"""Training tokens/s of models.trainer against a loop written like pytorch/examples' word_language_model.

    .venv/bin/python bench/train_throughput.py                 # 1 thread, 2x200 LSTM, bptt 35, batch 20
    .venv/bin/python bench/train_throughput.py --threads 2

Both train the same model (emb 200, 2x200 LSTM, dropout 0.2, untied) with SGD lr 20 and
global-norm clipping 0.25 on the same real data: WikiText-2 valid (../shared/data),
split on whitespace with <eos> per line, as the examples' data.Corpus does. The
reference slices one int64 tensor (batchify + get_batch + repackage_hidden + a manual
SGD update); the trainer reads the memory-mapped stream.npy layout the windows stage
writes and runs its real train_step (NaN check, clipping, optimizer). Rounds alternate
the two back to back, so a load spike on a shared machine hits both; the ratio is the
median over rounds of (trainer tokens/s / reference tokens/s in the same round).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ leads sys.path and bench/tokenize.py would shadow the stdlib
# `tokenize` (as bench/tokenize.py explains): put the repository root there instead.
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.device import set_threads
from models.lm import lm_trainer
from pipeline.params import TrainParams
from pipeline.vocab import Vocab

DATA = ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
EMB = HID = 200
LAYERS, BPTT, BATCH, DROPOUT, LR, CLIP = 2, 35, 20, 0.2, 20.0, 0.25


def corpus(path: Path) -> tuple[list[str], np.ndarray]:
    """pytorch/examples data.Corpus.tokenize: words of each line, then <eos>."""
    vocab = ["<pad>", "<unk>", "<eos>"]
    index = {w: i for i, w in enumerate(vocab)}
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        for w in line.split() + ["<eos>"]:
            if w not in index:
                index[w] = len(vocab)
                vocab.append(w)
            ids.append(index[w])
    return vocab, np.array(ids, dtype=np.int64)


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


def trainer_on(ids: np.ndarray, vocab_tokens: list[str], root: Path) -> Trainer:
    """A Trainer over the same ids, written in the windows stage's layout."""
    vocab = Vocab("word", tuple(vocab_tokens), (0,) * len(vocab_tokens))
    meta = {"vocab_sha256": vocab.sha256, "params": {"length": BPTT, "stride": None}}
    for split in ("train", "valid"):
        (root / split).mkdir(parents=True)
        np.save(root / split / "stream.npy", ids.astype(np.uint16 if len(vocab) <= 65536 else np.int32))
    (root / "meta.json").write_text(json.dumps(meta))
    p = TrainParams(cell="lstm", emb_dim=EMB, hidden=HID, layers=LAYERS, dropout=DROPOUT, mode="stream",
                    batch_size=BATCH, bptt=BPTT, optimizer="sgd", lr=LR, clip="norm", clip_value=CLIP,
                    epochs=1, device="cpu")  # fmt: skip
    return lm_trainer(p, root, root / "ckpt", vocab, {"fingerprint": "bench", "vocab_path": "-"}, log=lambda _: None)


def timed(step, steps: int) -> float:
    """Tokens per second over ``steps`` calls of ``step`` (returning tokens trained)."""
    start, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += step()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed round (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
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
    print(f"ratio trainer / reference: {statistics.median(ratios):.3f}x (median of {args.rounds} rounds; "
          f"range {min(ratios):.3f}-{max(ratios):.3f}; target >= 1.0)")  # fmt: skip


if __name__ == "__main__":
    main()
