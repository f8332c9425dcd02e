"""Dynamic evaluation (Krause et al., "Dynamic Evaluation of Neural Sequence Models", 2018).

The model goes on learning from the text it scores, so that later text is predicted by a
model adapted to the text read so far (its names, its words, its style):

    for each window of --seq-len characters, in text order:
        score the window with the current weights W        (before any learning from it)
        g = d mean NLL(window) / dW                         (BPTT inside the window)
        W <- W - lr * g + decay * (W_trained - W)          (SGD, pulled back to the trained W)
    the hidden state is carried from window to window (detached), as in static scoring

With `grad_rms` (`--dynamic-rms TEXT`), the update is the paper's RMS-normalised one (its
Section 5): MS_g = mean over the windows of TEXT (training text, read with the trained weights,
which do not move) of each weight's squared gradient, and

    W <- W - lr * g / (sqrt(MS_g) + eps) + min(decay * RMS_norm, 1) * (W_trained - W)
    RMS_norm = sqrt(MS_g) / avg(sqrt(MS_g))

so that weights whose gradients were small in training move less, and those that learned the
most are pulled back the hardest. avg is over every element of every weight; the pull is at
most all the way back (the paper's clip of the decay rate at 1/decay). eps, a constant in the
paper, is charlm's EPS_FRACTION * avg(sqrt(MS_g)): no weight steps more than lr * g / avg, so
a weight whose gradient was ~0 in training (the embedding of a character TEXT hardly has) does
not take a step without bound (with eps = 1e-3 avg, Python text under a Shakespeare model
diverged).

Every character is scored before the model learns from it, so the score is an honest
prediction. The model passed in is never changed: a copy learns, and no file is written.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charlm.errors import CharLMError, flag
from charlm.model import CharLM, detach_state
from charlm.scoring import RMS_DECAY, RMS_LR, Dynamic

RMS_CHARS = 100_000  # --dynamic-rms TEXT: the gradient statistics read its start, up to this
EPS_FRACTION = 1.0


def rms_dynamic(
    model: CharLM, train_ids: np.ndarray, seq_len: int, lr: float = RMS_LR, decay: float = RMS_DECAY
) -> Dynamic:
    """The RMS-normalised settings, with gradient statistics from `train_ids` (training text:
    never the text to be scored, whose gradients would leak into its own score)."""
    if len(train_ids) < 2:
        raise CharLMError(f"{flag('dynamic_rms')} needs a text of at least 2 known characters")
    settings = Dynamic(lr, decay)  # checked before the statistics take their seconds
    return replace(settings, grad_rms=tuple(gradient_rms(model, train_ids[:RMS_CHARS], seq_len)))


def gradient_rms(model: CharLM, ids: np.ndarray, seq_len: int) -> list[torch.Tensor]:
    """sqrt(MS_g): each weight's root mean square gradient of a window's mean NLL, over the
    windows of `ids` in order (state carried), with the weights as trained (they do not move)."""
    learner = _copy(model)
    squares = [torch.zeros_like(p) for p in learner.parameters()]
    windows, state = 0, None
    for t in range(0, len(ids) - 1, seq_len):
        _, _, state = _window_gradient(learner, ids, t, seq_len, state)
        for square, p in zip(squares, learner.parameters(), strict=True):
            if p.grad is not None:
                square += p.grad.square()
        windows += 1
    return [(square / windows).sqrt() for square in squares]


def _copy(model: CharLM) -> CharLM:
    learner = copy.deepcopy(model)
    learner.eval()  # no dropout: the weights learn, the scoring stays deterministic
    return learner


def _window_gradient(
    learner: CharLM, ids: np.ndarray, t: int, seq_len: int, state: Any
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Logits (w, 1, V) and NLL (w, 1) of the window starting at t, the state after it
    (detached), and the gradient of its mean NLL in the learner's .grad."""
    w = min(seq_len, len(ids) - 1 - t)
    window = torch.from_numpy(np.asarray(ids[t : t + w + 1], dtype=np.int64))
    window = window.to(learner.W_hq.device)[:, None]  # (w+1, 1)
    # cuDNN's RNN backward refuses eval mode; its plain kernels do not
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        logits, new_state = learner(window[:-1], state)
        flat = logits.reshape(-1, logits.shape[-1]).float()
        nll = F.cross_entropy(flat, window[1:].reshape(-1), reduction="none").view(w, 1)
        learner.zero_grad(set_to_none=True)
        nll.mean().backward()
    return logits.detach().float(), nll.detach(), detach_state(new_state)


def adapted_windows(
    model: CharLM, ids: np.ndarray, seq_len: int, settings: Dynamic
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(logits (w, 1, V), NLL (w, 1), valid (w, 1)) of each window, as `evaluate.windows`
    yields them for one stream, from a copy of `model` that learns after scoring each window.
    """
    learner = _copy(model)
    params = list(learner.parameters())
    trained = [p.detach().clone() for p in params]
    step, pull = _update_scales(params, settings)
    state = None
    for t in range(0, len(ids) - 1, seq_len):
        logits, nll, state = _window_gradient(learner, ids, t, seq_len, state)
        # the window is scored (yielded) before the weights move
        yield logits, nll, torch.ones_like(nll, dtype=torch.bool)
        with torch.no_grad():
            for p, p0, s, d in zip(params, trained, step, pull, strict=True):
                if p.grad is not None:
                    p -= s * p.grad
                if settings.decay:
                    p += d * (p0 - p)


def _update_scales(params: list[torch.Tensor], settings: Dynamic) -> tuple[list[Any], list[Any]]:
    """Per weight, the factor of its gradient and of its pull back: the plain SGD numbers, or
    the RMS-normalised tensors lr / (sqrt(MS_g) + eps) and min(decay * RMS_norm, 1)."""
    if settings.grad_rms is None:
        return [settings.lr] * len(params), [settings.decay] * len(params)
    if [r.shape for r in settings.grad_rms] != [p.shape for p in params]:
        raise CharLMError(f"{flag('dynamic_rms')}: the gradient statistics are not of this model")
    rms = [r.to(p.device, p.dtype) for r, p in zip(settings.grad_rms, params, strict=True)]
    average = sum(float(r.double().sum()) for r in rms) / sum(r.numel() for r in rms)
    if not (average > 0 and math.isfinite(average)):
        raise CharLMError(f"{flag('dynamic_rms')}: the gradient statistics average {average:g}")
    eps = EPS_FRACTION * average
    step = [settings.lr / (r + eps) for r in rms]
    pull = [(settings.decay * r / average).clamp(max=1.0) for r in rms]
    return step, pull
