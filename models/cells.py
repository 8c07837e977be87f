"""Recurrent cell variants with nn.LSTM / nn.GRU's calling convention.

    rnn = make_recurrent("lstm_ln", input_size=200, hidden_size=200, num_layers=2, dropout=0.5)
    output, (h_n, c_n) = rnn(x)          # x (T, B, 200) -> output (T, B, 200), h_n/c_n (2, B, 200)

Variants (``KINDS``):

``lstm_peephole``
    Diagonal peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that
    time and count"): c_{t-1} feeds the input and forget gates, c_t the output gate.
``lstm_cifg``
    Coupled input and forget gates, f = 1 - i (Greff et al. 2017, "LSTM: A Search
    Space Odyssey", variant CIFG): one gate fewer, so 3H gate rows instead of 4H.
``lstm_ln``, ``gru_ln``
    Layer normalisation (Ba, Kiros & Hinton 2016, "Layer Normalization", the
    LN-LSTM of its supplementary material), see ``VariantLSTM``.

With every extra switched off, ``VariantLSTM`` / ``VariantGRU`` compute exactly
nn.LSTM / nn.GRU, with the same parameter names (``weight_ih_l0`` ...), shapes
and gate order (i, f, g, o / r, z, n): an nn.LSTM state_dict loads into them
strictly, which is how tests/test_cells.py checks outputs and gradients against
the fused kernels.

Speed: a Python loop over time steps (allowed for these variants only); the input
projection of all T steps is one matmul before the loop. ``python -m bench.cells``
(T=35, B=20, 200 units, 1 and 2 layers, 1 thread, a shared 2-core CPU, fwd+bwd)
measured 1.0-1.25x the fused nn.LSTM / nn.GRU for lstm_cifg and gru_ln, and
1.5-1.9x for lstm_peephole and lstm_ln. Neither compiler pays here: torch.jit.script is deprecated in torch 2.13
and was no faster than eager; torch.compile took 48 s to compile (and 38 s more
for each new sequence length, e.g. a short last TBPTT batch) to run ~13% faster.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]
KINDS: dict[str, tuple[Literal["lstm", "gru"], dict[str, bool]]] = {
    "lstm_peephole": ("lstm", {"peephole": True}),
    "lstm_cifg": ("lstm", {"coupled": True}),
    "lstm_ln": ("lstm", {"layer_norm": True}),
    "gru_ln": ("gru", {"layer_norm": True}),
}
# Every LSTM's forget-gate bias starts at 1, so that it starts out remembering (Gers, Schmidhuber & Cummins
# 2000, "Learning to forget";
# Jozefowicz, Zaremba & Sutskever 2015, "An empirical exploration of recurrent network architectures").
FORGET_BIAS = 1.0
LN_EPS = 1e-5  # nn.LayerNorm's default


def _ln(x: Tensor, gain: Tensor | None) -> Tensor:
    """Layer norm over the last dim with a gain only; the cell's biases stand in for β."""
    if gain is None:
        return x
    return F.layer_norm(x, (x.size(-1),), gain, None, LN_EPS)


