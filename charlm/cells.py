"""Recurrent cells: one class per kind, owning everything that differs between kinds.

A cell is the stack of recurrent layers of a `CharLM` (its `rnn` attribute, so checkpoint keys
stay `rnn.layers.0.W_xh` or `rnn.weight_ih_l0`). Each kind says:
- its parameters, their initialisation (`textbook_init`) and its state (`init_state`);
- the sequence forward pass (`forward(X, state, dropout)`, as nn.LSTM's: outputs and final
  state; `dropout=False` drops nothing between layers even in training mode);
- the single-step equations on the pre-activations xW = x W_x + b_x and hW = h W_h + b_h
  (`step_weights`, `step`): what `charlm.reference` runs, as the textbook writes them;
- how the fast sampler (`charlm.stepper`) lays out its fused weights and updates its buffers in
  place (`fused_weights`, `fast_views`, `fast_step`), and whether the hidden state is bounded,
  |h| <= 1, which int8 sampling needs to quantize h without measuring its range.

`CELLS` is the one place that maps a model name to its class; `charlm.config.MODELS` lists the
same names without importing torch, for the command line's choices.

The hand-written RNN follows the textbook equations (Dive into Deep Learning, 9.5):

    H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)

Two things make it fast without hiding the maths:
- the input projection X_t W_xh + b_h of all T steps is one matmul (or, for one-hot input, a row
  lookup of W_xh: one-hot times a matrix selects a row), done before the time loop;
- the time loop is a custom autograd Function whose backward pass (BPTT) only propagates dH
  through the loop and forms dW_hh as one large matmul after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
Tanh = Callable[..., torch.Tensor]  # tanh(x, out=...): torch.tanh, or the stepper's own


class Dropout(nn.Module):
    """nn.Dropout's distribution and scaling, with the mask drawn by torch.rand: on a CPU,
    nn.Dropout's bernoulli_ took a fifth of a default training step (profiled), this under
    half of that."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.p:
            return X
        if self.p == 1:
            return X * 0  # as nn.Dropout(1): every element dropped
        keep = torch.rand(X.shape, device=X.device) >= self.p  # P(keep) = 1 - p
        return X.mul(keep).div_(1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class StepWeights(NamedTuple):
    """Layer i as the equations use it: xW = x W_x + b_x and hW = h W_h + b_h, gates as columns."""

    W_x: torch.Tensor  # (d, G)
    W_h: torch.Tensor  # (H, G)
    b_x: torch.Tensor  # (G,)
    b_h: torch.Tensor  # (G,)


class FusedWeights(NamedTuple):
    """Layer i for the fast sampler: pre-activations (x W_x + b) + (h W_h + r), in its gate order.

    b carries every bias that can be added on the input side; r what must stay with h W_h.
    """

    W_x: torch.Tensor
    W_h: torch.Tensor
    b: torch.Tensor
    r: torch.Tensor


class Cell(nn.Module):
    """The interface `CharLM` and the samplers use; a subclass is one kind of recurrent cell."""

    name: ClassVar[str]  # the --model name
    gates: ClassVar[int]  # pre-activation columns per hidden unit: G = gates * H
    textbook_init: ClassVar[bool]  # init "auto": textbook N(0, std^2) if True, else pytorch
    bounded_state: ClassVar[bool]  # every |h| <= 1: int8 may quantize h as round(127 h)
    num_layers: int
    hidden_size: int

    def dense_input(self, X: torch.Tensor, vocab_size: int, dtype: torch.dtype) -> torch.Tensor:
        """What the first layer takes without an embedding: (T, B) ids -> (T, B, V) one-hot."""
        return F.one_hot(X, vocab_size).to(dtype)

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> State:
        """The zero state at the start of a sequence: (L, B, H)."""
        return torch.zeros(
            self.num_layers, batch_size, self.hidden_size, device=device, dtype=dtype
        )

    def split_state(self, state: State) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(h, c) of a state: c is None for a cell without a memory cell."""
        return state, None

    def step_weights(self, i: int) -> StepWeights:
        raise NotImplementedError

    def step(
        self, xW: torch.Tensor, hW: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One step of one layer from its pre-activations: the new (h, c)."""
        raise NotImplementedError

    def fused_weights(self, i: int) -> FusedWeights:
        """The step weights with as many biases as the equations allow on the input side."""
        raise NotImplementedError

    @staticmethod
    def fast_views(A: torch.Tensor, R: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Any:
        """The views of one layer's buffers that `fast_step` works on, made once."""
        raise NotImplementedError

    @staticmethod
    def fast_step(views: Any, tmp: torch.Tensor, tanh: Tanh) -> None:
        """h (and c) <- one step, in place, from A = x W_x + b and R = h W_h + r."""
        raise NotImplementedError


class TanhRecurrence(torch.autograd.Function):
    """Hs[t] = tanh(A[t] + Hs[t-1] W_hh), Hs[-1] = H0, with A = X W_xh + b_h precomputed.

    Shapes: A (T, B, H), W_hh (H, H), H0 (B, H) -> Hs (T, B, H).
    """

    @staticmethod
    def forward(ctx, A: torch.Tensor, W_hh: torch.Tensor, H0: torch.Tensor) -> torch.Tensor:
        Hs = torch.empty_like(A)
        H = H0
        # in full precision even under --amp: the small per-step matmuls gain little from
        # bfloat16, casting at every step would cost more than it saves, and H_t stays exact
        with torch.autocast(A.device.type, enabled=False):
            for t in range(A.shape[0]):
                H = torch.addmm(A[t], H, W_hh, out=Hs[t]).tanh_()  # in place: no temporaries
        ctx.save_for_backward(W_hh, H0, Hs)
        return Hs

    @staticmethod
    @once_differentiable
    def backward(ctx, dHs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        W_hh, H0, Hs = ctx.saved_tensors
        T, H = Hs.shape[0], Hs.shape[2]
        tanh_grad = 1 - Hs * Hs  # (T, B, H): d tanh(a) / da = 1 - tanh(a)^2, for all steps at once
        W_hh_T = W_hh.t()
        dA = torch.empty_like(Hs)  # dL/dA_t, filled from the last step back
        torch.mul(dHs[-1], tanh_grad[-1], out=dA[-1])
        for t in range(T - 1, 0, -1):
            # dH_{t-1} = dHs_{t-1} + dA_t W_hh^T  (from the output, and from step t)
            # dA_{t-1} = dH_{t-1} * (1 - H_{t-1}^2)
            torch.addmm(dHs[t - 1], dA[t], W_hh_T, out=dA[t - 1]).mul_(tanh_grad[t - 1])
        dH0 = dA[0] @ W_hh_T
        # dW_hh = sum_t H_{t-1}^T dA_t: one matmul over steps 1..T-1, plus step 0's H0^T dA_0
        dW_hh = torch.addmm(H0.t() @ dA[0], Hs[:-1].reshape(-1, H).t(), dA[1:].reshape(-1, H))
        return dA, dW_hh, dH0


class RNNLayer(nn.Module):
    """One layer of the hand-written RNN: parameters W_xh (d, H), W_hh (H, H), b_h (H,)."""

    def __init__(self, input_size: int, hidden_size: int, one_hot: bool = False) -> None:
        super().__init__()
        self.one_hot = one_hot  # then the input is ids and X_t W_xh is row X_t of W_xh
        self.W_xh = nn.Parameter(torch.empty(input_size, hidden_size))
        self.W_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b_h = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, X: torch.Tensor, H0: torch.Tensor) -> torch.Tensor:
        """X: (T, B) ids if one-hot, else (T, B, d); H0: (B, H) -> Hs (T, B, H)."""
        if self.one_hot:
            A = F.embedding(X, self.W_xh) + self.b_h  # (T, B, H)
        else:
            T, B, d = X.shape
            A = torch.addmm(self.b_h, X.reshape(T * B, d), self.W_xh).view(T, B, -1)
        # under --amp, A from dense input is bfloat16; the recurrence runs in full precision
        return TanhRecurrence.apply(A.to(self.W_hh.dtype), self.W_hh, H0)


class TanhRNN(Cell):
    """A stack of hand-written tanh RNN layers with dropout between them (like nn.RNN).

    Step: h = tanh(x W_xh + b_h + h W_hh).
    """

    name = "rnn"
    gates = 1
    textbook_init = True
    bounded_state = True  # tanh

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, dropout: float, one_hot: bool
    ) -> None:
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.layers = nn.ModuleList(
            RNNLayer(input_size if i == 0 else hidden_size, hidden_size, one_hot and i == 0)
            for i in range(num_layers)
        )
        self.dropout = Dropout(dropout)

    def dense_input(self, X: torch.Tensor, vocab_size: int, dtype: torch.dtype) -> torch.Tensor:
        return X  # ids: the first layer looks up rows of W_xh

    def forward(
        self, X: torch.Tensor, H0: torch.Tensor, dropout: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """X: (T, B) or (T, B, d); H0: (L, B, H) -> outputs (T, B, H), H_T (L, B, H)."""
        finals = []
        for i, layer in enumerate(self.layers):
            if i > 0 and dropout:
                X = self.dropout(X)
            X = layer(X, H0[i])
            finals.append(X[-1])
        return X, torch.stack(finals)

    def step_weights(self, i: int) -> StepWeights:
        layer = self.layers[i]
        return StepWeights(layer.W_xh, layer.W_hh, layer.b_h, torch.zeros_like(layer.b_h))

    def step(
        self, xW: torch.Tensor, hW: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.tanh(xW + hW), c

    def fused_weights(self, i: int) -> FusedWeights:
        layer = self.layers[i]
        return FusedWeights(layer.W_xh, layer.W_hh, layer.b_h, torch.zeros_like(layer.b_h))

    class Views(NamedTuple):
        A: torch.Tensor
        R: torch.Tensor
        h: torch.Tensor

    @staticmethod
    def fast_views(A: torch.Tensor, R: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Views:
        return TanhRNN.Views(A, R, h)

    @staticmethod
    def fast_step(views: Views, tmp: torch.Tensor, tanh: Tanh) -> None:
        A, R, h = views
        tanh(A.add_(R), out=h)


class _TorchCell(Cell):
    """nn.LSTM / nn.GRU as a cell: their packed weights, gate blocks along dim 0, x W^T + b."""

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, dropout: float, one_hot: bool
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, dropout=dropout)  # dense input

    def forward(self, X: torch.Tensor, H0: State, dropout: bool = True) -> tuple[Any, State]:
        """nn.LSTM's / nn.GRU's forward; `dropout=False` runs its kernel without the dropout
        between layers that its training mode would apply (the mode itself is not touched)."""
        if dropout or not self.training or not self.dropout:
            return super().forward(X, H0)
        kernel = torch.lstm if isinstance(H0, tuple) else torch.gru  # what nn.LSTM/GRU call
        args = (self._flat_weights, self.bias, self.num_layers, 0.0, False, False, False)
        out, *state = kernel(X, H0, *args)
        return out, tuple(state) if isinstance(H0, tuple) else state[0]

    def step_weights(self, i: int) -> StepWeights:
        return StepWeights(
            getattr(self, f"weight_ih_l{i}").t(),
            getattr(self, f"weight_hh_l{i}").t(),
            getattr(self, f"bias_ih_l{i}"),
            getattr(self, f"bias_hh_l{i}"),
        )


class LSTM(_TorchCell, nn.LSTM):
    """nn.LSTM. Step, gates in nn.LSTM's order (i, f, g, o):

    i, f, o = sigmoid(.)   g = tanh(.)   c = f c + i g   h = o tanh(c)
    """

    name = "lstm"
    gates = 4
    textbook_init = False
    bounded_state = True  # o in (0, 1) times tanh(c)

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> State:
        """(h, c), each (L, B, H)."""
        h = super().init_state(batch_size, device, dtype)
        return h, h.clone()

    def split_state(self, state: State) -> tuple[torch.Tensor, torch.Tensor | None]:
        return state

    def step(
        self, xW: torch.Tensor, hW: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        i, f, g, o = (xW + hW).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def fused_weights(self, i: int) -> FusedWeights:
        """Gates reordered to (i, f, o, 2g): one sigmoid for all four.

        tanh(g) = 2 sigmoid(2g) - 1, and doubling is exact in floating point.
        """
        H = self.hidden_size

        def reorder(w: torch.Tensor) -> torch.Tensor:  # gate blocks along dim 0
            return torch.cat([w[: 2 * H], w[3 * H :], 2 * w[2 * H : 3 * H]])

        W_x, W_h = getattr(self, f"weight_ih_l{i}"), getattr(self, f"weight_hh_l{i}")
        b = getattr(self, f"bias_ih_l{i}") + getattr(self, f"bias_hh_l{i}")
        W_x, W_h, b = (reorder(w) for w in (W_x, W_h, b))
        return FusedWeights(W_x.t(), W_h.t(), b, torch.zeros_like(b))

    class Views(NamedTuple):
        A: torch.Tensor
        R: torch.Tensor
        c: torch.Tensor
        h: torch.Tensor
        i: torch.Tensor  # the gates, column blocks of A
        f: torch.Tensor
        o: torch.Tensor
        s: torch.Tensor  # sigmoid(2g)

    @staticmethod
    def fast_views(A: torch.Tensor, R: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Views:
        return LSTM.Views(A, R, c, h, *A.split(h.shape[-1], dim=1))

    @staticmethod
    def fast_step(views: Views, tmp: torch.Tensor, tanh: Tanh) -> None:
        A, R, c, h, i, f, o, s = views
        A.add_(R).sigmoid_()  # s = sigmoid(2g): tanh(g) = 2s - 1
        c.mul_(f).addcmul_(i, s, value=2).sub_(i)  # c = f c + i tanh(g)
        torch.mul(o, tanh(c, out=tmp), out=h)  # h = o tanh(c)


class GRU(_TorchCell, nn.GRU):
    """nn.GRU. Step, gates in nn.GRU's order (r, z, n):

    r, z = sigmoid(xW + hW)   n = tanh(xW_n + r hW_n)   h = (1 - z) n + z h
    """

    name = "gru"
    gates = 3
    textbook_init = False
    bounded_state = True  # a convex mix of tanh and the previous h, from h_0 with |h_0| <= 1

    def step(
        self, xW: torch.Tensor, hW: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x_r, x_z, x_n = xW.chunk(3, dim=-1)
        h_r, h_z, h_n = hW.chunk(3, dim=-1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h, c

    def fused_weights(self, i: int) -> FusedWeights:
        """r and z take both biases on the input side; n keeps b_hn inside r (h W_hn + b_hn)."""
        W_x, W_h, b_x, b_h = self.step_weights(i)
        b_hr, b_hz, b_hn = b_h.split(self.hidden_size)
        zero = torch.zeros_like(b_hn)
        return FusedWeights(
            W_x, W_h, b_x + torch.cat([b_hr, b_hz, zero]), torch.cat([zero, zero, b_hn])
        )

    class Views(NamedTuple):
        rz: torch.Tensor  # A's r and z columns
        R_rz: torch.Tensor
        r: torch.Tensor
        z: torch.Tensor
        A_n: torch.Tensor
        R_n: torch.Tensor
        h: torch.Tensor

    @staticmethod
    def fast_views(A: torch.Tensor, R: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Views:
        H = h.shape[-1]
        rz = A[:, : 2 * H]
        return GRU.Views(rz, R[:, : 2 * H], rz[:, :H], rz[:, H:], A[:, 2 * H :], R[:, 2 * H :], h)

    @staticmethod
    def fast_step(views: Views, tmp: torch.Tensor, tanh: Tanh) -> None:
        rz, R_rz, r, z, A_n, R_n, h = views
        rz.add_(R_rz).sigmoid_()
        n = tanh(torch.addcmul(A_n, r, R_n, out=tmp), out=tmp)  # n = tanh(A_n + r R_n)
        h.sub_(n).mul_(z).add_(n)  # h' = (1 - z) n + z h = n + z (h - n)


CELLS: dict[str, type[Cell]] = {cell.name: cell for cell in (TanhRNN, LSTM, GRU)}


def cell_class(name: str) -> type[Cell]:
    """The cell registered under a model name."""
    if name not in CELLS:
        raise ValueError(f"unknown model {name!r}")
    return CELLS[name]
