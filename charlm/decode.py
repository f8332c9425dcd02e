"""Decoders: given a stepper's logits, choose the next character of every stream.

A stepper (`charlm.stepper.Stepper`, or the plain `charlm.reference.ReferenceStepper`) advances
the model; a decoder chooses. A decoder declares the `scale` it wants the logits multiplied by
(1/T to sample at temperature T, 1 otherwise), which the fast stepper folds into its output
weights, so that temperature costs nothing per step.

- `Greedy`: the likeliest character (the first, on a tie).
- `Gumbel`, `TopK`, `Nucleus`: a draw from softmax(logits / T), restricted to the k likeliest or
  to the nucleus of mass top_p, by the Gumbel-max trick: argmax(logits + g), g = -log(-log U)
  pre-drawn from a seeded generator NOISE_STEPS steps at a time, so the same seed gives the same
  text and a longer sample extends a shorter one.
- `Beam`: the continuations with the highest total log-probability that a beam of width K
  finds (it reorders the stepper's streams as hypotheses are kept and dropped).

`sampler(settings, ...)` picks the sampling decoder a `charlm.sampling.Sampling` asks for.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from charlm.cells import State
from charlm.errors import CharLMError, flag
from charlm.sampling import Sampling

NOISE_STEPS = 64  # Gumbel noise drawn per refill; fixed, so a longer sample extends a shorter one


class Stepping(Protocol):
    """What a decoder needs of a stepper (both `Stepper` and `ReferenceStepper` are one)."""

    def load_state(self, state: State) -> None: ...
    def step(self, x: torch.Tensor) -> torch.Tensor: ...
    def reorder(self, parents: torch.Tensor) -> None: ...


def next_char_probs(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """(N, V) logits -> (N, V) sampling distribution after temperature, top-k and top-p."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        # drop a character when the mass before it already reaches top_p (the first always stays)
        drop = (torch.cumsum(sorted_p, dim=-1) - sorted_p) >= top_p
        drop[:, 0] = False  # even when top_p rounds to 0 in float32
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


class Greedy:
    """Always the likeliest character; on a tie the lowest id (torch.argmax's first maximum)."""

    scale = 1.0

    def choose(self, logits: torch.Tensor, t: int, out: torch.Tensor) -> None:
        """(N, V) logits of step t -> the (N,) ids written into `out`."""
        torch.argmax(logits, dim=-1, out=out)


