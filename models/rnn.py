"""``RNNLanguageModel``: embedding → stacked recurrent cell → linear decoder, as in
pytorch/examples' word_language_model, built through one factory.

    model = build_model(ModelConfig(vocab_size=49, cell="lstm", emb_dim=32, hidden=128, layers=1))
    logits, state = model(x)                  # x (T, B) int64 -> logits (T, B, V)
    logits, state = model(x_next, state)      # carry the state (TBPTT, stateful sampling)

Tensors are sequence-first (T, B), the layout of torch's fused nn.LSTM / nn.GRU /
nn.RNN kernels and of models/cells.py's variants, so any of them plugs in.

Adding a cell type: ``register_cell("name", builder)`` where ``builder(input_size,
hidden_size, num_layers, dropout)`` returns a module with nn.LSTM's calling
convention (``output, state = rnn(x, state)``, x (T, B, input_size), state a
tensor or a tuple of tensors, each (layers, B, hidden)).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import cells
from models.config import ModelConfig, ModelConfigError

State = Tensor | tuple[Tensor, ...]  # GRU / RNN: h (L, B, H); LSTM: (h, c), each (L, B, H)
CellBuilder = Callable[[int, int, int, float], nn.Module]

INIT_RANGE = 0.1  # embedding and decoder ~ U(-0.1, 0.1), as pytorch/examples


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


# models/cells.py's variants (seeds 000-002): peephole, coupled-gate and layer-normalised
# LSTMs and a layer-normalised GRU. A Python loop over time, so slower than the fused cells.
for _kind in sorted(cells.KINDS):
    register_cell(_kind, functools.partial(cells.make_recurrent, _kind))


class RNNLanguageModel(nn.Module):
    """Next-token model over a fixed vocabulary; dropout on the input, between layers and on the output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.cell not in CELLS:
            raise ModelConfigError(f"unknown cell {cfg.cell!r}; choose one of {', '.join(sorted(CELLS))}")
        if cfg.tie_weights and cfg.emb_dim != cfg.hidden:
            raise ModelConfigError(
                f"tie_weights needs emb_dim == hidden, got emb_dim={cfg.emb_dim}, hidden={cfg.hidden}; "
                "set emb_dim to the hidden size or tie_weights: false"
            )
        self.cfg = cfg
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.rnn = CELLS[cfg.cell](cfg.emb_dim, cfg.hidden, cfg.layers, cfg.dropout)
        self.decoder = nn.Linear(cfg.hidden, cfg.vocab_size)
        if cfg.tie_weights:
            self.decoder.weight = self.encoder.weight  # "Using the Output Embedding..." (Press & Wolf 2017)
        nn.init.uniform_(self.encoder.weight, -INIT_RANGE, INIT_RANGE)
        if not cfg.tie_weights:
            nn.init.uniform_(self.decoder.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.zeros_(self.decoder.bias)
        cells.set_forget_bias(self.rnn)  # LSTMs start out remembering (Gers et al. 2000)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x (T, B) token ids -> logits (T, B, V) and the state after the last step."""
        emb = self.drop(self.encoder(x))  # (T, B, E)
        out, state = self.rnn(emb, state)  # (T, B, H)
        return self.decoder(self.drop(out)), state  # (T, B, V)


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
            w = (getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}"),
                 getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}"))  # fmt: skip
            if lstm:
                inp, c = cell(inp, (state[0][k], state[1][k]), *w)  # (B, H) each
                cs.append(c)
            else:
                inp = cell(inp, state[k], *w)
            hs.append(inp)
        h = torch.stack(hs) if len(hs) > 1 else hs[0][None]  # (L, B, H)
        new = (h, torch.stack(cs) if len(cs) > 1 else cs[0][None]) if lstm else h
        return F.linear(inp, self.decoder.weight, self.decoder.bias)[None], new  # (1, B, V)


_FUSED = (nn.LSTM, nn.GRU, nn.RNN)
_CELL_KERNELS = {"LSTM": torch.lstm_cell, "GRU": torch.gru_cell, "RNN_TANH": torch.rnn_tanh_cell,
                 "RNN_RELU": torch.rnn_relu_cell}  # fmt: skip


def build_model(cfg: ModelConfig) -> RNNLanguageModel:
    return RNNLanguageModel(cfg)


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
