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
  |h| <= 1, which int8 sampling needs to quantize h without measuring its range;

- what happens around and between its layers, where it is more than "the layer above takes h":
  `stream_in`, `layer_input`, `between`, `stream_out` (identities for the RNN, LSTM and GRU;
  the residual blocks of the min cells), their name and parameters for an exporter that runs
  them in another language (`hooks`, `hook_weights`), and how the fast sampler lays out a whole
  step (`fast_plan`: by default the fused layout above, one matmul per layer).

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

import math
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


class FastStage(NamedTuple):
    """One stage of a fast step: `op(views, tmp, tanh)` updates buffers in place, then the
    stepper copies x into x_m (x in the matmuls' dtype; None: the matmuls read x itself) and
    runs `gemm` (a `charlm.stepper.Affine` on x_m or x)."""

    op: Callable[[Any, torch.Tensor, Tanh], None]
    views: Any
    x: torch.Tensor
    x_m: torch.Tensor | None
    gemm: Any
    on_load: bool  # the matmul reads the state only: run again when a state is loaded


class FastPlan(NamedTuple):
    """A whole fast step as the cell lays it out (`Cell.fast_plan`)."""

    table: torch.Tensor  # (V, width): what a step looks up for each character, into A
    A: torch.Tensor  # (N, width): the buffer the lookup fills
    stages: list[FastStage]  # run in order after the lookup
    logits: torch.Tensor  # (N, V): written by the last stage's matmul
    carried: list[torch.Tensor]  # matmul outputs a step carries to the next, besides the states


def init_weight(p: torch.Tensor, init: str, std: float, bound: float) -> None:
    """textbook: a matrix ~ N(0, std^2), a vector 0. pytorch: U(-bound, bound)."""
    with torch.no_grad():
        if init == "textbook":
            nn.init.normal_(p, 0.0, std) if p.dim() > 1 else p.zero_()
        else:
            nn.init.uniform_(p, -bound, bound)


