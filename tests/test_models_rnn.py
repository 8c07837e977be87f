"""RNNLanguageModel: every cell of the factory, tied weights, forget-gate bias, state helpers."""

from __future__ import annotations

import pytest
import torch

from bench.harness import section
from models.config import ModelConfig, ModelConfigError, default_emb_dim
from models.evaluate import lm_loss
from models.rnn import CELLS, RNNLanguageModel, detach, register_cell, state_from_list, state_to_list

V, T, B = 11, 7, 3


def config(cell: str, **shape: object) -> ModelConfig:
    """params.yaml's word model with another cell and ``shape``, over a vocabulary of V."""
    return ModelConfig.from_params(section("train.word", cell=cell, **shape), vocab_size=V)


ALL_CELLS = sorted(CELLS)  # the fused four and models/cells.py's variants


@pytest.mark.slow
@pytest.mark.parametrize("cell", ALL_CELLS)
def test_every_cell_shapes_and_learns_a_tiny_batch(cell: str) -> None:
    torch.manual_seed(0)
    model = RNNLanguageModel(config(cell, emb_dim=8, hidden=16, layers=2))
    x = torch.randint(0, V, (T, B))
    logits, state = model(x)
    assert logits.shape == (T, B, V)
    for s in state if isinstance(state, tuple) else (state,):
        assert s.shape == (2, B, 16)
    # The state carries: a second chunk continues from it.
    logits2, _ = model(x, detach(state))
    assert logits2.shape == (T, B, V)

    y = torch.randint(0, V, (T, B))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(60):  # the coupled-gate LSTM, with fewer parameters, needs more than 40
        loss = lm_loss(model(x)[0], y) / y.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_one_step_kernels_match_the_sequence_kernels(cell: str) -> None:
    torch.manual_seed(0)
    model = RNNLanguageModel(config(cell, emb_dim=8, hidden=16, layers=2, dropout=0.5)).eval()
    x = torch.randint(0, V, (6, B))
    full, want = model(x)
    state, steps = None, []
    for t in range(6):
        logits, state = model.step(x[t : t + 1], state)  # (1, B, V)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps), full, atol=1e-5)
    for a, b in zip(state if isinstance(state, tuple) else (state,), want if isinstance(want, tuple) else (want,)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_tied_weights_share_one_matrix(cell: str) -> None:
    model = RNNLanguageModel(config(cell, emb_dim=16, hidden=16, layers=1, tie_weights=True))
    assert model.decoder.weight is model.encoder.weight
    assert model.decoder.weight.shape == (V, 16)
    assert model(torch.zeros(T, B, dtype=torch.long))[0].shape == (T, B, V)
    n_untied = sum(p.numel() for p in RNNLanguageModel(config(cell, emb_dim=16, hidden=16, layers=1)).parameters())
    assert sum(p.numel() for p in model.parameters()) == n_untied - V * 16


def test_tied_weights_of_different_sizes_raise_a_value_error_with_the_fix() -> None:
    with pytest.raises(ValueError, match="tie_weights needs emb_dim == hidden, got emb_dim=8, hidden=16") as e:
        RNNLanguageModel(config("lstm", emb_dim=8, hidden=16, tie_weights=True))
    assert isinstance(e.value, ModelConfigError)


def test_unknown_cell_names_the_choices_and_register_cell_extends_the_factory() -> None:
    with pytest.raises(
        ModelConfigError,
        match=(
            "unknown cell 'lstmm'; choose one of "
            "gru, gru_ln, lstm, lstm_cifg, lstm_ln, lstm_peephole, rnn_relu, rnn_tanh"
        ),
    ):
        RNNLanguageModel(config("lstmm"))
    register_cell("tiny_gru", lambda i, h, n, d: torch.nn.GRU(i, h, n))
    try:
        logits, _ = RNNLanguageModel(config("tiny_gru", emb_dim=4, hidden=4, layers=1))(
            torch.zeros(2, 1, dtype=torch.long)
        )
        assert logits.shape == (2, 1, V)
    finally:
        del CELLS["tiny_gru"]


def test_lstm_forget_gate_bias_starts_at_one() -> None:
    rnn = RNNLanguageModel(config("lstm", emb_dim=4, hidden=5, layers=2)).rnn
    for k in range(2):
        total = getattr(rnn, f"bias_ih_l{k}") + getattr(rnn, f"bias_hh_l{k}")
        assert torch.equal(total[5:10], torch.ones(5))  # gates i, f, g, o: f is rows H:2H


def test_config_from_params_defaults_emb_dim_to_the_fourth_root_of_the_vocabulary() -> None:
    assert default_emb_dim(49) == 3 and default_emb_dim(10_000) == 10
    cfg = ModelConfig.from_params(section("train.word", emb_dim=None, hidden=20, cell="gru"), vocab_size=10_000)
    assert (cfg.emb_dim, cfg.hidden, cfg.cell) == (10, 20, "gru")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    # A checkpoint written before output and cutoffs existed loads as a full softmax.
    older = {k: v for k, v in cfg.to_dict().items() if k not in ("output", "cutoffs")}
    assert ModelConfig.from_dict(older) == cfg and (cfg.output, cfg.cutoffs) == ("full", ())


def test_state_round_trips_through_a_checkpoint_list() -> None:
    h, c = torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    back = state_from_list(state_to_list((h, c)), torch.device("cpu"))
    assert torch.equal(back[0], h) and torch.equal(back[1], c)
    assert torch.equal(state_from_list(state_to_list(h), torch.device("cpu")), h)
    assert state_to_list(None) is None
