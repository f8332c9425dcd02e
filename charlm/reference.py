"""The reference sampler: the cells' equations, one step at a time, as the textbook writes them.

No buffers, no fused weights, no layout tricks: for every layer l,

    xW = layer_input(l, x_l) W_x + b_x        hW = h_l W_h + b_h
    (h_l, c_l) = cell.step(xW, hW, h_l, c_l)  x_{l+1} = between(l, x_l, h_l)

with x_0 = stream_in(the embedding or one-hot vector of the character), then the logits
(stream_out(x_L) W_hq + b_q) * scale. For the RNN, LSTM and GRU the hooks are identities
(x_{l+1} = h_l); the min cells' are their residual blocks (`charlm.cells.MinCell`). It is what
`charlm.stepper.Stepper` must compute, and the tests
hold the fast one to it (the same interface: `load_state`, `step`, `reorder`); it works for one
stream or N, in the model's dtype (float32 or float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from charlm.cells import State
from charlm.model import CharLM


class ReferenceStepper:
    """N streams advanced one character per `step`, each a plain application of the equations."""

    def __init__(self, model: CharLM, num_samples: int, scale: float = 1.0) -> None:
        self.model, self.N, self.scale = model, num_samples, scale
        self.load_state(model.init_state(num_samples, model.W_hq.device))

    def load_state(self, state: State) -> None:
        """Start from a state of `CharLM.forward` (batch 1 is copied to every stream)."""
        h, c = self.model.rnn.split_state(state)  # (L, B, H)
        self.h = [h_l.expand(self.N, -1) for h_l in h]  # per layer (N, H)
        self.c = [None] * len(self.h) if c is None else [c_l.expand(self.N, -1) for c_l in c]

    def reorder(self, parents: torch.Tensor) -> None:
        """Stream i continues from the state of stream parents[i] (beam search)."""
        self.h = [h_l[parents] for h_l in self.h]
        self.c = [None if c_l is None else c_l[parents] for c_l in self.c]

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N,) ids -> (N, V) logits * scale of the next character."""
        model, cell = self.model, self.model.rnn
        if model.embedding is not None:
            inp = model.embedding(x)  # (N, E)
        else:
            inp = F.one_hot(x, model.cfg.vocab_size).to(model.W_hq.dtype)  # (N, V)
        x = cell.stream_in(inp)
        for i in range(cell.num_layers):
            W_x, W_h, b_x, b_h = cell.step_weights(i)
            xW, hW = cell.layer_input(i, x) @ W_x + b_x, self.h[i] @ W_h + b_h
            self.h[i], self.c[i] = cell.step(xW, hW, self.h[i], self.c[i])
            x = cell.between(i, x, self.h[i])
        return (cell.stream_out(x) @ model.W_hq + model.b_q) * self.scale