class Gumbel:
    """A draw from softmax(logits / T) per stream: argmax(logits / T + g), g ~ Gumbel(0, 1).

    The noise of NOISE_STEPS steps is drawn at once; a step is then one add and one argmax.
    """

    def __init__(
        self,
        temperature: float,
        seed: int | None,
        shape: tuple[int, int],
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.scale = 1 / temperature
        self.generator = torch.Generator(device=device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.noise = torch.empty(NOISE_STEPS, *shape, dtype=dtype, device=device)  # (S, N, V)
        self.rows = self.noise.unbind(0)
        # logits + noise, contiguous whatever the logits' layout
        self.scores = torch.empty_like(self.noise[0])

    def refill(self) -> None:
        """Gumbel(0, 1) = -log(-log U), U uniform on [0, 1), for the next NOISE_STEPS steps."""
        self.noise.uniform_(generator=self.generator).log_().neg_().log_().neg_()

    def choose(self, logits: torch.Tensor, t: int, out: torch.Tensor) -> None:
        """(N, V) logits / T of step t -> the (N,) ids written into `out`."""
        i = t % NOISE_STEPS
        if i == 0:
            self.refill()
        torch.argmax(torch.add(logits, self.rows[i], out=self.scores), dim=-1, out=out)


class TopK(Gumbel):
    """Gumbel-max among the k likeliest characters (k < V)."""

    def __init__(self, k: int, *args: object) -> None:
        super().__init__(*args)
        self.k = k
        self.rows_k = [g[:, :k] for g in self.rows]  # the noise of the k kept, made once

    def choose(self, logits: torch.Tensor, t: int, out: torch.Tensor) -> None:
        i = t % NOISE_STEPS
        if i == 0:
            self.refill()
        best, which = torch.topk(logits, self.k, dim=-1)  # (N, k)
        pick = best.add_(self.rows_k[i]).argmax(dim=-1, keepdim=True)
        torch.gather(which, 1, pick, out=out[:, None])


class Nucleus(Gumbel):
    """Gumbel-max on the distribution `next_char_probs` keeps: top-k (if any), then top-p."""

    def __init__(self, k: int | None, top_p: float, *args: object) -> None:
        super().__init__(*args)
        self.k, self.top_p = k, top_p

    def choose(self, logits: torch.Tensor, t: int, out: torch.Tensor) -> None:
        i = t % NOISE_STEPS
        if i == 0:
            self.refill()
        probs = next_char_probs(logits, 1.0, self.k, self.top_p)
        torch.argmax(probs.log_().add_(self.rows[i]), dim=-1, out=out)


def sampler(
    s: Sampling, vocab_size: int, dtype: torch.dtype, device: torch.device
) -> Greedy | Gumbel:
    """The decoder that draws `s.num_samples` streams as `s` asks (not a beam)."""
    if s.greedy:
        return Greedy()
    args = (s.temperature, s.seed, (s.num_samples, vocab_size), dtype, device)
    k = s.top_k if s.top_k is not None and s.top_k < vocab_size else None
    if s.top_p is not None and s.top_p < 1:
        return Nucleus(k, s.top_p, *args)
    if k is not None:
        return TopK(k, *args)
    return Gumbel(*args)


class Beam:
    """Beam search: the `num_samples` best continuations that a beam of `width` keeps.

    One order both keeps the beam and ranks the result: the higher total log-probability first,
    and between equal totals the lexicographically smaller id sequence (so a tie goes to the
    lower character id). The beam starts with one live hypothesis, not `width` copies of it.
    Totals are summed in float64, from the logits at temperature 1.
    """

    scale = 1.0

    def __init__(self, width: int, num_samples: int = 1) -> None:
        if num_samples > width:
            raise ValueError(f"a beam of width {width} holds fewer than {num_samples} texts")
        self.width, self.num_samples = width, num_samples

    def search(
        self, stepper: Stepping, x: torch.Tensor, length: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """((num_samples, length) ids, (num_samples,) total log-probabilities), best first.

        `stepper` runs `width` streams, all in the state before `x` (a (1,) id), at `scale`.
        """
        K = self.width
        scores = torch.full((K,), float("-inf"), dtype=torch.float64, device=x.device)
        scores[0] = 0.0  # rows 1.. stay empty until the first step fills them
        keys = torch.empty(length, K, dtype=torch.long, device=x.device)
        x, V = x.expand(K), 1
        for t in range(length):
            logp = torch.log_softmax(stepper.step(x).to(torch.float64), dim=-1)  # (K, V)
            V = logp.shape[1]
            # the rows are kept in lexicographic order of their sequences, so a candidate's
            # flat index, row * V + id, orders the candidates as their sequences: a stable sort
            # by score keeps the lower sequence first among equal scores
            candidates = torch.add(scores[:, None], logp).view(-1)  # (K * V,)
            kept = torch.sort(candidates, descending=True, stable=True).indices[:K]
            key = keys[t] = kept.sort().values  # back into lexicographic order
            scores = candidates[key]
            stepper.reorder(key // V)
            x = key % V
        best = torch.sort(scores, descending=True, stable=True).indices[: self.num_samples]
        totals = scores[best].cpu().numpy()
        if not np.isfinite(totals).all():
            raise CharLMError(
                f"{flag('num_samples', self.num_samples)} asks for more continuations than "
                f"the {int(torch.isfinite(scores).sum())} that {flag('length', length)} has"
            )
        return _trace(keys.cpu().numpy(), best.cpu().numpy(), V), totals


def _trace(keys: np.ndarray, rows: np.ndarray, vocab_size: int) -> np.ndarray:
    """Follow the kept rows back from the last step: (len(rows), length) ids."""
    ids = np.empty((len(rows), len(keys)), dtype=np.int64)
    for t in range(len(keys) - 1, -1, -1):
        key = keys[t, rows]
        ids[:, t], rows = key % vocab_size, key // vocab_size
    return ids
