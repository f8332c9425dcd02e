"""The cell registry and interface: names, checkpoint keys, states, single-step equations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from charlm.cells import CELLS, GRU, LSTM, Cell, TanhRNN, cell_class
from charlm.config import MODELS
from charlm.model import CharLM, ModelConfig


def test_registry_matches_the_torch_free_model_names() -> None:
    """The CLI offers config.MODELS without importing torch: the same names, in the same order."""
    assert tuple(CELLS) == MODELS
    assert all(issubclass(cls, Cell) and cls.name == name for name, cls in CELLS.items())
    with pytest.raises(ValueError, match="unknown model 'transformer'"):
        cell_class("transformer")
    with pytest.raises(ValueError, match="unknown model"):
        CharLM(ModelConfig(vocab_size=5, model="transformer"))


PACKED = ["rnn.weight_ih_l{i}", "rnn.weight_hh_l{i}", "rnn.bias_ih_l{i}", "rnn.bias_hh_l{i}"]


@pytest.mark.parametrize(
    ("kind", "layer_keys"),
    [
        ("rnn", ["rnn.layers.{i}.W_xh", "rnn.layers.{i}.W_hh", "rnn.layers.{i}.b_h"]),
        (
            "lstm",
            ["rnn.weight_ih_l{i}", "rnn.weight_hh_l{i}", "rnn.bias_ih_l{i}", "rnn.bias_hh_l{i}"],
        ),
        (
            "gru",
            ["rnn.weight_ih_l{i}", "rnn.weight_hh_l{i}", "rnn.bias_ih_l{i}", "rnn.bias_hh_l{i}"],
        ),
    ],
)
def test_checkpoint_keys_are_those_of_format_1(kind: str, layer_keys: list[str]) -> None:
    """Checkpoints written before cells had classes load without a migration."""
    model = CharLM(ModelConfig(vocab_size=5, model=kind, hidden_size=3, num_layers=2))
    expected = ["W_hq", "b_q", "embedding.weight"]
    expected += [k.format(i=i) for i in range(2) for k in layer_keys]
    assert list(model.state_dict()) == expected


@pytest.mark.parametrize("kind", list(CELLS))
def test_state_shapes(kind: str) -> None:
    """(L, B, S): S is the hidden size, but 1.5 times it for the min cells (their expansion)."""
    cell = cell_class(kind)(4, 6, 2, 0.0, False)
    state = cell.init_state(3, "cpu", torch.float64)
    h, c = cell.split_state(state)
    S = 9 if kind in ("mingru", "minlstm") else 6
    assert cell.state_size == S
    assert h.shape == (2, 3, S) and h.dtype == torch.float64 and not h.any()
    assert (c is not None) == (kind == "lstm")
    if c is not None:
        assert c.shape == h.shape and c.data_ptr() != h.data_ptr()


def one_step_of_torch_cell(kind: str, torch_cell: nn.Module, x, h, c):
    """nn.RNNCell / nn.LSTMCell / nn.GRUCell: PyTorch's own single-step equations."""
    if kind == "lstm":
        return torch_cell(x, (h, c))
    return torch_cell(x, h), None


@pytest.mark.parametrize(
    ("cls", "torch_cls"), [(TanhRNN, nn.RNNCell), (LSTM, nn.LSTMCell), (GRU, nn.GRUCell)]
)
def test_step_equations_match_pytorchs_cells(cls: type[Cell], torch_cls: type[nn.Module]) -> None:
    """cell.step on its step_weights = PyTorch's cell with the same weights, in float64."""
    torch.manual_seed(0)
    d, H, B = 5, 4, 3
    cell = cls(d, H, 1, 0.0, False).double()
    torch_cell = torch_cls(d, H).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-1, 1)
        W_x, W_h, b_x, b_h = cell.step_weights(0)
        torch_cell.weight_ih.copy_(W_x.t())
        torch_cell.weight_hh.copy_(W_h.t())
        torch_cell.bias_ih.copy_(b_x)
        torch_cell.bias_hh.copy_(b_h)
        x, h, c = (torch.randn(*s, dtype=torch.float64) for s in ((B, d), (B, H), (B, H)))
        h = h.tanh()
        c = c if cls is LSTM else None
        got = cell.step(x @ W_x + b_x, h @ W_h + b_h, h, c)
        want = one_step_of_torch_cell(cls.name, torch_cell, x, h, c)
    for mine, theirs in zip(got, want, strict=True):
        if theirs is None:
            assert mine is None
        else:
            torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-14)


@pytest.mark.parametrize("kind", [kind for kind, cell in CELLS.items() if cell.bounded_state])
def test_declared_bounded_state_holds(kind: str) -> None:
    """|h| <= 1 after many steps from large weights and inputs, as int8 sampling assumes."""
    torch.manual_seed(1)
    model = CharLM(ModelConfig(vocab_size=7, model=kind, hidden_size=8, num_layers=2))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(50)
        _, state = model(torch.randint(0, 7, (200, 4)))
    h, _ = model.rnn.split_state(state)
    assert model.rnn.bounded_state and float(h.abs().max()) <= 1
