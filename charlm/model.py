"""The model: embedding (or one-hot) -> a recurrent cell (charlm.cells) -> output layer.

    O_t = H_t W_hq + b_q        (H_t: the last layer's state at step t)

--dropout applies to each layer's output, as Zaremba et al. (2014) regularise an LSTM: between
layers (inside the cell) and to H_t before the output layer; never to the recurrent state. The
min cells drop both branches of each residual block, with one layer too (`Cell.inner_dropout`).

`CharLM` knows no cell kind by name: the cell class registered for `ModelConfig.model` owns its
parameters, state and equations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from charlm.cells import Cell, Dropout, State, cell_class, init_weight


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (stored in every checkpoint). The defaults are
    the model a training run builds when no budget chooses another (tests/test_model.py holds
    them to it)."""

    vocab_size: int
    model: str = "lstm"
    hidden_size: int = 448
    num_layers: int = 1
    dropout: float = 0.25
    embedding_dim: int = 64
    init: str = "auto"
    init_std: float = 0.01


class CharLM(nn.Module):
    """Embedding (or one-hot) -> recurrent layers -> output layer O = H W_hq + b_q."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cell = cell_class(cfg.model)
        self.cfg = cfg
        V, E, H, L = cfg.vocab_size, cfg.embedding_dim, cfg.hidden_size, cfg.num_layers
        self.embedding = nn.Embedding(V, E) if E else None
        between = cell.inner_dropout(cfg.dropout, L)  # nn.LSTM warns about it with one layer
        # named `rnn` as before cells had classes: checkpoint keys stay rnn.layers.0.W_xh, ...
        self.rnn: Cell = cell(E or V, H, L, between, not E)
        self.dropout = Dropout(cfg.dropout)  # the last layer's output (Zaremba et al., 2014)
        self.W_hq = nn.Parameter(torch.empty(H, V))
        self.b_q = nn.Parameter(torch.zeros(V))
        self.reset_parameters()

    @property
    def init(self) -> str:
        if self.cfg.init != "auto":
            return self.cfg.init
        return "textbook" if self.rnn.textbook_init else "pytorch"

    def reset_parameters(self) -> None:
        """textbook: weights ~ N(0, init_std^2), biases 0. pytorch: U(-1/sqrt(H), 1/sqrt(H)).
        The output layer first, then the cell's own (`Cell.init_parameters`); the embedding
        keeps nn.Embedding's N(0, 1)."""
        bound = 1 / math.sqrt(self.cfg.hidden_size)
        for p in (self.W_hq, self.b_q):
            init_weight(p, self.init, self.cfg.init_std, bound)
        self.rnn.init_parameters(self.init, self.cfg.init_std)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        """The zero state at the start of a sequence: (L, B, H), or (h, c) for LSTM."""
        return self.rnn.init_state(batch_size, device, self.W_hq.dtype)

    def forward(
        self, X: torch.Tensor, state: State | None = None, dropout: bool = True
    ) -> tuple[torch.Tensor, State]:
        """X: (T, B) ids -> logits (T, B, V) and the final state.

        Dropout applies in training mode only, and not at all with `dropout=False`: a model
        being trained is validated and sampled from without switching its mode back and forth.
        """
        T, B = X.shape
        if state is None:
            state = self.init_state(B, X.device)
        if self.embedding is not None:
            inputs = self.embedding(X)  # (T, B, E)
        else:  # one-hot (T, B, V), or ids where the cell looks up rows itself
            inputs = self.rnn.dense_input(X, self.cfg.vocab_size, self.W_hq.dtype)
        Hs, state = self.rnn(inputs, state, dropout)  # (T, B, H)
        if dropout:
            Hs = self.dropout(Hs)  # training only: in eval mode the identity
        logits = torch.addmm(self.b_q, Hs.reshape(T * B, -1), self.W_hq)
        return logits.view(T, B, -1), state


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) but keep the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
