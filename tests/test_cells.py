"""Cell variants (models/cells.py): exact against nn.LSTM / nn.GRU with the extras off,
and against step-by-step references written here from the papers' equations."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from models.cells import KINDS, VariantGRU, VariantLSTM, make_recurrent, set_forget_bias


def is_lstm(module: nn.Module) -> bool:
    """Whether ``module``'s state is an (h, c) pair, as for nn.LSTM."""
    return isinstance(module, (nn.LSTM, VariantLSTM))


T, B, IN, H = 5, 3, 4, 6  # steps, batch, input, hidden: small, the loop is exercised, not throughput


def _randomize(module: nn.Module, seed: int) -> None:
    """Every parameter random (peepholes, LN gains and biases too), so no term hides behind a 0 or 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * 1.2 - 0.6)


def _inputs(
    lstm: bool, layers: int, dtype: torch.dtype, seed: int = 1
) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, IN, generator=gen, dtype=dtype, requires_grad=True)  # (T, B, IN)
    h0 = torch.randn(layers, B, H, generator=gen, dtype=dtype, requires_grad=True)  # (L, B, H)
    c0 = torch.randn(layers, B, H, generator=gen, dtype=dtype, requires_grad=True)
    return x, ((h0, c0) if lstm else h0)


def _loss(out: Tensor, state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """A loss that weighs every output and final state differently, so that no gradient cancels."""
    parts = [out, *(state if isinstance(state, tuple) else (state,))]
    gen = torch.Generator().manual_seed(7)
    return sum((p * torch.randn(p.shape, generator=gen, dtype=p.dtype)).sum() for p in parts)  # type: ignore[return-value]


def _run(module: nn.Module, x: Tensor, state: Tensor | tuple[Tensor, Tensor]) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Outputs and final states, and the gradients of x, the initial state and every parameter."""
    module.zero_grad(set_to_none=True)
    leaves = [x, *(state if isinstance(state, tuple) else (state,))]
    for leaf in leaves:
        leaf.grad = None
    out, final = module(x, state)
    _loss(out, final).backward()
    values = [out, *(final if isinstance(final, tuple) else (final,))]
    grads = {f"input{i}": leaf.grad.clone() for i, leaf in enumerate(leaves)}
    grads |= {name.removeprefix("module."): p.grad.clone() for name, p in module.named_parameters()}
    return [v.detach() for v in values], grads


def _assert_close(
    a: tuple[list[Tensor], dict[str, Tensor]], b: tuple[list[Tensor], dict[str, Tensor]], atol: float, rtol: float
) -> None:
    for va, vb in zip(a[0], b[0], strict=True):
        torch.testing.assert_close(va, vb, atol=atol, rtol=rtol)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=atol, rtol=rtol, msg=f"gradient of {name}")


# --- extras off: exactly nn.LSTM / nn.GRU ------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("base", ["lstm", "gru"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_extras_off_is_torch(base: str, layers: int, dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    ref = (nn.LSTM if base == "lstm" else nn.GRU)(IN, H, layers).to(dtype)
    ours = (VariantLSTM if base == "lstm" else VariantGRU)(IN, H, layers).to(dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)  # same names, shapes and gate order
    x, state = _inputs(base == "lstm", layers, dtype)
    _assert_close(_run(ours, x, state), _run(ref, x, state), atol=tol, rtol=tol)
    # and with the default zero state
    out_ref, _ = ref(x)
    out_ours, _ = ours(x)
    torch.testing.assert_close(out_ours, out_ref, atol=tol, rtol=tol)


def test_zero_peepholes_are_torch_lstm() -> None:
    """Peepholes switched off by zeroing them: the peephole LSTM is nn.LSTM again."""
    torch.manual_seed(0)
    ref = nn.LSTM(IN, H, 2).double()
    ours = make_recurrent("lstm_peephole", IN, H, 2).double()
    ours.load_state_dict(ref.state_dict(), strict=False)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.startswith("weight_c"):
                p.zero_()
    x, state = _inputs(True, 2, torch.float64)
    out, grads = _run(ours, x, state)
    ref_out, ref_grads = _run(ref, x, state)
    for a, b in zip(out, ref_out, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, atol=1e-10, rtol=1e-10)


# --- each variant against a from-scratch reference ----------------------------------------------


def _sig(z: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-z))


