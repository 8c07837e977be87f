"""Skip-gram word embeddings, trained by the shared Trainer as a ``Task``.

    trainer = Trainer(lambda d: SkipgramTask(params, paths.windows("word"), vocab, d, vocab_path=...),
                      params, ckpt_dir, fingerprint)
    trainer.fit()
    vectors = trainer.task.embeddings()                       # (V, D) numpy, rows = vocabulary ids
    nearest(vectors, vocab.tokens, [vocab.id("cat")], k=5)    # cosine neighbours
    analogy_accuracy(vectors, vocab, "questions-words.txt")   # a : b :: c : ?

Pairs come from pipeline/skipgram/pairs.py (random window in 1..max_context per word,
frequent-word subsampling, vectorized). Each batch of ``batch_size`` pairs shares
``negatives`` noise words drawn from unigram^0.75, as ``tf.nn.nce_loss`` shares its
sampled classes in Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine
Intelligence* (Bleeding Edge Press, 2016), chapter 6; the loss per pair is

    negative sampling (Mikolov et al. 2013):  -log σ(s(c, o)) - Σ_k log σ(-s(c, n_k))
    NCE (Gutmann & Hyvärinen 2010; Mnih & Teh 2012): the same with every score s(c, w)
        replaced by s(c, w) - log(K q(w)), q the noise distribution

with s(c, w) = v_c · u_w + b_w. Initialisation follows TensorFlow's word2vec tutorial,
as Abrahams et al. (2016, ch. 6) do: v ~ U(-1, 1), u ~ N(0, 1/D) truncated at 2σ, b = 0.
Batches and noise are pure functions of (seed, step): resume is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import checkpoint as ckpt
from models.config import SavedConfig
from models.data import open_array, read_meta
from models.evaluate import eval_mode
from models.trainer import Task
from pipeline.errors import DataError
from pipeline.params import SkipgramParams
from pipeline.skipgram.pairs import PassPlan, clip_ids, keep_probabilities, noise_distribution, stream_counts
from pipeline.vocab import EOS, NUM_SPECIALS, PAD, UNK, Vocab

FORMAT = "rnnlab-skipgram/1"  # this task's checkpoints: models.checkpoint.load(..., expect=FORMAT)

VALID_STREAM = 1 << 30  # rng key of the held-out plan: never a training pass number


@dataclass(frozen=True)
class SkipgramConfig(SavedConfig):
    vocab_size: int  # rows: the top ``vocab_size`` ids of the vocabulary
    emb_dim: int
    loss: str  # "negative_sampling" or "nce"


class SkipGram(nn.Module):
    """Word vectors v (the embeddings), context vectors u and a context bias b."""

    def __init__(self, cfg: SkipgramConfig):
        super().__init__()
        if cfg.loss not in ("negative_sampling", "nce"):
            raise ValueError(f"loss must be 'negative_sampling' or 'nce', got {cfg.loss!r}")
        self.cfg = cfg
        self.inp = nn.Embedding(cfg.vocab_size, cfg.emb_dim)  # (V, D) v: what embeddings.npy holds
        self.out = nn.Embedding(cfg.vocab_size, cfg.emb_dim)  # (V, D) u
        self.bias = nn.Embedding(cfg.vocab_size, 1)  # (V, 1) b
        nn.init.uniform_(self.inp.weight, -1.0, 1.0)
        nn.init.trunc_normal_(
            self.out.weight,
            std=1.0 / math.sqrt(cfg.emb_dim),
            a=-2 / math.sqrt(cfg.emb_dim),
            b=2 / math.sqrt(cfg.emb_dim),
        )
        nn.init.zeros_(self.bias.weight)

    def forward(self, centers: Tensor, contexts: Tensor, noise: Tensor, log_kq: Tensor | None = None) -> Tensor:
        """Summed loss of B pairs against K shared noise words.

        centers, contexts (B,) ids; noise (K,) ids; log_kq (V,) log(K q(w)) for NCE, else None.
        """
        v = self.inp(centers)  # (B, D)
        pos = ((v * self.out(contexts)).sum(-1) + self.bias(contexts)[:, 0]).float()  # (B,)
        neg = (v @ self.out(noise).t() + self.bias(noise)[:, 0]).float()  # (B, K); fp32 under bf16 autocast
        if log_kq is not None:
            pos = pos - log_kq[contexts]
            neg = neg - log_kq[noise]
        # -log σ(x) = softplus(-x); -log σ(-x) = softplus(x): stable for any score.
        return F.softplus(-pos).sum() + F.softplus(neg).sum()


class SkipgramTask(Task):
    """Skip-gram on ``data_dir/{train,valid}/stream.npy``; the ``Task`` a Trainer runs."""

    unit = "pairs"

    def __init__(self, p: SkipgramParams, data_dir: Path, vocab: Vocab, device: torch.device, *, vocab_path: str):
        self.p, self.device, self.vocab = p, device, vocab
        self.data_dir = Path(data_dir)
        read_meta(self.data_dir, vocab)  # the windows were encoded with this vocabulary
        self.vocab_ref = ckpt.vocab_ref(vocab, vocab_path)
        V = min(p.vocab_size, len(vocab))
        self.cfg = SkipgramConfig(V, p.emb_dim, p.loss)
        self.train_ids = clip_ids(open_array(self.data_dir / "train", "stream.npy"), V)  # (T,) int64
        counts = stream_counts(self.train_ids, V)
        if counts.sum() == 0:
            raise DataError(f"{self.data_dir}/train/stream.npy has no words; rebuild the windows (dvc repro)")
        self.keep = keep_probabilities(counts, p.subsample)
        self.noise_p = noise_distribution(counts, p.noise_power, exclude=(PAD, EOS))
        self.noise_cdf = np.cumsum(self.noise_p)
        self.log_kq = None
        if p.loss == "nce":
            with np.errstate(divide="ignore"):
                self.log_kq = torch.tensor(np.log(p.negatives * self.noise_p), dtype=torch.float32, device=device)
        self.model = SkipGram(self.cfg).to(device)
        self._plans: dict[int, PassPlan] = {}
        first = self.plan(0)
        if first.total == 0:
            raise DataError(
                f"{self.data_dir}/train: no skip-gram pairs (every document has under 2 words after subsampling); "
                "use a larger corpus or set skipgram.subsample: null"
            )
        self.steps_per_pass = math.ceil(first.total / p.batch_size)
        valid_ids = clip_ids(open_array(self.data_dir / "valid", "stream.npy"), V)
        self.valid = PassPlan.build(
            valid_ids, self.keep, p.max_context, np.random.default_rng([p.seed, VALID_STREAM]), shuffle=False
        )

    # --- data: pure functions of (seed, step) ---------------------------------------------

    def plan(self, epoch_pass: int) -> PassPlan:
        """Pass ``epoch_pass``'s subsampling, windows and center order (the latest one cached)."""
        if epoch_pass not in self._plans:
            rng = np.random.default_rng([self.p.seed, epoch_pass])
            self._plans = {epoch_pass: PassPlan.build(self.train_ids, self.keep, self.p.max_context, rng)}
        return self._plans[epoch_pass]

    def noise(self, *key: int) -> Tensor:
        """K noise ids ~ q, drawn by inverting the CDF: a pure function of ``key``."""
        u = np.random.default_rng([self.p.seed, *key]).random(self.p.negatives)
        ids = np.minimum(np.searchsorted(self.noise_cdf, u * self.noise_cdf[-1], side="right"), len(self.noise_cdf) - 1)
        return torch.from_numpy(ids.astype(np.int64)).to(self.device)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        epoch_pass, k = divmod(step, self.steps_per_pass)
        b = self.p.batch_size
        c, o = self.plan(epoch_pass).span(k * b, (k + 1) * b)
        return torch.from_numpy(c).to(self.device), torch.from_numpy(o).to(self.device)

    # --- the Task protocol ------------------------------------------------------------------

    def train_loss(self, model: nn.Module, step: int) -> tuple[Tensor, int]:
        centers, contexts = self.batch(step)
        return model(centers, contexts, self.noise(step, 1), self.log_kq), len(centers)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss per held-out pair: the first ``valid_pairs`` pairs, noise fixed per chunk."""
        n = min(self.p.valid_pairs, self.valid.total)
        if n == 0:
            raise DataError(f"{self.data_dir}/valid: no skip-gram pairs; the valid split needs documents of 2+ words")
        total = 0.0
        with eval_mode(self.model):
            for i, start in enumerate(range(0, n, self.p.batch_size)):
                c, o = self.valid.span(start, min(start + self.p.batch_size, n))
                c_t, o_t = torch.from_numpy(c).to(self.device), torch.from_numpy(o).to(self.device)
                total += float(self.model(c_t, o_t, self.noise(VALID_STREAM, i), self.log_kq))
        return {"loss": total / n}

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"format": FORMAT, "skipgram": self.cfg.to_dict(), "vocab": self.vocab_ref}

    def embeddings(self) -> np.ndarray:
        """(len(vocab), D) float32, one row per vocabulary id; ids past vocab_size share <unk>'s row."""
        w = self.model.inp.weight.detach().cpu().numpy().astype(np.float32)
        out = np.empty((len(self.vocab), w.shape[1]), np.float32)
        out[: len(w)] = w
        out[len(w) :] = w[UNK]
        return out