class Cell(nn.Module):
    """The interface `CharLM` and the samplers use; a subclass is one kind of recurrent cell."""

    name: ClassVar[str]  # the --model name
    gates: ClassVar[int]  # pre-activation columns per state unit: G = gates * state_size
    textbook_init: ClassVar[bool]  # init "auto": textbook N(0, std^2) if True, else pytorch
    bounded_state: ClassVar[bool]  # every |h| <= 1: int8 may quantize h as round(127 h)
    # the hooks below by name, for an exporter that runs them in another language (the page:
    # charlm/templates/hooks/<name>.js): "stack", the identities, or a subclass's own
    hooks: ClassVar[str] = "stack"
    num_layers: int
    hidden_size: int

    @property
    def state_size(self) -> int:
        """Units of a layer's state h (and c): the hidden size, unless the cell expands it."""
        return self.hidden_size

    @classmethod
    def inner_dropout(cls, p: float, num_layers: int) -> float:
        """The dropout the cell applies inside itself: between layers, so none with one."""
        return p if num_layers > 1 else 0.0

    @classmethod
    def activation_floats(cls, hidden_size: int, num_layers: int) -> int:
        """Floats a training step keeps per character (the memory estimate): gates, states."""
        return 6 * hidden_size * num_layers

    def init_parameters(self, init: str, std: float) -> None:
        """Every parameter by the rule `init_weight` states, U(+-1/sqrt(H)) for pytorch."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init_weight(p, init, std, bound)

    def dense_input(self, X: torch.Tensor, vocab_size: int, dtype: torch.dtype) -> torch.Tensor:
        """What the first layer takes without an embedding: (T, B) ids -> (T, B, V) one-hot."""
        return F.one_hot(X, vocab_size).to(dtype)

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> State:
        """The zero state at the start of a sequence: (L, B, state_size)."""
        return torch.zeros(self.num_layers, batch_size, self.state_size, device=device, dtype=dtype)

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

    # Around the layers, for one step or a whole window alike (the plain stepper's hooks):
    # x_0 = stream_in(input); layer i takes layer_input(i, x_i) and gives h_i; x_{i+1} =
    # between(i, x_i, h_i); the output layer takes stream_out(x_L). Here: the next layer takes h.

    def stream_in(self, X: torch.Tensor) -> torch.Tensor:
        return X

    def layer_input(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def between(
        self, i: int, x: torch.Tensor, h: torch.Tensor, drop: Dropout | None = None
    ) -> torch.Tensor:
        return h

    def stream_out(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def hook_weights(self) -> dict[str, torch.Tensor]:
        """The parameters the hooks use, by their keys, matrices as x W takes them (in, out):
        what an exporter carries besides the step weights. None here."""
        return {}

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

    def fast_plan(
        self,
        lay: Any,
        states: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        emb: torch.Tensor | None,
        W_out: torch.Tensor,
        b_out: torch.Tensor,
    ) -> FastPlan:
        """The fast step's stages on the stepper's `lay` (`charlm.stepper.Layout`: its `new`
        and `affine`), states (h, c, h_m: (L, N, S) each) and output weights: one matmul per
        layer, h_l [W_h | W_next] + [r | b_next], which gives R_l for the next step and the
        layer above's input term A_{l+1} (the last layer's: the logits)."""
        h, c, h_m = states
        weights = [self.fused_weights(i) for i in range(self.num_layers)]
        first = weights[0]
        table = (emb @ first.W_x if emb is not None else first.W_x) + first.b
        A = A_0 = lay.new(lay.N, first.W_x.shape[1])
        stages = []
        for i, w in enumerate(weights):
            W_next, b_next = (
                (weights[i + 1].W_x, weights[i + 1].b) if i + 1 < len(weights) else (W_out, b_out)
            )
            gemm = lay.affine(torch.cat([w.r, b_next]), h_m[i], torch.cat([w.W_h, W_next], 1))
            out = gemm.out.view(lay.N, -1)
            G = w.W_h.shape[1]
            R, A_next = out[:, :G], out[:, G : G + W_next.shape[1]]
            x_m = None if h_m is h else h_m[i]
            views = self.fast_views(A, R, h[i], c[i])
            stages.append(FastStage(self.fast_step, views, h[i], x_m, gemm, True))
            A = A_next
        return FastPlan(table, A_0, stages, A, [stage.gemm.out for stage in stages])


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


# The min cells (Feng, Tung, Ahmed, Bengio, Hajimirsadeghi 2024, "Were RNNs All We Needed?"):
# gates that read the input only, so that a window's recurrence is one linear scan
# h_t = a_t h_{t-1} + b_t with a, b known for every t before it starts.

EPS = 1e-6  # RMS normalisation: x / sqrt(mean(x^2) + EPS)
EXPANSION = 1.5  # state units per hidden unit (the paper's expansion factor)
FF_MULT = 4  # the feed-forward block's width per hidden unit
SCANS = ("sweep", "log")  # how a window's scan runs: see MinCell.scan


def g(x: torch.Tensor) -> torch.Tensor:
    """The paper's activation that keeps states positive: x + 1/2 for x >= 0, else sigmoid(x).

    Written as sigmoid(min(x, 0)) + relu(x): the same values (sigmoid(0) = 1/2 exactly).
    """
    return torch.sigmoid(x.clamp(max=0)) + torch.relu(x)


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log g(x): log(x + 1/2) for x >= 0, log sigmoid(x) below; written without a branch as
    log sigmoid(min(x, 0)) + log1p(2 relu(x)), finite for every x."""
    return F.logsigmoid(x.clamp(max=0)) + torch.log1p(2 * torch.relu(x))