class _Stack(nn.Module):
    """Layers, inter-layer dropout and state checks shared by VariantLSTM and VariantGRU."""

    gates: int  # gate blocks of H rows in weight_ih / weight_hh

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float, layer_norm: bool):
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"input_size, hidden_size and num_layers must be ≥ 1, got {input_size}, {hidden_size}, {num_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.layer_norm = float(dropout), layer_norm
        self.batch_first = False  # what callers of nn.LSTM may inspect
        gh = self.gates * hidden_size
        for k in range(num_layers):
            fan_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(gh, fan_in)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(gh, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(gh)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(gh)))
            if layer_norm:
                # Gains of LN(W_x x) and LN(W_h h), as in Ba et al. (2016); their β would
                # only duplicate bias_ih / bias_hh, so they are left out.
                self.register_parameter(f"ln_ih_weight_l{k}", nn.Parameter(torch.empty(gh)))
                self.register_parameter(f"ln_hh_weight_l{k}", nn.Parameter(torch.empty(gh)))

    def reset_parameters(self) -> None:
        """nn.LSTM's scheme: every tensor U(-1/sqrt(H), 1/sqrt(H)); LN gains 1 and LN biases 0."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("ln_"):
                    p.fill_(1.0 if "_weight_" in name else 0.0)
                else:
                    p.uniform_(-bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written against cuDNN's nn.LSTM."""

    def _p(self, name: str, k: int) -> Tensor | None:
        return getattr(self, f"{name}_l{k}", None)

    def _check(self, x: Tensor, state: Tensor, what: str) -> None:
        want = (self.num_layers, x.size(1), self.hidden_size)
        if tuple(state.shape) != want:
            raise ValueError(f"{what} must have shape (num_layers, B, hidden) = {want}, got {tuple(state.shape)}")

    def _input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.size(2) != self.input_size:
            raise ValueError(
                f"input must be (T, B, input_size={self.input_size}) (sequence first), got {tuple(x.shape)}"
            )

    def _project(self, x: Tensor, k: int) -> Tensor:
        """Input projection of all T steps at once (one matmul, outside the time loop)."""
        xw = x @ self._p("weight_ih", k).t()  # (T, B, G*H)
        return _ln(xw, self._p("ln_ih_weight", k)) + self._p("bias_ih", k)

    def _between(self, out: Tensor, k: int) -> Tensor:
        """nn.LSTM's inter-layer dropout: on every layer's output but the last."""
        if k < self.num_layers - 1 and self.dropout > 0:
            return F.dropout(out, self.dropout, self.training)
        return out

    def extra_repr(self) -> str:
        flags = "".join(f", {f}=True" for f in ("peephole", "coupled", "layer_norm") if getattr(self, f, False))
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, dropout={self.dropout}{flags}"


