"""Evaluation: the negative log-likelihood of a text under a model, with the state carried.

Perplexity = exp(mean NLL in nats); bits per character = mean NLL / ln 2. These are the
numbers; `charlm.report` runs a whole evaluation (read the inputs, score, report).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from charlm import distributed, metrics
from charlm.dynamic import adapted_windows
from charlm.errors import CharLMError, expect, flag
from charlm.metrics import DIVERGED
from charlm.model import CharLM, detach_state
from charlm.resources import check_fits, scoring_bytes
from charlm.scoring import Dynamic, Scoring
from charlm.surprisal import TOP_K, Surprisal
from charlm.vocab import Vocab


@dataclass
class Score:
    """The mean NLL of `chars` scored characters (nats), and what follows from it."""

    nll: float
    chars: int
    skipped: int = 0

    @property
    def perplexity(self) -> float:
        return metrics.perplexity(self.nll)

    @property
    def bits_per_char(self) -> float:
        return metrics.bits(self.nll)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "perplexity": self.perplexity,
            "bits_per_char": self.bits_per_char,
            "nll": self.nll,
            "chars": self.chars,
            "skipped": self.skipped,
        }


@torch.no_grad()
def windows(
    model: CharLM, ids: np.ndarray, seq_len: int, streams: int, rank: int, world_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(logits (w, S, V), NLL (w, S), valid (w, S)) of each window, the state carried.

    Windows are gathered from `ids` one at a time, so a memmapped corpus is never loaded whole.
    """
    device = model.W_hq.device
    n = len(ids)
    streams = max(1, min(streams, n // 2))
    length = -(-n // streams)  # ceil: the last stream is shorter; its overhang is masked out
    starts = (length * np.arange(streams))[rank * streams // world_size :][
        : (rank + 1) * streams // world_size - rank * streams // world_size
    ]  # this rank's streams, the same cut as one process makes
    if len(starts) == 0:
        return
    state = None
    for t in range(0, length - 1, seq_len):
        w = min(seq_len, length - 1 - t)
        pos = starts[None, :] + np.arange(t, t + w + 1)[:, None]  # (w+1, S)
        window = np.asarray(ids[np.minimum(pos, n - 1)], dtype=np.int64)
        M = torch.from_numpy(window).to(device)
        logits, state = model(M[:-1], state, dropout=False)
        state = detach_state(state)
        logits = logits.float()
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), M[1:].reshape(-1), reduction="none"
        ).view(w, -1)
        yield logits, nll, torch.from_numpy(pos[1:] < n).to(device)


def check_scoring_fits(
    model: CharLM, n: int, seq_len: int, streams: int, dynamic: Dynamic | None
) -> None:
    """Refuse windows that cannot fit in memory (`eval --seq-len 100000000` on a large model
    asks for a window as long as the text), before any is made."""
    cfg = model.cfg
    streams = max(1, min(streams, n // 2))
    window = min(seq_len, max(1, -(-n // streams) - 1)) * streams  # characters scored at once
    width = cfg.embedding_dim + 6 * cfg.hidden_size * cfg.num_layers + 3 * cfg.vocab_size + 2
    params = sum(p.numel() for p in model.parameters())
    need = scoring_bytes(window, width, params, dynamic is not None)
    windows = f"{flag('seq_len', seq_len)} x {flag('streams', streams)}"
    what = f"scoring windows of {windows} ({window:,} characters)"
    same = "" if dynamic else f"a shorter {flag('seq_len')} scores the same text, the state carried"
    check_fits(need, what, model.W_hq.device, same)


def nll_sum(
    model: CharLM,
    ids: np.ndarray,
    seq_len: int = 256,
    streams: int = 1,
    share: tuple[int, int] = (0, 1),
    progress: bool = False,
    dynamic: Dynamic | None = None,
) -> tuple[float, int]:
    """(summed NLL, characters scored) of every character after the first of each stream.

    The text is cut into `streams` contiguous pieces scored side by side as one batch (1 is
    exact: every character after the first, with the state carried through the whole text).
    Windows of `seq_len` characters carry the state from one to the next.

        stream 0: c0 c1 c2 ... | window 0 | window 1 | ...
        stream 1: ...

    With several processes, `share` = (rank, world size): this process scores only its share
    of the streams (the same cut as one process makes), so the ranks' sums add up to the
    single-process result.

    `progress` shows a bar on stderr when it is a terminal: one stream scores 40,000-50,000
    chars/s on a 2-core CPU, so a 100 MB text takes over half an hour. With `dynamic`, the
    model learns from each window after scoring it (one stream; see dynamic.py).
    """
    check_scoring_fits(model, len(ids), seq_len, streams, dynamic)
    total, count = 0.0, 0
    bar = tqdm(total=len(ids), unit="char", unit_scale=True, desc="scoring", leave=False,
               disable=None if progress else True)  # fmt: skip
    pieces = (
        windows(model, ids, seq_len, streams, *share)
        if dynamic is None
        else adapted_windows(model, ids, seq_len, dynamic)
    )
    with bar, torch.no_grad():
        for _, nll, valid in pieces:
            total += float(nll[valid].double().sum())
            scored = int(valid.sum())
            count += scored
            bar.update(scored)
    return total, count


def validate(
    model: CharLM, val_ids: np.ndarray, seq_len: int, streams: int, ctx: distributed.Context
) -> float | None:
    """Mean NLL of a run's validation text (None: it has none), scored in `streams` pieces
    (the batch's rows) with `seq_len` windows; each rank scores its share of the streams."""
    if len(val_ids) == 0:
        return None
    nll, count = nll_sum(model, val_ids, seq_len, streams, (ctx.rank, ctx.world_size))
    total = distributed.all_reduce_sum(
        torch.tensor([nll, count], dtype=torch.float64, device=model.W_hq.device)
    )
    return float(total[0] / total[1])


def score(
    model: CharLM,
    ids: np.ndarray,
    seq_len: int = 256,
    streams: int = 1,
    progress: bool = False,
    dynamic: Dynamic | None = None,
) -> Score:
    """Mean NLL of a text (see `nll_sum`)."""
    Scoring(seq_len=seq_len, streams=streams, dynamic=dynamic is not None)  # refuses bad ones
    check_scorable(len(ids))
    total, count = nll_sum(model, ids, seq_len, streams, progress=progress, dynamic=dynamic)
    uniform = math.log(max(model.cfg.vocab_size, 2))
    adapted_badly = dynamic is not None and total / count > DIVERGED * uniform
    if not math.isfinite(total) or adapted_badly:  # NaN weights, or a diverging dynamic copy
        why = "NaN weights?"
        if dynamic:
            why = f"{flag('dynamic_lr', float(f'{dynamic.lr:g}'))} made the model diverge"
        raise CharLMError(f"the text's score is not a finite number ({total / count:g}): {why}")
    return Score(nll=total / count, chars=count)


def check_scorable(known: int) -> None:
    """The first character has no prediction: a text needs 2 known characters to be scored."""
    if known < 2:
        raise CharLMError("the text has fewer than 2 known characters: nothing to score")


def score_text(
    model: CharLM,
    vocab: Vocab,
    text: str,
    seq_len: int = 256,
    skip_unknown: bool = False,
    streams: int = 1,
    progress: bool = False,
    dynamic: Dynamic | None = None,
) -> Score:
    """Score a text; characters outside the vocabulary are an error, or skipped and counted.

    `streams` > 1 scores that many contiguous pieces as one batch: several times faster, but
    each piece starts without the text before it and its first character is not scored.
    `dynamic` (one stream only) lets the model learn from each window once it is scored.
    """
    expect("text", text, "str")
    ids = vocab.encode(text, skip_unknown=skip_unknown)
    result = score(model, ids, seq_len, streams, progress, dynamic)
    result.skipped = 0 if vocab.is_bytes else len(text) - len(ids)  # bytes: all known
    return result


@torch.no_grad()
def char_predictions(
    model: CharLM, ids: np.ndarray, seq_len: int = 256, k: int = 5, dynamic: Dynamic | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every character after the first: its NLL (nats), the top-k ids and probabilities.

    Same windows and carried state as `evaluate.nll_sum` with one stream, so the NLLs are the
    ones `score` averages (with `dynamic`: the adapted model's). Shapes: (n-1,), (n-1, k) x 2.
    """
    check_scoring_fits(model, len(ids), seq_len, 1, dynamic)
    k = min(k, model.cfg.vocab_size)
    nll, top_p, top_i = [], [], []
    pieces = (
        windows(model, ids, seq_len, streams=1, rank=0, world_size=1)
        if dynamic is None
        else adapted_windows(model, ids, seq_len, dynamic)
    )
    for logits, window_nll, _ in pieces:
        p, i = logits[:, 0].softmax(-1).topk(k, dim=-1)
        nll.append(window_nll[:, 0])
        top_p.append(p)
        top_i.append(i)
    nll, top_i, top_p = torch.cat(nll), torch.cat(top_i), torch.cat(top_p)
    return nll.cpu(), top_i.cpu(), top_p.cpu()


def surprisal(
    model: CharLM, vocab: Vocab, text: str, seq_len: int = 256, dynamic: Dynamic | None = None
) -> Surprisal:
    """Score every character of `text`; those outside the vocabulary are left unscored and
    skipped by the model (as `eval perplexity --skip-unknown` does), as is the first one.
    With `dynamic`, the model learns from each window after scoring it."""
    unknown = set(vocab.unknown(text))
    known = [c not in unknown for c in text]
    ids = vocab.encode(text, skip_unknown=True)
    check_scorable(len(ids))
    nll, top_i, top_p = char_predictions(model, ids, seq_len, TOP_K, dynamic)
    bits_known = (nll.double() / math.log(2)).tolist()
    chars = vocab.chars
    tops = [
        [(chars[i], p) for i, p in zip(row_i, row_p, strict=True)]
        for row_i, row_p in zip(top_i.tolist(), top_p.tolist(), strict=True)
    ]
    bits: list[float | None] = []
    top: list[list[tuple[str, float]] | None] = []
    j = -1  # index among the known characters
    for is_known in known:
        if is_known:
            j += 1
        scored = is_known and j > 0
        bits.append(bits_known[j - 1] if scored else None)
        top.append(tops[j - 1] if scored else None)
    return Surprisal(text, bits, top, known)