class GatedScan(torch.autograd.Function):
    """h_t = a_t h_{t-1} + b_t with a = sigmoid(-s), b = sigmoid(s) g(k_h) (z = sigmoid(s), the
    update coefficient), for t = 0..T-1 from h_{-1} = h0: one elementwise sweep over time.

    Shapes: s, k_h (T, B, S), h0 (B, S) -> hs (T, B, S), in h0's precision whatever the
    pre-activations' (bfloat16 under --amp). Every step is one fused multiply-add on B x S
    elements; the backward pass is the same sweep run backwards, dh_{t-1} = dhs_{t-1} +
    a_t dh_t, then every other derivative at once, from a and g kept from the forward pass:

        ds = a (1 - a) dh (g - h_{t-1})      dk_h = (1 - a) dh g'(k_h)      dh0 = a_0 dh_0

    with g' = 1 where k_h >= 0, else g (1 - g) (there g is the sigmoid). Written by hand, as
    the RNN's recurrence is: autograd through the same ops took several times the passes.
    """

    @staticmethod
    def forward(ctx, s: torch.Tensor, k_h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        a = s.to(h0.dtype).neg().sigmoid_()  # 1 - z
        k = k_h.to(h0.dtype)
        g_ = k.clamp(max=0).sigmoid_().add_(k.clamp(min=0))
        b = torch.addcmul(g_, g_, a, value=-1)  # z g = (1 - a) g
        hs = torch.empty_like(b)
        h = h0
        for t in range(a.shape[0]):
            h = torch.addcmul(b[t], a[t], h, out=hs[t])
        ctx.save_for_backward(a, g_, k, h0, hs)
        ctx.dtypes = s.dtype, k_h.dtype
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, g_, k, h0, hs = ctx.saved_tensors
        dh = torch.empty_like(hs)  # dL/dh_t through every path, filled from the last step back
        dh[-1] = dhs[-1]
        for t in range(a.shape[0] - 1, 0, -1):
            torch.addcmul(dhs[t - 1], a[t], dh[t], out=dh[t - 1])
        ds = g_.clone()  # g - h_{t-1}
        ds[0].sub_(h0)
        ds[1:].sub_(hs[:-1])
        ds.mul_(dh).mul_(a)
        ds.addcmul_(ds, a, value=-1)  # x (1 - a)
        dk = torch.addcmul(g_, g_, g_, value=-1).masked_fill_(k >= 0, 1.0)  # g'(k_h)
        dk.mul_(dh)
        dk.addcmul_(dk, a, value=-1)  # x (1 - a)
        return ds.to(ctx.dtypes[0]), dk.to(ctx.dtypes[1]), a[0] * dh[0]


def log_scan(log_a: torch.Tensor, log_b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The same recurrence in log space, parallel over time (Heinsen 2023): with
    a*_t = sum_{s<=t} log a_s,

        h_t = exp(a*_t) h0 + exp(a*_t + logcumsumexp_t(log b_t - a*_t))

    Needs b > 0 (g keeps it so). The carried state enters linearly, so h0 = 0 (a fresh
    window) needs no log of zero, whose gradient would be NaN through logcumsumexp.
    """
    a_star = log_a.cumsum(0)
    return torch.exp(a_star + torch.logcumsumexp(log_b - a_star, 0)) + torch.exp(a_star) * h0


def rms_norm(x: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
    """x / sqrt(mean(x^2) + EPS) over the last axis, times the gain, in x's precision."""
    return F.rms_norm(x, x.shape[-1:], gain, EPS)


def affine(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x W + b as one kernel (F.linear: under --amp the bias is added inside the bfloat16
    matmul, not in a float32 pass after it)."""
    return F.linear(x, W.t(), b)


class MinBlock(nn.Module):
    """One layer: x + W_o-projection of the min-RNN of the normalised x, then a feed-forward
    block, x + W_2 gelu(norm(x) W_1 + b_1) + b_2 (pre-norm residual blocks)."""

    def __init__(self, hidden_size: int, state_size: int, gates: int) -> None:
        super().__init__()
        D, S, F_ = hidden_size, state_size, FF_MULT * hidden_size
        self.gain_1, self.gain_2 = nn.Parameter(torch.ones(D)), nn.Parameter(torch.ones(D))
        self.W_x, self.b_x = (
            nn.Parameter(torch.empty(D, gates * S)),
            nn.Parameter(torch.zeros(gates * S)),
        )
        self.W_o, self.b_o = nn.Parameter(torch.empty(S, D)), nn.Parameter(torch.zeros(D))
        self.W_1, self.b_1 = nn.Parameter(torch.empty(D, F_)), nn.Parameter(torch.zeros(F_))
        self.W_2, self.b_2 = nn.Parameter(torch.empty(F_, D)), nn.Parameter(torch.zeros(D))


class MinCell(Cell):
    """A stack of min-RNN residual blocks (the paper's language model): x_0 = x W_in + b_in,
    one `MinBlock` per layer, and the output layer takes norm(x_L) gain.

    The state of layer i is its min-RNN's h: (B, S) with S = EXPANSION * hidden_size units, a
    convex mix of g values (so positive, and unbounded above). A subclass says how the update
    coefficient z of h_t = (1 - z_t) h_{t-1} + z_t g(k_h) comes from the pre-activations
    (`mix`); the columns of W_x are [k_h | the gates].
    """

    textbook_init = False
    bounded_state = False  # h mixes g values, and g(x) = x + 1/2 grows without bound
    hooks = "residual"
    # "sweep" (GatedScan) or "log" (log_scan) for a window; None: sweep on a CPU, where it
    # measured tens of times faster than torch's logcumsumexp, log space elsewhere
    scan: ClassVar[str | None] = None

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, dropout: float, one_hot: bool
    ) -> None:
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.expanded = max(1, round(EXPANSION * hidden_size))
        self.W_in = nn.Parameter(torch.empty(input_size, hidden_size))
        self.b_in = nn.Parameter(torch.zeros(hidden_size))
        self.layers = nn.ModuleList(
            MinBlock(hidden_size, self.expanded, self.gates) for _ in range(num_layers)
        )
        self.gain = nn.Parameter(torch.ones(hidden_size))
        self.dropout = Dropout(dropout)

    @property
    def state_size(self) -> int:
        return self.expanded

    @classmethod
    def inner_dropout(cls, p: float, num_layers: int) -> float:
        """On both branches of every block, as nanoGPT drops its blocks' outputs."""
        return p

    @classmethod
    def activation_floats(cls, hidden_size: int, num_layers: int) -> int:
        """The stream, norms, projections and feed-forward activations, and the scan's
        pre-activations, coefficients and states, per layer."""
        S = round(EXPANSION * hidden_size)
        return num_layers * (7 * hidden_size + (cls.gates + 5) * S + 2 * FF_MULT * hidden_size)

    def init_parameters(self, init: str, std: float) -> None:
        """Gains 1, biases 0; each matrix by `init`: pytorch U(+-1/sqrt(fan-in)), as nn.Linear."""
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.split(".")[-1].startswith("gain"):
                    p.fill_(1.0)
                elif p.dim() == 1:
                    p.zero_()
                else:
                    init_weight(p, init, std, 1 / math.sqrt(p.shape[0]))

    def mix(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, k_h) from the pre-activations: z = sigmoid(s) is the update coefficient."""
        raise NotImplementedError

    def coefficients(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h_t = a_t h_{t-1} + b_t: a = 1 - z = sigmoid(-s), b = z g(k_h)."""
        s, k_h = self.mix(k)
        return torch.sigmoid(-s), torch.sigmoid(s) * g(k_h)

    def run_scan(self, k: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """A window's states (T, B, S) from its pre-activations (T, B, G), by `scan`, in h0's
        precision (float32 under --amp too)."""
        kind = self.scan or ("sweep" if k.device.type == "cpu" else "log")
        s, k_h = self.mix(k)
        if kind == "sweep":
            return GatedScan.apply(s, k_h, h0)
        s, k_h = s.to(h0.dtype), k_h.to(h0.dtype)
        return log_scan(-F.softplus(s), log_g(k_h) - F.softplus(-s), h0)

    def forward(
        self, X: torch.Tensor, H0: torch.Tensor, dropout: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """X: (T, B, d); H0: (L, B, S) -> outputs (T, B, D), final states (L, B, S)."""
        drop = self.dropout if dropout else None
        x = self.stream_in(X)
        finals = []
        for i, layer in enumerate(self.layers):
            k = affine(self.layer_input(i, x), layer.W_x, layer.b_x)
            hs = self.run_scan(k, H0[i])  # in full precision even under --amp, as the state
            finals.append(hs[-1])
            x = self.between(i, x, hs, drop)
        return self.stream_out(x), torch.stack(finals)

    def stream_in(self, X: torch.Tensor) -> torch.Tensor:
        return affine(X, self.W_in, self.b_in).to(self.W_in.dtype)  # the stream: float32

    def layer_input(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.layers[i].gain_1)

    def between(
        self, i: int, x: torch.Tensor, h: torch.Tensor, drop: Dropout | None = None
    ) -> torch.Tensor:
        layer, keep = self.layers[i], drop or (lambda y: y)
        x = x + keep(affine(h, layer.W_o, layer.b_o))
        f = F.gelu(affine(rms_norm(x, layer.gain_2), layer.W_1, layer.b_1))
        return x + keep(affine(f, layer.W_2, layer.b_2))

    def stream_out(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.gain)

    def hook_weights(self) -> dict[str, torch.Tensor]:
        """W_in, b_in, the final gain, and every block's parameters but W_x and b_x."""
        return {k: p for k, p in self.named_parameters() if not k.endswith((".W_x", ".b_x"))}

    def step_weights(self, i: int) -> StepWeights:
        """No h W_h term: W_h has no columns."""
        layer = self.layers[i]
        W_h = layer.W_x.new_zeros(self.expanded, 0)
        return StepWeights(layer.W_x, W_h, layer.b_x, layer.b_x[:0])

    def step(
        self, xW: torch.Tensor, hW: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, b = self.coefficients(xW)
        return a * h + b, c

    def fused_weights(self, i: int) -> FusedWeights:
        """The normalisation's gain folded into W_x: norm(x) gain W_x = norm(x) (gain W_x)."""
        layer = self.layers[i]
        W_x, W_h, b_x, r = self.step_weights(i)
        return FusedWeights(layer.gain_1[:, None] * W_x, W_h, b_x, r)

    def fast_plan(
        self,
        lay: Any,
        states: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        emb: torch.Tensor | None,
        W_out: torch.Tensor,
        b_out: torch.Tensor,
    ) -> FastPlan:
        """Four stages a layer, each ending in a matmul (the gains folded into the weights):
        h_l -> o = h_l W_o + b_o; x += o, u = norm(x) -> f = u W_1 + b_1; gelu(f) ->
        f2 = f W_2 + b_2; x += f2, u = norm(x) -> the next layer's A (the last: the logits).
        A character's row of the table holds layer 0's A and x_0 = x W_in + b_in."""
        h, _, h_m = states
        N, D = lay.N, self.hidden_size
        x_0 = (emb @ self.W_in if emb is not None else self.W_in) + self.b_in
        first = self.fused_weights(0)
        table = torch.cat([rms_norm(x_0) @ first.W_x + first.b, x_0], 1)
        A = lay.new(N, table.shape[1])
        x, u, A_l = lay.new(N, D), lay.new(N, D), A[:, : first.W_x.shape[1]]
        u_m = None if lay.mm == lay.dtype else lay.new(N, D, dtype=lay.mm)
        f_m = None if u_m is None else lay.new(N, FF_MULT * D, dtype=lay.mm)

        def out(gemm: Any, width: int) -> torch.Tensor:
            return gemm.out.view(N, -1)[:, :width]

        stages = []
        for i, layer in enumerate(self.layers):
            if i + 1 == self.num_layers:  # the output layer, the final norm's gain folded in
                W_next, b_next = self.gain[:, None] * W_out, b_out
            else:  # the next layer's input weights, its gain_1 folded in
                W_next, b_next = self.fused_weights(i + 1).W_x, self.fused_weights(i + 1).b
            o_gemm = lay.affine(layer.b_o, h_m[i], layer.W_o)
            f_gemm = lay.affine(
                layer.b_1, u if u_m is None else u_m, layer.gain_2[:, None] * layer.W_1
            )
            f = out(f_gemm, FF_MULT * D)
            f2_gemm = lay.affine(layer.b_2, f if f_m is None else f_m, layer.W_2)
            next_gemm = lay.affine(b_next, u if u_m is None else u_m, W_next)
            x_in = A[:, first.W_x.shape[1] :] if i == 0 else None
            stages += [
                FastStage(self.fast_step, self.fast_views(A_l, None, h[i], None), h[i],
                          None if h_m is h else h_m[i], o_gemm, False),
                FastStage(_residual_norm, (x, out(o_gemm, D), x_in, u), u, u_m, f_gemm, False),
                FastStage(_gelu, f, f, f_m, f2_gemm, False),
                FastStage(_residual_norm, (x, out(f2_gemm, D), None, u), u, u_m, next_gemm, False),
            ]  # fmt: skip
            A_l = out(next_gemm, W_next.shape[1])
        return FastPlan(table, A, stages, A_l, [])


def _residual_norm(views: Any, tmp: torch.Tensor, tanh: Tanh) -> None:
    """x = x_in + o (x += o without x_in), then u = x / sqrt(mean(x^2) + EPS)."""
    x, o, x_in, u = views
    if x_in is None:
        x.add_(o)
    else:
        torch.add(x_in, o, out=x)
    torch.mul(x, x, out=u)
    scale = u.mean(-1, keepdim=True).add_(EPS).rsqrt_()
    torch.mul(x, scale, out=u)


def _gelu(f: torch.Tensor, tmp: torch.Tensor, tanh: Tanh) -> None:
    f.copy_(F.gelu(f))


class MinGRU(MinCell):
    """minGRU: z = sigmoid(k_z), h = (1 - z) h + z g(k_h), with [k_h | k_z] = x W_x + b_x."""

    name = "mingru"
    gates = 2

    def mix(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k_h, k_z = k.chunk(2, dim=-1)
        return k_z, k_h

    class Views(NamedTuple):
        k_h: torch.Tensor
        k_z: torch.Tensor
        h: torch.Tensor

    @staticmethod
    def fast_views(A: torch.Tensor, R: Any, h: torch.Tensor, c: Any) -> Views:
        return MinGRU.Views(*A.split(h.shape[-1], dim=1), h)

    @staticmethod
    def fast_step(views: Views, tmp: torch.Tensor, tanh: Tanh) -> None:
        k_h, a, h = views
        a.neg_().sigmoid_()  # a = 1 - z = sigmoid(-k_z)
        _g_(k_h, tmp)
        h.sub_(k_h).mul_(a).add_(k_h)  # h' = a h + (1 - a) g = g + a (h - g)


class MinLSTM(MinCell):
    """minLSTM with the paper's normalised gates: f, i = sigmoid(k_f), sigmoid(k_i),
    h = f/(f + i) h + i/(f + i) g(k_h): a minGRU whose z = i/(f + i) = sigmoid(s), with
    s = log i - log f = softplus(-k_f) - softplus(-k_i). Columns: [k_h | k_f | k_i]."""

    name = "minlstm"
    gates = 3

    def mix(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k_h, k_f, k_i = k.chunk(3, dim=-1)
        return F.softplus(-k_f) - F.softplus(-k_i), k_h

    class Views(NamedTuple):
        k_h: torch.Tensor
        k_f: torch.Tensor
        k_i: torch.Tensor
        h: torch.Tensor

    @staticmethod
    def fast_views(A: torch.Tensor, R: Any, h: torch.Tensor, c: Any) -> Views:
        return MinLSTM.Views(*A.split(h.shape[-1], dim=1), h)

    @staticmethod
    def fast_step(views: Views, tmp: torch.Tensor, tanh: Tanh) -> None:
        k_h, k_f, k_i, h = views
        a = torch.sigmoid(F.softplus(k_i.neg_()).sub_(F.softplus(k_f.neg_())), out=k_f)  # -s
        _g_(k_h, tmp)
        h.sub_(k_h).mul_(a).add_(k_h)


def _g_(k: torch.Tensor, tmp: torch.Tensor) -> None:
    """k <- g(k) in place: sigmoid(min(k, 0)) + relu(k) (tmp: scratch of k's shape)."""
    torch.clamp(k, min=0, out=tmp)
    k.clamp_(max=0).sigmoid_().add_(tmp)


CELLS: dict[str, type[Cell]] = {cell.name: cell for cell in (TanhRNN, LSTM, GRU, MinGRU, MinLSTM)}


def cell_class(name: str) -> type[Cell]:
    """The cell registered under a model name."""
    if name not in CELLS:
        raise ValueError(f"unknown model {name!r}")
    return CELLS[name]