class VariantLSTM(_Stack):
    """A multi-layer LSTM with optional peepholes, coupled gates and layer norm.

    Per layer and step, with z = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh split into
    gate blocks (i, f, g, o) as in nn.LSTM, p_* the diagonal peephole vectors::

        i = σ(z_i + p_i ⊙ c_{t-1})                  # p_i = 0 without peepholes
        f = σ(z_f + p_f ⊙ c_{t-1})   or  f = 1 - i  (coupled: no f rows, no p_f)
        g = tanh(z_g)
        c_t = f ⊙ c_{t-1} + i ⊙ g
        o = σ(z_o + p_o ⊙ c_t)                      # the output peephole sees c_t
        h_t = o ⊙ tanh(c_t)         or  o ⊙ tanh(LN(c_t; α_c, β_c))  (layer_norm)

    With ``layer_norm``, the LN-LSTM of Ba et al. (2016, supplementary material):
    W_ih x_t and W_hh h_{t-1} are normalised separately, each over its whole gate
    vector of 4H units (3H coupled), with a gain α and no β of their own (b_ih and
    b_hh play that role); c_t is normalised, with gain α_c and bias β_c, only inside
    the tanh of h_t: the state carried to the next step is the un-normalised c_t,
    as in the paper::

        z = LN(W_ih x_t; α_ih) + b_ih + LN(W_hh h_{t-1}; α_hh) + b_hh

    LN(v; α) = α ⊙ (v - mean(v)) / sqrt(var(v) + 1e-5), statistics per sample and
    step (the paper has no ε; 1e-5 is nn.LayerNorm's).

    Args:
        input_size: features of x.
        hidden_size: H.
        num_layers: stacked layers.
        dropout: dropout on each layer's output except the last (as nn.LSTM).
        peephole: add p_i, p_f, p_o (Gers & Schmidhuber 2000).
        coupled: f = 1 - i (Greff et al. 2017's CIFG).
        layer_norm: Ba et al. (2016)'s LN-LSTM.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        *,
        peephole: bool = False,
        coupled: bool = False,
        layer_norm: bool = False,
    ):
        self.gates = 3 if coupled else 4
        self.peephole, self.coupled = peephole, coupled
        super().__init__(input_size, hidden_size, num_layers, dropout, layer_norm)
        for k in range(num_layers):
            if peephole:
                for gate in ("i", "o") if coupled else ("i", "f", "o"):
                    self.register_parameter(f"weight_c{gate}_l{k}", nn.Parameter(torch.empty(hidden_size)))
            if layer_norm:
                self.register_parameter(f"ln_c_weight_l{k}", nn.Parameter(torch.empty(hidden_size)))
                self.register_parameter(f"ln_c_bias_l{k}", nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        set_forget_bias(self, FORGET_BIAS)

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """Run all layers over the sequence.

        Args:
            x: (T, B, input_size), sequence first.
            state: (h_0, c_0), each (num_layers, B, H); zeros when None.

        Returns:
            output (T, B, H): the last layer's h_t for every t; and (h_n, c_n), each (num_layers, B, H).
        """
        self._input(x)
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.size(1), self.hidden_size)
            state = (zeros, zeros)
        h0, c0 = state
        self._check(x, h0, "h_0")
        self._check(x, c0, "c_0")
        hs, cs = [], []
        out = x
        for k in range(self.num_layers):
            out, h, c = self._layer(self._project(out, k), h0[k], c0[k], k)
            hs.append(h)
            cs.append(c)
            out = self._between(out, k)
        return out, (torch.stack(hs), torch.stack(cs))

    def _layer(self, xw: Tensor, h: Tensor, c: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """One layer's time loop: xw (T, B, G*H) projected inputs; h, c (B, H)."""
        w_hh_t, ln_hh = self._p("weight_hh", k).t(), self._p("ln_hh_weight", k)  # (H, G*H)
        p_i, p_f, p_o = self._p("weight_ci", k), self._p("weight_cf", k), self._p("weight_co", k)
        ln_c_w, ln_c_b = self._p("ln_c_weight", k), self._p("ln_c_bias", k)
        H = self.hidden_size
        xw = xw + self._p("bias_hh", k)  # b_hh sits outside the LN: add it for all T at once
        outs = []
        # unbind, not xw[t]: the backward of T selects would write T zero-filled (T, B, G*H) buffers
        for x_t in xw.unbind(0):
            # (B, G*H); addmm fuses the add when there is no LN in between
            z = torch.addmm(x_t, h, w_hh_t) if ln_hh is None else x_t + _ln(h @ w_hh_t, ln_hh)
            if self.coupled:
                z_i, z_g, z_o = z.split(H, dim=1)
                if p_i is not None:
                    z_i = z_i + p_i * c
                # f = 1 - i, so c_t = (1 - i) c + i g = c + i (g - c)
                c = torch.addcmul(c, torch.sigmoid(z_i), torch.tanh(z_g) - c)  # (B, H)
            else:
                if p_i is None:
                    i, f = torch.sigmoid(z[:, : 2 * H]).chunk(2, dim=1)  # one kernel for both gates
                else:
                    i, f = torch.sigmoid(z[:, :H] + p_i * c), torch.sigmoid(z[:, H : 2 * H] + p_f * c)
                c = torch.addcmul(f * c, i, torch.tanh(z[:, 2 * H : 3 * H]))  # (B, H)
                z_o = z[:, 3 * H :]
            if p_o is not None:
                z_o = z_o + p_o * c
            c_out = c if ln_c_w is None else F.layer_norm(c, (H,), ln_c_w, ln_c_b, LN_EPS)
            h = torch.sigmoid(z_o) * torch.tanh(c_out)  # (B, H)
            outs.append(h)
        return torch.stack(outs), h, c  # (T, B, H), (B, H), (B, H)