# --- evaluation: numpy only, on any (V, D) matrix --------------------------------------------


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def nearest(
    matrix: np.ndarray, tokens: tuple[str, ...] | list[str], ids: list[int], k: int = 10, candidates: int | None = None
) -> list[list[tuple[str, float]]]:
    """The ``k`` nearest words by cosine to each of ``ids``, itself and the specials excluded.

    ``candidates``: only the first ``candidates`` ids may be neighbours (the trained rows).
    """
    n = unit_rows(np.asarray(matrix, np.float32))
    limit = candidates or len(n)
    sims = n[ids] @ n[:limit].T  # (len(ids), limit)
    sims[:, :NUM_SPECIALS] = -np.inf
    ids_arr = np.asarray(ids, np.int64)
    inside = np.flatnonzero(ids_arr < limit)
    sims[inside, ids_arr[inside]] = -np.inf  # a word is not its own neighbour
    k = min(k, max(limit - NUM_SPECIALS - 1, 0))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[(tokens[j], float(sims[r, j])) for j in row] for r, row in enumerate(top)]


def read_analogies(path: str | Path) -> list[tuple[str, list[str]]]:
    """questions-words.txt: ``: section`` lines, then ``a b c d`` (a is to b as c is to d)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: analogy file not found (skipgram.analogies)") from None
    out, section = [], ""
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == ":":
            section = " ".join(parts[1:])
            continue
        if len(parts) != 4:
            raise DataError(f"{path}:{lineno}: an analogy line needs 4 words (a b c d), got {len(parts)}")
        out.append((section, parts))
    return out


def analogy_accuracy(
    matrix: np.ndarray,
    vocab: Vocab,
    path: str | Path,
    lowercase: bool = True,
    candidates: int | None = None,
    batch: int = 512,
) -> dict[str, Any]:
    """3CosAdd (Mikolov et al. 2013): d = argmax cos(w, b - a + c) over words other than a, b, c.

    Questions with a word outside the (first ``candidates``) vocabulary are skipped and counted.
    """
    limit = candidates or len(vocab)
    questions = read_analogies(path)
    ids, sections = [], []
    for section, words in questions:
        q = [vocab.id(w.lower() if lowercase else w) for w in words]
        if all(NUM_SPECIALS <= i < limit for i in q):
            ids.append(q)
            sections.append(section)
    n = unit_rows(np.asarray(matrix, np.float32)[:limit])
    correct = np.zeros(len(ids), bool)
    q = np.asarray(ids, np.int64).reshape(-1, 4)
    for s in range(0, len(q), batch):
        a, b, c, d = q[s : s + batch].T
        sims = unit_rows(n[b] - n[a] + n[c]) @ n.T  # (batch, V)
        sims[:, :NUM_SPECIALS] = -np.inf
        rows = np.arange(len(a))
        sims[rows, a] = sims[rows, b] = sims[rows, c] = -np.inf
        correct[s : s + batch] = sims.argmax(1) == d
    per: dict[str, list[int]] = {}
    for sec, ok in zip(sections, correct.tolist()):
        per.setdefault(sec, [0, 0])
        per[sec][0] += ok
        per[sec][1] += 1
    return {
        "questions": len(questions),
        "answered": len(ids),
        "skipped": len(questions) - len(ids),  # a word outside the vocabulary
        "correct": int(correct.sum()),
        "accuracy": float(correct.mean()) if len(ids) else 0.0,
        "sections": {k: {"correct": v[0], "answered": v[1]} for k, v in per.items()},
    }
