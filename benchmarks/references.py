"""The plain PyTorch loops charlm is measured against, written the way a tutorial writes them.

Each function returns a `measure()` that runs the loop once and returns its characters/s:
Dive into Deep Learning's RNN from scratch, the word_language_model training loop with
nn.RNN / nn.LSTM / nn.GRU, and sampling with nn.LSTM one step at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import sync


def stream_batches(
    ids: np.ndarray, T: int, B: int, device: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """word_language_model's batchify: B parallel streams, windows of T in order, forever."""
    n = (len(ids) - 1) // B
    data = torch.from_numpy(np.asarray(ids[: n * B + 1], dtype=np.int64))
    X_all = data[:-1].view(B, n).t().contiguous()  # (n, B)
    Y_all = data[1:].view(B, n).t().contiguous()
    while True:
        for i in range(0, n - T + 1, T):
            yield X_all[i : i + T].to(device), Y_all[i : i + T].to(device)


def textbook_rnn(
    ids: np.ndarray, V: int, H: int, T: int, B: int, steps: int, device: str
) -> Callable[[], float]:
    """Dive into Deep Learning's RNN from scratch: one-hot per step, a Python loop per step."""

    def measure() -> float:
        def param(*shape: int) -> torch.Tensor:
            return (torch.randn(*shape, device=device) * 0.01).requires_grad_()

        W_xh, W_hh, b_h = param(V, H), param(H, H), torch.zeros(H, device=device).requires_grad_()
        W_hq, b_q = param(H, V), torch.zeros(V, device=device).requires_grad_()
        params = [W_xh, W_hh, b_h, W_hq, b_q]
        batches = stream_batches(ids, T, B, device)
        state = torch.zeros(B, H, device=device)
        total = 0.0
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            X, Y = next(batches)
            state = state.detach()
            inputs = F.one_hot(X, V).float()  # (T, B, V)
            outputs = []
            for X_t in inputs:
                state = torch.tanh(X_t @ W_xh + state @ W_hh + b_h)
                outputs.append(state @ W_hq + b_q)
            loss = F.cross_entropy(torch.cat(outputs), Y.reshape(-1))
            for p in params:
                p.grad = None
            loss.backward()
            norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))
            if norm > 1.0:  # the textbook's grad_clipping
                for p in params:
                    p.grad[:] *= 1.0 / norm
            with torch.no_grad():
                for p in params:
                    p -= 1.0 * p.grad
            total += loss.item() * Y.numel()  # the textbook's metric.add
        sync(device)
        return steps * T * B / (time.perf_counter() - t0)

    return measure


class PlainLM(nn.Module):
    """nn.Embedding -> nn.RNN / nn.LSTM / nn.GRU -> nn.Linear: the tutorial model."""

    def __init__(self, cell: str, V: int, E: int, H: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](E, H)
        self.out = nn.Linear(H, V)

    def forward(self, X, state=None):
        Hs, state = self.rnn(self.emb(X), state)
        return self.out(Hs), state


def plain_loop(
    cell: str,
    ids: np.ndarray,
    V: int,
    E: int,
    H: int,
    T: int,
    B: int,
    steps: int,
    device: str,
    optimizer: str = "adam",
    lr: float = 3e-3,
    amp: bool = False,
) -> Callable[[], float]:
    """The plain PyTorch training loop (word_language_model style) at charlm's settings."""

    def detach(s):
        return tuple(x.detach() for x in s) if isinstance(s, tuple) else s.detach()

    def measure() -> float:
        model = PlainLM(cell, V, E, H).to(device)
        if optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=lr)
        batches = stream_batches(ids, T, B, device)
        state = None
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            X, Y = next(batches)
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=amp):
                logits, state = model(X, state)
                loss = F.cross_entropy(logits.reshape(-1, V).float(), Y.reshape(-1))
            state = detach(state)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sync(device)
        return steps * T * B / (time.perf_counter() - t0)

    return measure


def plain_generate(V: int, E: int, H: int, length: int, device: str) -> Callable[[], float]:
    """Sampling with nn.LSTM one step at a time (batch 1, seq 1), as tutorials do."""

    def measure() -> float:
        model = PlainLM("lstm", V, E, H).to(device).eval()
        x = torch.zeros(1, 1, dtype=torch.long, device=device)
        state, out = None, []
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(length):
                logits, state = model(x, state)
                probs = torch.softmax(logits[0, 0] / 0.8, dim=-1)
                nxt = int(torch.multinomial(probs, 1))
                out.append(nxt)
                x.fill_(nxt)
        return length / (time.perf_counter() - t0)

    return measure
