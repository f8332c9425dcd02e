"""How to continue a prefix: one frozen settings object, checked once where it is made.

Sampling (temperature, top-k, top-p, greedy) or a beam search (`beam_width`), which is
deterministic and so refuses the settings that shape or seed a random draw.

Kept free of torch, so that the `charlm generate` command can check its options before loading
anything. (Not to be confused with `charlm.samplers`, which orders the training batches.)
"""

from __future__ import annotations

from dataclasses import dataclass

from charlm.errors import CharLMError, brief, check_types, flag


@dataclass(frozen=True)
class Sampling:
    """The settings of one generation call; invalid values are refused with the flag's name."""

    length: int = 200  # characters to sample after the prefix
    temperature: float = 1.0  # logits / temperature: <1 sharper, >1 wilder
    top_k: int | None = None  # sample among the k likeliest characters
    top_p: float | None = None  # nucleus: the smallest set of probability mass >= top_p
    greedy: bool = False  # always the likeliest character (temperature, seed unused)
    num_samples: int = 1  # streams sampled as one batch
    seed: int | None = None  # same seed, same text; None: a fresh one
    amp: bool = False  # several streams: bfloat16 matmuls
    int8: bool = False  # several streams on CPU: int8 matmuls
    beam_width: int | None = None  # beam search: the likeliest continuations a beam of K finds

    def __post_init__(self) -> None:
        check_types(self)  # "0.8" for a temperature, "no" for greedy: one line, not below
        if self.seed is not None and not -(2**63) <= self.seed < 2**64:
            raise CharLMError(f"{flag('seed')} must be in [-2**63, 2**64), got {brief(self.seed)}")
        if self.amp and self.int8:
            raise CharLMError(
                f"{flag('amp')} and {flag('int8')} are two precisions for the same matmuls: "
                f"choose one"
            )
        if self.length < 0:
            raise CharLMError(f"{flag('length')} must be >= 0, got {brief(self.length)}")
        if not self.temperature > 0:
            raise CharLMError(
                f"{flag('temperature')} must be > 0, got {brief(self.temperature)} (use "
                f"{flag('greedy', True)} for 0)"
            )
        if self.top_k is not None and self.top_k <= 0:
            raise CharLMError(f"{flag('top_k')} must be > 0, got {brief(self.top_k)}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharLMError(f"{flag('top_p')} must be in (0, 1], got {brief(self.top_p)}")
        if self.num_samples <= 0:
            raise CharLMError(f"{flag('num_samples')} must be > 0, got {brief(self.num_samples)}")
        if self.beam_width is not None:
            self._check_beam(self.beam_width)

    def check_stream(self) -> None:
        """Refuse to stream a beam: it knows its best continuation only at the end."""
        if self.beam_width is not None:
            raise CharLMError(
                f"{flag('stream')} prints characters as they are chosen, but a beam "
                f"({flag('beam_width')}) knows its best continuation only at the end: drop "
                f"{flag('stream')}"
            )

    def _check_beam(self, width: int) -> None:
        """A beam is deterministic: what would shape or seed a random draw is refused."""
        if width <= 0:
            raise CharLMError(f"{flag('beam_width')} must be > 0, got {brief(width)}")
        given = {
            "temperature": self.temperature != 1.0,
            "top_k": self.top_k is not None,
            "top_p": self.top_p is not None,
            "greedy": self.greedy,
            "seed": self.seed is not None,
        }
        for name, set_ in given.items():
            if set_:
                raise CharLMError(
                    f"{flag(name)} does not apply to {flag('beam_width')}: a beam is "
                    f"deterministic, it keeps the likeliest continuations (drop one of the two)"
                )
        if self.num_samples > width:
            raise CharLMError(
                f"{flag('num_samples', self.num_samples)} must be <= "
                f"{flag('beam_width', width)}: "
                "a beam returns the best of the continuations it holds"
            )
