"""Dynamic evaluation (Krause et al., "Dynamic Evaluation of Neural Sequence Models", 2018).

The model goes on learning from the text it scores, so that later text is predicted by a
model adapted to the text read so far (its names, its words, its style):

    for each window of --seq-len characters, in text order:
        score the window with the current weights W        (before any learning from it)
        g = d mean NLL(window) / dW                         (BPTT inside the window)
        W <- W - lr * g + decay * (W_trained - W)          (SGD, pulled back to the trained W)
    the hidden state is carried from window to window (detached), as in static scoring

Every character is scored before the model learns from it, so the score is an honest
prediction. The model passed in is never changed: a copy learns, and no file is written.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.errors import CharLMError
from charlm.model import CharLM, detach_state

# the best of 1e-2, 3e-2, 0.1, 0.3, 0.6, 1, 3 for the default model (180 s on tiny Shakespeare) on
# 10,000 characters of its training text (not a text reported on), --seq-len 256: see
# benchmarks/RESULTS.md
DEFAULT_LR = 0.3


@dataclass(frozen=True)
class Dynamic:
    """Settings of dynamic evaluation: SGD step size, and the pull back to the trained weights
    per window (0: none; 1 would forget each step at once)."""

    lr: float = DEFAULT_LR
    decay: float = 0.0

    def check(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CharLMError(f"--dynamic-lr must be > 0, got {self.lr}")
        if not 0 <= self.decay < 1:
            raise CharLMError(f"--dynamic-decay must be in [0, 1), got {self.decay}")


def adapted_windows(
    model: CharLM, ids: np.ndarray, seq_len: int, settings: Dynamic
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(logits (w, 1, V), NLL (w, 1), valid (w, 1)) of each window, as `evaluate.windows`
    yields them for one stream, from a copy of `model` that learns after scoring each window.
    """
    settings.check()
    learner = copy.deepcopy(model)
    learner.eval()  # no dropout: the weights learn, the scoring stays deterministic
    params = [p for p in learner.parameters() if p.requires_grad]
    trained = [p.detach().clone() for p in params]
    device = model.W_hq.device
    n = len(ids)
    state = None
    for t in range(0, n - 1, seq_len):
        w = min(seq_len, n - 1 - t)
        window = torch.from_numpy(np.asarray(ids[t : t + w + 1], dtype=np.int64)).to(device)
        window = window[:, None]  # (w+1, 1)
        # cuDNN's RNN backward refuses eval mode; its plain kernels do not
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            logits, new_state = learner(window[:-1], state)
            flat = logits.reshape(-1, logits.shape[-1]).float()
            nll = F.cross_entropy(flat, window[1:].reshape(-1), reduction="none").view(w, 1)
            learner.zero_grad(set_to_none=True)
            nll.mean().backward()
        # the window is scored (yielded) before the weights move
        yield logits.detach().float(), nll.detach(), torch.ones_like(nll, dtype=torch.bool)
        with torch.no_grad():
            for p, p0 in zip(params, trained, strict=True):
                if p.grad is not None:
                    p -= settings.lr * p.grad
                if settings.decay:
                    p += settings.decay * (p0 - p)
        state = detach_state(new_state)