class VariantGRU(_Stack):
    """A multi-layer GRU with optional layer norm, in nn.GRU's formulation.

    Per layer and step, gate blocks (r, z, n) as in nn.GRU::

        r = σ(a_r + b_ir + u_r + b_hr)
        z = σ(a_z + b_iz + u_z + b_hz)
        n = tanh(a_n + b_in + r ⊙ (u_n + b_hn))
        h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

    where a = W_ih x_t and u = W_hh h_{t-1}, or with ``layer_norm``
    a = LN(W_ih x_t; α_ih) and u = LN(W_hh h_{t-1}; α_hh), each normalised over its
    whole 3H vector: Ba et al. (2016)'s LN-LSTM recipe (normalise the input and the
    recurrent projections separately) carried over to the GRU. nn.GRU keeps b_hn
    inside r ⊙ (...), so the biases still stand in for the LN β.

    Args:
        input_size: features of x.
        hidden_size: H.
        num_layers: stacked layers.
        dropout: dropout on each layer's output except the last (as nn.GRU).
        layer_norm: normalise the two projections.
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0, *, layer_norm: bool = False
    ):
        self.gates = 3
        super().__init__(input_size, hidden_size, num_layers, dropout, layer_norm)
        self.reset_parameters()

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run all layers over the sequence.

        Args:
            x: (T, B, input_size), sequence first.
            state: h_0 (num_layers, B, H); zeros when None.

        Returns:
            output (T, B, H) and h_n (num_layers, B, H).
        """
        self._input(x)
        if state is None:
            state = x.new_zeros(self.num_layers, x.size(1), self.hidden_size)
        self._check(x, state, "h_0")
        hs = []
        out = x
        for k in range(self.num_layers):
            out, h = self._layer(self._project(out, k), state[k], k)
            hs.append(h)
            out = self._between(out, k)
        return out, torch.stack(hs)

    def _layer(self, xw: Tensor, h: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """One layer's time loop: xw (T, B, 3H) projected inputs (b_ih included); h (B, H)."""
        w_hh_t, b_hh, ln_hh = self._p("weight_hh", k).t(), self._p("bias_hh", k), self._p("ln_hh_weight", k)
        H = self.hidden_size
        outs = []
        for x_t in xw.unbind(0):  # not xw[t]: see VariantLSTM._layer
            a_r, a_z, a_n = x_t.split(H, dim=1)
            u = torch.addmm(b_hh, h, w_hh_t) if ln_hh is None else _ln(h @ w_hh_t, ln_hh) + b_hh  # (B, 3H)
            u_r, u_z, u_n = u.split(H, dim=1)
            r = torch.sigmoid(a_r + u_r)
            z = torch.sigmoid(a_z + u_z)
            n = torch.tanh(a_n + r * u_n)
            h = n + z * (h - n)  # = (1 - z) n + z h, one op fewer
            outs.append(h)
        return torch.stack(outs), h  # (T, B, H), (B, H)


def set_forget_bias(module: nn.Module, value: float = FORGET_BIAS) -> None:
    """Make every LSTM layer's forget-gate bias sum to ``value`` (b_ih = value, b_hh = 0).

    Works on nn.LSTM and VariantLSTM (VariantGRU and nn.GRU have no forget gate and
    are left alone). A coupled LSTM has f = 1 - i = σ(-z_i), so its input-gate bias
    is set to -value: f starts at σ(value), as in the other LSTMs.
    """
    if isinstance(module, VariantLSTM) and module.coupled:
        rows, value = slice(0, module.hidden_size), -value
    elif isinstance(module, (nn.LSTM, VariantLSTM)):
        rows = slice(module.hidden_size, 2 * module.hidden_size)
    else:
        return
    with torch.no_grad():
        for k in range(module.num_layers):
            getattr(module, f"bias_ih_l{k}")[rows] = value
            getattr(module, f"bias_hh_l{k}")[rows] = 0.0


def make_recurrent(
    kind: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0
) -> nn.Module:
    """Build one of ``KINDS`` with nn.LSTM / nn.GRU's calling convention.

    Raises:
        ValueError: ``kind`` is not one of ``KINDS``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown recurrent cell kind {kind!r}; choose one of {', '.join(KINDS)}")
    base, flags = KINDS[kind]
    cls = VariantLSTM if base == "lstm" else VariantGRU
    return cls(input_size, hidden_size, num_layers, dropout, **flags)
