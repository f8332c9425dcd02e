"""Evaluation: the negative log-likelihood of a text under a model, with the state carried.

Perplexity = exp(mean NLL in nats); bits per character = mean NLL / ln 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.data import Vocab
from charlm.errors import CharLMError
from charlm.model import CharLM, detach_state


@dataclass
class Score:
    """The mean NLL of `chars` scored characters (nats), and what follows from it."""

    nll: float
    chars: int
    skipped: int = 0

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)

    @property
    def bits_per_char(self) -> float:
        return self.nll / math.log(2)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "perplexity": self.perplexity,
            "bits_per_char": self.bits_per_char,
            "nll": self.nll,
            "chars": self.chars,
            "skipped": self.skipped,
        }


@torch.no_grad()
def char_nll(
    model: CharLM,
    ids: np.ndarray,
    seq_len: int = 256,
    streams: int = 1,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """NLL (nats) of every character after the first of each stream, in text order.

    The text is cut into `streams` contiguous pieces scored side by side as one batch (1 is
    exact: every character after the first, with the state carried through the whole text).
    Windows of `seq_len` characters carry the state from one to the next.

        stream 0: c0 c1 c2 ... | window 0 | window 1 | ...
        stream 1: ...

    With several processes, rank r of `world_size` scores only its share of the streams (the
    same cut as one process makes), so the ranks' sums add up to the single-process result.
    """
    device = model.W_hq.device
    n = len(ids)
    streams = max(1, min(streams, n // 2))
    length = -(-n // streams)  # ceil: the last stream is padded and the padding masked out
    padded = np.zeros(streams * length, dtype=np.int64)
    padded[:n] = ids
    M = torch.from_numpy(padded.reshape(streams, length).T.copy()).to(device)  # (L, S)
    valid = n > torch.arange(streams * length, device=device).view(streams, length).T
    mine = slice(rank * streams // world_size, (rank + 1) * streams // world_size)
    M, valid = M[:, mine], valid[:, mine]  # (L, S) -> this rank's streams
    if M.shape[1] == 0:
        return torch.empty(0, device=device)
    was_training = model.training
    model.eval()
    state = None
    out = torch.empty(length - 1, M.shape[1], device=device)
    for t in range(0, length - 1, seq_len):
        X, Y = M[t : t + seq_len], M[t + 1 : t + 1 + seq_len]
        X = X[: len(Y)]
        logits, state = model(X, state)
        state = detach_state(state)
        out[t : t + len(Y)] = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), Y.reshape(-1), reduction="none"
        ).view(Y.shape)
    model.train(was_training)
    return out.T[valid.T[:, 1:]]  # stream by stream = text order, padding dropped


def score(model: CharLM, ids: np.ndarray, seq_len: int = 256, streams: int = 1) -> Score:
    """Mean NLL of a text (see `char_nll`)."""
    nll = char_nll(model, ids, seq_len, streams)
    return Score(nll=float(nll.double().mean()), chars=len(nll))


def score_text(
    model: CharLM, vocab: Vocab, text: str, seq_len: int = 256, skip_unknown: bool = False
) -> Score:
    """Score a text; characters outside the vocabulary are an error, or skipped and counted."""
    ids = vocab.encode(text, skip_unknown=skip_unknown)
    if len(ids) < 2:
        raise CharLMError("the text has fewer than 2 known characters: nothing to score")
    result = score(model, ids, seq_len)
    result.skipped = len(text) - len(ids)
    return result
