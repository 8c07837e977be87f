"""``RNNLanguageModel``: embedding → stacked recurrent cell → linear decoder, as in
pytorch/examples' word_language_model, built through one factory.

    model = RNNLanguageModel(ModelConfig(vocab_size=49, cell="lstm", emb_dim=32, hidden=128, layers=1))
    logits, state = model(x)                  # x (T, B) int64 -> logits (T, B, V)
    logits, state = model(x_next, state)      # carry the state (TBPTT, stateful sampling)
    loss, state = model(x, state, targets=y, logits_mb=64)   # summed nats; no logits over 64 MiB

Output layer (``output``): ``full`` is a Linear decoder whose logits feed a softmax;
``adaptive`` is nn.AdaptiveLogSoftmaxWithLoss (Grave et al. 2017, "Efficient softmax
approximation for GPUs"), whose "logits" are exact log-probabilities (``log_prob``),
so that anything taking a log-softmax of them sees the same distribution.

Memory: the loss, the top-1 hits and per-target log-probabilities are computed over
slices of the (T * B) rows, each slice's largest output tensor below ``logits_mb``
MiB of fp32, so no (T, B, V) tensor is built whatever V is. In training each slice's
gradients are computed as soon as its logits exist, and the logits freed (_SoftmaxLoss,
_SlicedLoss); the full softmax does it in place, one (rows, V) tensor at a time.

Tensors are sequence-first (T, B), the layout of torch's fused nn.LSTM / nn.GRU /
nn.RNN kernels and of models/cells.py's variants, so any of them plugs in.

Adding a cell type: ``register_cell("name", builder)`` where ``builder(input_size,
hidden_size, num_layers, dropout)`` returns a module with nn.LSTM's calling
convention (``output, state = rnn(x, state)``, x (T, B, input_size), state a
tensor or a tuple of tensors, each (layers, B, hidden)).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import cells
from models.config import ModelConfig, ModelConfigError
from models.data import IGNORE

State = Tensor | tuple[Tensor, ...]  # GRU / RNN: h (L, B, H); LSTM: (h, c), each (L, B, H)
CellBuilder = Callable[[int, int, int, float], nn.Module]

INIT_RANGE = 0.1  # embedding and decoder ~ U(-0.1, 0.1), as pytorch/examples
ADAPTIVE_DIV = 4.0  # tail cluster i projects to hidden / 4**(i+1) dims (Grave et al.; torch's default)
FLOAT_BYTES = 4  # output-layer tensors are sized as fp32: bf16 logits are upcast for the loss
# Full softmax: at most this many rows per slice, even when the budget allows more. Products of
# 256 to 4,096 rows ran at the same tokens/s on CPU (V = 18k and 100k); more rows only cost memory.
SLICE_ROWS = 512
MIB = 2**20


def _fused(kind: str) -> CellBuilder:
    def build(input_size: int, hidden: int, layers: int, dropout: float) -> nn.Module:
        # torch warns about (and ignores) inter-layer dropout with one layer: pass 0 then.
        between = dropout if layers > 1 else 0.0
        if kind == "lstm":
            return nn.LSTM(input_size, hidden, layers, dropout=between)
        if kind == "gru":
            return nn.GRU(input_size, hidden, layers, dropout=between)
        return nn.RNN(input_size, hidden, layers, nonlinearity=kind, dropout=between)

    return build


# The one factory (pytorch/examples' RNN_TANH, RNN_RELU, LSTM, GRU), extensible by register_cell.
CELLS: dict[str, CellBuilder] = {
    "rnn_tanh": _fused("tanh"),
    "rnn_relu": _fused("relu"),
    "lstm": _fused("lstm"),
    "gru": _fused("gru"),
}


def register_cell(name: str, builder: CellBuilder) -> None:
    """Make ``cell: name`` buildable."""
    CELLS[name] = builder


# models/cells.py's variants: peephole, coupled-gate and layer-normalised
# LSTMs and a layer-normalised GRU. A Python loop over time, so slower than the fused cells.
for _kind in sorted(cells.KINDS):
    register_cell(_kind, functools.partial(cells.make_recurrent, _kind))


class RNNLanguageModel(nn.Module):
    """Next-token model over a fixed vocabulary; dropout on the input, between layers and on the output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.cell not in CELLS:
            raise ModelConfigError(f"unknown cell {cfg.cell!r}; choose one of {', '.join(sorted(CELLS))}")
        self.adaptive = cfg.output == "adaptive"
        if self.adaptive:
            _check_adaptive(cfg)
        elif cfg.output != "full":
            raise ModelConfigError(f"unknown output {cfg.output!r}; choose full or adaptive")
        if cfg.tie_weights and cfg.emb_dim != cfg.hidden:
            raise ModelConfigError(
                f"tie_weights needs emb_dim == hidden, got emb_dim={cfg.emb_dim}, hidden={cfg.hidden}; "
                "set emb_dim to the hidden size or tie_weights: false"
            )
        self.cfg = cfg
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.rnn = CELLS[cfg.cell](cfg.emb_dim, cfg.hidden, cfg.layers, cfg.dropout)
        self.decoder: nn.Linear | nn.AdaptiveLogSoftmaxWithLoss
        if self.adaptive:
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(
                cfg.hidden, cfg.vocab_size, list(cfg.cutoffs), div_value=ADAPTIVE_DIV, head_bias=True
            )
            nn.init.zeros_(self.decoder.head.bias)
        else:
            self.decoder = nn.Linear(cfg.hidden, cfg.vocab_size)
            if cfg.tie_weights:
                self.decoder.weight = self.encoder.weight  # "Using the Output Embedding..." (Press & Wolf 2017)
            nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.encoder.weight, -INIT_RANGE, INIT_RANGE)
        if not cfg.tie_weights and not self.adaptive:
            nn.init.uniform_(self.decoder.weight, -INIT_RANGE, INIT_RANGE)
        cells.set_forget_bias(self.rnn)  # LSTMs start out remembering (Gers et al. 2000)

    def features(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x (T, B) token ids -> the output layer's input (T, B, H), dropout applied, and the new state."""
        emb = self.drop(self.encoder(x))  # (T, B, E)
        out, state = self.rnn(emb, state)  # (T, B, H)
        return self.drop(out), state

    def output(self, h: Tensor) -> Tensor:
        """h (..., H) -> (..., V): logits (full) or exact log-probabilities (adaptive). Unsliced:
        for a few rows (sampling, completion); losses and scores go through the sliced methods."""
        if not self.adaptive:
            return self.decoder(h)
        flat = h.reshape(-1, h.size(-1))  # (N, H)
        return self.decoder.log_prob(flat).view(*h.shape[:-1], -1)  # (..., V)

    def forward(
        self, x: Tensor, state: State | None = None, targets: Tensor | None = None, logits_mb: float | None = None
    ) -> tuple[Tensor, State]:
        """x (T, B) token ids -> logits (T, B, V) (log-probabilities when adaptive) and the state
        after the last step; with ``targets`` (T, B), the summed nats over the targets that are
        not IGNORE instead of the logits, in slices of at most ``logits_mb`` MiB (None: one slice).

        The loss goes through forward (not a separate method) so that DDP sees the whole step.
        """
        h, state = self.features(x, state)  # (T, B, H)
        if targets is None:
            return self.output(h), state  # (T, B, V)
        return self.loss(h, targets, logits_mb), state  # ()

    # --- the output layer in slices of rows: bounded memory whatever the vocabulary ---------

    def slices(self, targets: Tensor, logits_mb: float | None) -> list[int]:
        """Boundaries [0, ..., N] of row slices of ``targets`` (N,) whose output tensors each
        hold at most ``logits_mb`` MiB of fp32 (None: one slice).

        Full: n * V elements per slice, and n <= SLICE_ROWS. Adaptive: the head's (n, shortlist +
        clusters) and each cluster's (rows of the slice whose target is in it, cluster size),
        counted from the targets, so that the rare clusters (few rows, wide) do not make every
        slice small.
        """
        n = targets.numel()
        if logits_mb is None or n == 0:
            return [0, n]
        cap = max(1, int(logits_mb * MIB) // FLOAT_BYTES)  # elements
        if not self.adaptive:
            return [*range(0, n, max(1, min(SLICE_ROWS, cap // self.cfg.vocab_size))), n]
        asm = self.decoder
        cluster = torch.bucketize(targets.detach().cpu(), torch.tensor(asm.cutoffs[:-1]), right=True)  # (N,)
        zero = torch.zeros(1, dtype=torch.long)
        counts = [torch.cat([zero, torch.cumsum(cluster == i + 1, 0)]) for i in range(asm.n_clusters)]  # (N + 1,)
        allowed = [cap // (hi - lo) for lo, hi in itertools.pairwise(asm.cutoffs)]  # rows per cluster
        bounds = [0]
        while bounds[-1] < n:
            start = bounds[-1]
            end = min(n, start + max(1, cap // asm.head_size))
            for count, rows in zip(counts, allowed):
                # the last end whose rows in this cluster, counted from start, stay within `rows`
                end = min(end, int(torch.searchsorted(count, count[start] + rows, right=True)) - 1)
            bounds.append(max(end, start + 1))  # one row at least, even when its cluster alone is wider
        return bounds

    def loss(self, h: Tensor, targets: Tensor, logits_mb: float | None = None) -> Tensor:
        """Summed nats (fp32 scalar) of ``targets`` (...) given ``h`` (..., H); IGNORE targets count nothing.

        Differentiable, holding one slice's output tensors at a time. Full softmax: each slice's
        gradients are computed in forward, in place of its logits (_SoftmaxLoss), even for one
        slice: a third of the memory of autograd through F.cross_entropy (logits, log-softmax and
        their gradient). Adaptive: autograd, slice by slice when there are several (_SlicedLoss).
        """
        h, t = h.reshape(-1, h.size(-1)), targets.reshape(-1)  # (N, H), (N,)
        if self.adaptive:
            keep = t != IGNORE  # the adaptive softmax has no ignore_index: drop those rows
            h, t = h[keep], t[keep]
        bounds = self.slices(t, logits_mb)
        if not self.adaptive:
            if torch.is_grad_enabled():
                return _SoftmaxLoss.apply(h, self.decoder.weight, self.decoder.bias, t, bounds)
            total = h.new_zeros((), dtype=torch.float32)  # no gradient wanted: the nats alone
            for lo, hi in itertools.pairwise(bounds):
                total += softmax_nll_(self.decoder(h[lo:hi]).float(), t[lo:hi], normalize=False).sum()
            return total
        if len(bounds) <= 2:
            return self._adaptive_loss(h, t)  # exactly the unsliced computation
        params = [p for p in self.decoder.parameters() if p.requires_grad]
        return _SlicedLoss.apply(self._adaptive_loss, bounds, h, t, *params)

    def _adaptive_loss(self, h: Tensor, t: Tensor) -> Tensor:
        """h (n, H), t (n,) -> summed nats (fp32 scalar)."""
        return self._adaptive_nll(h, t).sum()

    def _adaptive_nll(self, h: Tensor, t: Tensor) -> Tensor:
        """h (n, H), t (n,) ids in [0, V) -> nats (n,): -log p(head class) - log p(id | its cluster).

        The nn.AdaptiveLogSoftmaxWithLoss forward's arithmetic, except that every cluster runs
        even on no rows: each parameter then gets a (zero) gradient, as DDP needs of every step.
        """
        asm = self.decoder
        head = F.log_softmax(asm.head(h).float(), dim=-1)  # (n, shortlist + clusters)
        bounds = torch.tensor(asm.cutoffs[:-1], device=t.device)
        cluster = torch.bucketize(t, bounds, right=True)  # (n,) 0: the shortlist, i: tail cluster i
        head_class = torch.where(cluster == 0, t, asm.shortlist_size + cluster - 1)
        nll = -head.gather(1, head_class[:, None])[:, 0]  # (n,)
        for i, tail in enumerate(asm.tail):
            rows = (cluster == i + 1).nonzero()[:, 0]  # (n_i,)
            logp = F.log_softmax(tail(h[rows]).float(), dim=-1)  # (n_i, cluster size)
            nll = nll.index_add(0, rows, -logp.gather(1, (t[rows] - asm.cutoffs[i])[:, None])[:, 0])
        return nll

    def _adaptive_top1(self, h: Tensor, logits_mb: float | None) -> Tensor:
        """h (n, H) -> the likeliest id of each row (n,): exactly the argmax over all V ids,
        with no cluster's logits over ``logits_mb`` at once."""
        asm = self.decoder
        head = F.log_softmax(asm.head(h).float(), dim=-1)  # (n, shortlist + clusters)
        best, arg = head[:, : asm.shortlist_size].max(-1)  # (n,) each
        for i, tail in enumerate(asm.tail):
            # log p(w) = log p(cluster) + log p(w | cluster) <= log p(cluster): only rows where the
            # cluster itself beats the best so far can hold a better word (as torch's predict()).
            cand = head[:, asm.shortlist_size + i]  # (n,)
            rows = (cand > best).nonzero()[:, 0]  # (m,)
            lo, hi = asm.cutoffs[i], asm.cutoffs[i + 1]
            step = rows.numel() if logits_mb is None else max(1, int(logits_mb * MIB) // (FLOAT_BYTES * (hi - lo)))
            for part in rows.split(max(1, step)):  # (m_j,): at most logits_mb of this cluster's logits
                value, index = F.log_softmax(tail(h[part]).float(), dim=-1).max(-1)  # (m_j,) each
                value = value + cand[part]
                better = value > best[part]
                best[part] = torch.where(better, value, best[part])
                arg[part] = torch.where(better, index + lo, arg[part])
        return arg

    @torch.no_grad()
    def score_targets(self, h: Tensor, targets: Tensor, logits_mb: float | None = None) -> tuple[float, int]:
        """Summed nats and top-1 hits of the targets that are not IGNORE, in slices (evaluation).

        h (..., H), targets (...). Rows with an IGNORE target (warm-up, padding) are skipped:
        each slice gathers its own rows, so no copy of all of h is made.
        """
        h, t = h.reshape(-1, h.size(-1)), targets.reshape(-1)
        rows = (t != IGNORE).nonzero()[:, 0]  # (N,) the scored rows
        t = t[rows]
        # Summed on the device, read once: no synchronisation per slice on a GPU.
        nats, hits = h.new_zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.long, device=h.device)
        for lo, hi in itertools.pairwise(self.slices(t, logits_mb)):
            hs, ts = h[rows[lo:hi]], t[lo:hi]  # (n, H), (n,)
            if self.adaptive:
                nats += self._adaptive_nll(hs, ts).sum()
                hits += (self._adaptive_top1(hs, logits_mb) == ts).sum()
            else:
                logits = self.decoder(hs).float()  # (n, V): one slice of logits, the only (n, V) tensor
                hits += (logits.argmax(-1) == ts).sum()
                nats += softmax_nll_(logits, ts, normalize=False).sum()
                del logits  # before the next slice's exist
        return float(nats), int(hits)

    @torch.no_grad()
    def target_logprobs(self, h: Tensor, targets: Tensor, logits_mb: float | None = None) -> Tensor:
        """log p(target) of every row (N,) fp32, h (N, H), targets (N,) real ids, in slices (scoring)."""
        parts = [h.new_zeros(0, dtype=torch.float32)]
        for lo, hi in itertools.pairwise(self.slices(targets, logits_mb)):
            hs, ts = h[lo:hi], targets[lo:hi]
            if self.adaptive:
                parts.append(-self._adaptive_nll(hs, ts))
            else:
                parts.append(-softmax_nll_(self.decoder(hs).float(), ts, normalize=False))
        return torch.cat(parts)

    def step(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One time step for inference: x (1, B) -> logits (1, B, V) and the new state.

        Same weights and math as ``forward``, through torch's single-step cell kernels
        (torch.lstm_cell, ...) and functional calls: a one-token step is bound by
        per-call overhead, and nn.LSTM's sequence kernels cost over twice as much for
        one token on CPU (bench/sample_speed.py). Falls back to ``forward`` while
        training (dropout) and for cells without such a kernel.
        """
        rnn = self.rnn
        cell = _CELL_KERNELS.get(getattr(rnn, "mode", None)) if type(rnn) in _FUSED else None
        if cell is None or self.training or x.size(0) != 1:
            return self(x, state)
        lstm = rnn.mode == "LSTM"
        inp = F.embedding(x[0], self.encoder.weight)  # (B, E)
        if state is None:
            zeros = inp.new_zeros(rnn.num_layers, inp.size(0), rnn.hidden_size)
            state = (zeros, zeros) if lstm else zeros
        hs, cs = [], []
        for k in range(rnn.num_layers):
            w = (
                getattr(rnn, f"weight_ih_l{k}"),
                getattr(rnn, f"weight_hh_l{k}"),
                getattr(rnn, f"bias_ih_l{k}"),
                getattr(rnn, f"bias_hh_l{k}"),
            )
            if lstm:
                inp, c = cell(inp, (state[0][k], state[1][k]), *w)  # (B, H) each
                cs.append(c)
            else:
                inp = cell(inp, state[k], *w)
            hs.append(inp)
        h = torch.stack(hs) if len(hs) > 1 else hs[0][None]  # (L, B, H)
        new = (h, torch.stack(cs) if len(cs) > 1 else cs[0][None]) if lstm else h
        if self.adaptive:
            return self.decoder.log_prob(inp)[None], new  # (1, B, V)
        return F.linear(inp, self.decoder.weight, self.decoder.bias)[None], new  # (1, B, V)


def softmax_nll_(logits: Tensor, t: Tensor, normalize: bool = True) -> Tensor:
    """Nats of the targets ``t`` (n,) under ``softmax(logits)`` (n, V) fp32, 0 where IGNORE.

    In place, so that a slice of logits is the only (n, V) tensor: ``logits`` becomes the
    softmax probabilities (``normalize``) or their unnormalised exp(logit - max).
    """
    keep = t != IGNORE
    safe = torch.where(keep, t, 0)  # (n,) any id on IGNORE rows
    logits.sub_(logits.amax(-1, keepdim=True))  # (n, V): the largest logit of each row is 0
    picked = logits.gather(1, safe[:, None])[:, 0]  # (n,)
    z = logits.exp_().sum(-1)  # (n,) partition function
    if normalize:
        logits.div_(z[:, None])
    return torch.where(keep, z.log() - picked, 0.0)  # IGNORE rows count nothing, whatever their logits


class _SoftmaxLoss(torch.autograd.Function):
    """Summed cross-entropy of a linear layer's logits over slices of rows, holding one slice's
    logits at a time and no more: each slice's gradients (softmax - one-hot, computed in place of
    the logits) are accumulated in forward and only scaled in backward, as Liger-Kernel's fused
    linear cross-entropy does. The three matrix products of autograd through F.linear and
    F.cross_entropy, with none repeated: activation checkpointing measured 2-3x slower here.

    Under autocast the two products with the logits run in its dtype, the weight's gradient
    in fp32 (an in-place addmm_ has no autocast).
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, weight: Tensor, bias: Tensor, t: Tensor, bounds: list[int]) -> Tensor:
        # h (N, H), weight (V, H), bias (V,), t (N,) with IGNORE rows, bounds [0, ..., N]
        grad_h = torch.empty_like(h)  # every row is written
        grad_w, grad_b = torch.zeros_like(weight), torch.zeros_like(bias)
        total = h.new_zeros((), dtype=torch.float32)
        for lo, hi in itertools.pairwise(bounds):
            hs, ts = h[lo:hi], t[lo:hi]  # (n, H), (n,)
            grad = F.linear(hs, weight, bias).float()  # (n, V) logits, then in place their gradient
            total += softmax_nll_(grad, ts).sum()
            keep = ts != IGNORE
            grad[torch.arange(hi - lo, device=ts.device), torch.where(keep, ts, 0)] -= 1.0  # softmax - one_hot
            if not bool(keep.all()):
                grad.masked_fill_(~keep[:, None], 0.0)  # IGNORE rows: no gradient, whatever their logits
            grad_h[lo:hi] = torch.mm(grad, weight)
            grad_w.addmm_(grad.t(), hs.float())
            grad_b += grad.sum(0)
            del grad  # before the next slice's logits exist
        ctx.grads = (grad_h, grad_w, grad_b)
        return total

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_w, grad_b = ctx.grads
        del ctx.grads
        return grad_h.mul_(g), grad_w.mul_(g), grad_b.mul_(g), None, None


class _SlicedLoss(torch.autograd.Function):
    """``sum(loss_fn(h[lo:hi], t[lo:hi]))`` over slices, each slice's gradient (with respect to
    its rows of h and to ``params``, the parameters loss_fn uses) taken by autograd in forward,
    right after its loss, so that one slice's activations exist at a time; backward only
    scales them. No recomputation: activation checkpointing (torch.utils.checkpoint) measured
    about 2x slower here, and no smaller on the adaptive softmax.
    """

    @staticmethod
    def forward(
        ctx: Any, loss_fn: Callable[[Tensor, Tensor], Tensor], bounds: list[int], h: Tensor, t: Tensor, *params: Tensor
    ) -> Tensor:
        grad_h = torch.zeros_like(h)  # (N, H)
        grads = [torch.zeros_like(p) for p in params]
        total = h.new_zeros((), dtype=torch.float32)
        for lo, hi in itertools.pairwise(bounds):
            with torch.enable_grad():
                hs = h[lo:hi].detach().requires_grad_()  # (n, H)
                loss = loss_fn(hs, t[lo:hi])
                got = torch.autograd.grad(loss, [hs, *params], allow_unused=True)
            grad_h[lo:hi] = got[0]
            for acc, g in zip(grads, got[1:]):
                if g is not None:
                    acc += g
            total += loss.detach()
        ctx.grads = (grad_h, *grads)
        return total

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, *grads = ctx.grads
        del ctx.grads
        return None, None, grad_h.mul_(g), None, *(acc.mul_(g) for acc in grads)


_FUSED = (nn.LSTM, nn.GRU, nn.RNN)
_CELL_KERNELS = {
    "LSTM": torch.lstm_cell,
    "GRU": torch.gru_cell,
    "RNN_TANH": torch.rnn_tanh_cell,
    "RNN_RELU": torch.rnn_relu_cell,
}


def _check_adaptive(cfg: ModelConfig) -> None:
    """An adaptive output layer that nn.AdaptiveLogSoftmaxWithLoss can build, or the fix."""
    cut = list(cfg.cutoffs)
    if not cut or cut != sorted(set(cut)) or cut[0] < 1 or cut[-1] > cfg.vocab_size - 1:
        raise ModelConfigError(
            f"cutoffs {cut} do not fit a vocabulary of {cfg.vocab_size}: they must be increasing ids "
            f"between 1 and {cfg.vocab_size - 1}; lower them, or set cutoffs: null for the default rule"
        )
    if cfg.tie_weights:
        # The adaptive layer has no single (V, H) matrix to share: its clusters are low-rank
        # projections. Tying would need adaptive input embeddings (Baevski & Auli 2019).
        raise ModelConfigError(
            "tie_weights: true needs output: full (the adaptive softmax has no (V, H) decoder matrix "
            "to share with the embedding); set tie_weights: false or output: full"
        )
    narrowest = int(cfg.hidden // ADAPTIVE_DIV ** len(cut))
    if narrowest < 1:
        raise ModelConfigError(
            f"output: adaptive with {len(cut)} cutoffs {cut} needs hidden >= {int(ADAPTIVE_DIV ** len(cut))} "
            f"(cluster i projects to hidden / {ADAPTIVE_DIV:g}**i dims), got hidden={cfg.hidden}; "
            "use fewer cutoffs or a larger hidden"
        )


def detach(state: State | None) -> State | None:
    """Cut the graph behind a carried state (pytorch/examples' repackage_hidden)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


def state_to_list(state: State | None) -> list[Tensor] | None:
    """A carried state as a list of CPU tensors, for a checkpoint."""
    if state is None:
        return None
    return [s.detach().cpu() for s in ((state,) if isinstance(state, Tensor) else state)]


def state_from_list(parts: list[Tensor] | None, device: torch.device) -> State | None:
    """Inverse of ``state_to_list``."""
    if parts is None:
        return None
    moved = tuple(p.to(device) for p in parts)
    return moved[0] if len(moved) == 1 else moved