def _layer_norm(v: Tensor, gain: Tensor, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Ba et al. (2016) eq. 3-4 over the last dim, with the biased variance."""
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    out = gain * (v - mu) / torch.sqrt(var + eps)
    return out if bias is None else out + bias


def _ref_lstm(m: VariantLSTM, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Gers & Schmidhuber (2000) peepholes, Greff et al. (2017) CIFG, Ba et al. (2016) LN-LSTM, step by step."""
    P = dict(m.named_parameters())
    h0, c0 = state
    inp, hs, cs = x, [], []
    for k in range(m.num_layers):
        W, U = P[f"weight_ih_l{k}"], P[f"weight_hh_l{k}"]
        b = P[f"bias_ih_l{k}"] + P[f"bias_hh_l{k}"]
        h, c, outs = h0[k], c0[k], []
        for t in range(inp.shape[0]):
            wx, uh = inp[t] @ W.T, h @ U.T  # (B, G*H)
            if m.layer_norm:
                wx, uh = _layer_norm(wx, P[f"ln_ih_weight_l{k}"]), _layer_norm(uh, P[f"ln_hh_weight_l{k}"])
            a = wx + uh + b
            if m.coupled:
                ai, ag, ao = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            else:
                ai, af, ag, ao = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            if m.peephole:
                ai = ai + P[f"weight_ci_l{k}"] * c
                if not m.coupled:
                    af = af + P[f"weight_cf_l{k}"] * c
            i = _sig(ai)
            f = 1 - i if m.coupled else _sig(af)
            c = f * c + i * torch.tanh(ag)
            if m.peephole:
                ao = ao + P[f"weight_co_l{k}"] * c
            c_hat = _layer_norm(c, P[f"ln_c_weight_l{k}"], P[f"ln_c_bias_l{k}"]) if m.layer_norm else c
            h = _sig(ao) * torch.tanh(c_hat)
            outs.append(h)
        inp = torch.stack(outs)
        hs.append(h)
        cs.append(c)
    return inp, (torch.stack(hs), torch.stack(cs))


def _ref_gru(m: VariantGRU, x: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """nn.GRU's equations, with Ba et al. (2016)'s LN on W x and on U h, step by step."""
    P = dict(m.named_parameters())
    inp, hs = x, []
    for k in range(m.num_layers):
        W, U, bi, bh = P[f"weight_ih_l{k}"], P[f"weight_hh_l{k}"], P[f"bias_ih_l{k}"], P[f"bias_hh_l{k}"]
        h, outs = h0[k], []
        for t in range(inp.shape[0]):
            wx, uh = inp[t] @ W.T, h @ U.T  # (B, 3H)
            if m.layer_norm:
                wx, uh = _layer_norm(wx, P[f"ln_ih_weight_l{k}"]), _layer_norm(uh, P[f"ln_hh_weight_l{k}"])
            wx, uh = wx + bi, uh + bh
            r = _sig(wx[:, :H] + uh[:, :H])
            z = _sig(wx[:, H : 2 * H] + uh[:, H : 2 * H])
            n = torch.tanh(wx[:, 2 * H :] + r * uh[:, 2 * H :])
            h = (1 - z) * n + z * h
            outs.append(h)
        inp = torch.stack(outs)
        hs.append(h)
    return inp, torch.stack(hs)


class _Reference(nn.Module):
    """The reference, sharing the module's parameters, so that their gradients compare too."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(
        self, x: Tensor, state: Tensor | tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        if is_lstm(self.module):
            return _ref_lstm(self.module, x, state)  # type: ignore[arg-type]
        return _ref_gru(self.module, x, state)  # type: ignore[arg-type]


VARIANTS = {
    **{kind: lambda kind=kind, layers=1: make_recurrent(kind, IN, H, layers) for kind in KINDS},
    "lstm_peephole_cifg_ln": lambda layers=1: VariantLSTM(IN, H, layers, peephole=True, coupled=True, layer_norm=True),
    "lstm_peephole_ln": lambda layers=1: VariantLSTM(IN, H, layers, peephole=True, layer_norm=True),
}


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_matches_reference(name: str, layers: int) -> None:
    module = VARIANTS[name](layers=layers).double()
    _randomize(module, seed=3)
    x, state = _inputs(is_lstm(module), layers, torch.float64)
    _assert_close(_run(module, x, state), _run(_Reference(module), x, state), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gradcheck(kind: str) -> None:
    """Autograd against finite differences, input and initial state (float64, tiny)."""
    module = make_recurrent(kind, 3, 2, 2).double()
    _randomize(module, seed=5)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    if is_lstm(module):
        c0 = torch.randn(2, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b, c: module(a, (b, c))[0], (x, h0, c0))
    else:
        assert torch.autograd.gradcheck(lambda a, b: module(a, b)[0], (x, h0))


# --- the nn.LSTM contract: state, shapes, dropout, init ------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_state_carries_across_calls(kind: str) -> None:
    """TBPTT feeds the final state back in: two halves equal one whole run."""
    module = make_recurrent(kind, IN, H, 2).double()
    x = torch.randn(2 * T, B, IN, dtype=torch.float64)
    whole, final = module(x)
    first, mid = module(x[:T])
    second, final2 = module(x[T:], mid)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    for a, b in zip(
        final if isinstance(final, tuple) else (final,), final2 if isinstance(final2, tuple) else (final2,), strict=True
    ):
        assert a.shape == (2, B, H)
        torch.testing.assert_close(a, b)


def test_dropout_between_layers_only() -> None:
    torch.manual_seed(0)
    with_dropout = make_recurrent("lstm_ln", IN, H, 2, dropout=0.5).double()
    without = make_recurrent("lstm_ln", IN, H, 2, dropout=0.0).double()
    without.load_state_dict(with_dropout.state_dict())
    x = torch.randn(T, B, IN, dtype=torch.float64)
    with_dropout.eval()
    torch.testing.assert_close(with_dropout(x)[0], without(x)[0])  # eval: no dropout
    with_dropout.train()
    assert not torch.allclose(with_dropout(x)[0], without(x)[0])  # train: layer 0's output is dropped
    single = make_recurrent("gru_ln", IN, H, 1, dropout=0.5).train()
    torch.testing.assert_close(single(x.float())[0], single.eval()(x.float())[0])  # nothing after the last layer


def test_forget_bias_starts_at_one() -> None:
    for module in (VariantLSTM(IN, H, 2), VariantLSTM(IN, H, 2, peephole=True, layer_norm=True)):
        for k in range(2):
            b = getattr(module, f"bias_ih_l{k}") + getattr(module, f"bias_hh_l{k}")
            assert torch.all(b[H : 2 * H] == 1.0)
    cifg = make_recurrent("lstm_cifg", IN, H, 2)
    for k in range(2):  # f = 1 - σ(z_i) = σ(-z_i): the input-gate bias is -1, so f starts at σ(1)
        assert torch.all((getattr(cifg, f"bias_ih_l{k}") + getattr(cifg, f"bias_hh_l{k}"))[:H] == -1.0)
    fused = nn.LSTM(IN, H, 2)
    set_forget_bias(fused)
    assert torch.all((fused.bias_ih_l1 + fused.bias_hh_l1)[H : 2 * H] == 1.0)


def test_parameter_shapes() -> None:
    cifg = dict(make_recurrent("lstm_cifg", IN, H, 1).named_parameters())
    assert cifg["weight_ih_l0"].shape == (3 * H, IN)  # no forget-gate rows
    peep = dict(make_recurrent("lstm_peephole", IN, H, 1).named_parameters())
    assert {n for n in peep if n.startswith("weight_c")} == {"weight_ci_l0", "weight_cf_l0", "weight_co_l0"}
    ln = dict(make_recurrent("gru_ln", IN, H, 1).named_parameters())
    assert ln["ln_ih_weight_l0"].shape == ln["ln_hh_weight_l0"].shape == (3 * H,)


def test_bad_input_is_named() -> None:
    module = make_recurrent("lstm_peephole", IN, H, 2)
    with pytest.raises(ValueError, match="sequence first"):
        module(torch.randn(T, IN))
    with pytest.raises(ValueError, match="c_0 must have shape"):
        module(torch.randn(T, B, IN), (torch.zeros(2, B, H), torch.zeros(1, B, H)))
    with pytest.raises(ValueError, match="lstm_cifg"):
        make_recurrent("lstm_typo", IN, H)
    with pytest.raises(ValueError, match="dropout"):
        make_recurrent("gru_ln", IN, H, 2, dropout=1.0)
