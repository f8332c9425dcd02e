"""Cells and models: a hand-written tanh RNN next to nn.LSTM / nn.GRU, behind one CharLM class.

The hand-written RNN follows the textbook equations (Dive into Deep Learning, 9.5):

    H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)        O_t = H_t W_hq + b_q

Two things make it fast without hiding the maths:
- the input projection X_t W_xh + b_h of all T steps is one matmul (or, for one-hot input, a row
  lookup of W_xh: one-hot times a matrix selects a row), done before the time loop;
- the time loop is a custom autograd Function whose backward pass (BPTT) only propagates dH
  through the loop and forms dW_hh as one large matmul after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from charlm.config import MODELS

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


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


class ScratchRNN(nn.Module):
    """A stack of hand-written tanh RNN layers with dropout between them (like nn.RNN)."""

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, dropout: float, one_hot: bool
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            RNNLayer(input_size if i == 0 else hidden_size, hidden_size, one_hot and i == 0)
            for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, X: torch.Tensor, H0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X: (T, B) or (T, B, d); H0: (L, B, H) -> outputs (T, B, H), H_T (L, B, H)."""
        finals = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                X = self.dropout(X)
            X = layer(X, H0[i])
            finals.append(X[-1])
        return X, torch.stack(finals)


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (stored in every checkpoint)."""

    vocab_size: int
    model: str = "lstm"
    hidden_size: int = 512
    num_layers: int = 1
    dropout: float = 0.0
    embedding_dim: int = 64
    init: str = "auto"
    init_std: float = 0.01


class CharLM(nn.Module):
    """Embedding (or one-hot) -> recurrent layers -> output layer O = H W_hq + b_q."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.model not in MODELS:
            raise ValueError(f"unknown model {cfg.model!r}")
        self.cfg = cfg
        V, E, H, L = cfg.vocab_size, cfg.embedding_dim, cfg.hidden_size, cfg.num_layers
        self.embedding = nn.Embedding(V, E) if E else None
        d_in = E or V
        dropout = cfg.dropout if L > 1 else 0.0
        if cfg.model == "rnn":
            self.rnn: nn.Module = ScratchRNN(d_in, H, L, dropout, one_hot=not E)
        else:
            cell = nn.LSTM if cfg.model == "lstm" else nn.GRU
            self.rnn = cell(d_in, H, L, dropout=dropout)
        self.W_hq = nn.Parameter(torch.empty(H, V))
        self.b_q = nn.Parameter(torch.zeros(V))
        self.reset_parameters()

    @property
    def init(self) -> str:
        if self.cfg.init != "auto":
            return self.cfg.init
        return "textbook" if self.cfg.model == "rnn" else "pytorch"

    def reset_parameters(self) -> None:
        """textbook: weights ~ N(0, init_std^2), biases 0. pytorch: U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1 / math.sqrt(self.cfg.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith("embedding."):
                continue  # nn.Embedding's own N(0, 1)
            with torch.no_grad():
                if self.init == "textbook":
                    nn.init.normal_(p, 0.0, self.cfg.init_std) if p.dim() > 1 else p.zero_()
                else:
                    nn.init.uniform_(p, -bound, bound)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        """The zero state at the start of a sequence: (L, B, H), or (h, c) for LSTM."""
        p = self.W_hq
        h = torch.zeros(
            self.cfg.num_layers, batch_size, self.cfg.hidden_size, device=device, dtype=p.dtype
        )
        return (h, h.clone()) if self.cfg.model == "lstm" else h

    def forward(self, X: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """X: (T, B) ids -> logits (T, B, V) and the final state."""
        T, B = X.shape
        if state is None:
            state = self.init_state(B, X.device)
        if self.embedding is not None:
            inputs = self.embedding(X)  # (T, B, E)
        elif self.cfg.model == "rnn":
            inputs = X  # ids: the first layer looks up rows of W_xh
        else:  # nn.LSTM / nn.GRU take dense input only
            inputs = F.one_hot(X, self.cfg.vocab_size).to(self.W_hq.dtype)
        Hs, state = self.rnn(inputs, state)  # (T, B, H)
        logits = torch.addmm(self.b_q, Hs.reshape(T * B, -1), self.W_hq)
        return logits.view(T, B, -1), state


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) but keep the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
