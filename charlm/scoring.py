"""How a text is scored: frozen settings objects, checked once where they are made.

Kept free of torch, like `charlm.sampling`, so that `charlm eval perplexity` refuses a bad
combination of options before it loads a model, and a server or a notebook checks a request
the same way. `charlm.report` runs what these settings describe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from charlm.errors import CharLMError, brief, check_types, flag

if TYPE_CHECKING:
    import torch

# the best for the default model (180 s on tiny Shakespeare) on 10,000 characters of its
# training text (not a text reported on), --seq-len 256: see benchmarks/RESULTS.md
DEFAULT_LR = 0.3
RMS_LR, RMS_DECAY = 1e-3, 0.0  # --dynamic-rms: tuned the same way (statistics: 100k chars)
PAGE_CHARS = 20_000  # --html shows at most this many characters unless told otherwise


@dataclass(frozen=True)
class Dynamic:
    """Settings of dynamic evaluation: SGD step size, the pull back to the trained weights per
    window (0: none; 1 would forget each step at once), and for the RMS-normalised update
    sqrt(MS_g) per weight (`dynamic.gradient_rms`), in `model.parameters()` order."""

    lr: float = DEFAULT_LR
    decay: float = 0.0
    grad_rms: tuple[torch.Tensor, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, value in (("lr", self.lr), ("decay", self.decay)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CharLMError(f"{flag('dynamic_' + name)} must be a number, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CharLMError(f"{flag('dynamic_lr')} must be > 0, got {brief(self.lr)}")
        if not 0 <= self.decay < 1:
            raise CharLMError(f"{flag('dynamic_decay')} must be in [0, 1), got {brief(self.decay)}")

    @property
    def update(self) -> str:
        """The update's name, as the CLI and the --html page say it."""
        return "SGD" if self.grad_rms is None else "RMS-normalised"


# the smallest value each whole-number setting of Scoring takes
MINIMUM = {"seq_len": 1, "streams": 1, "html_max_chars": 2}


@dataclass(frozen=True)
class Scoring:
    """The settings of one evaluation, named as `charlm eval perplexity`'s flags; invalid
    values and combinations are refused here, with the flag's name."""

    seq_len: int = 256  # window length; the state is carried from window to window
    streams: int = 1  # the text scored as this many pieces in one batch (1 is exact)
    skip_unknown: bool = False  # characters outside the vocabulary: skipped, else an error
    dynamic: bool = False  # the model learns from each window once it is scored
    dynamic_lr: float | None = None  # None: the chosen update's tuned default
    dynamic_decay: float | None = None  # None: the chosen update's tuned default
    dynamic_rms: str | None = None  # the RMS-normalised update, its statistics from this text
    html_max_chars: int | None = None  # per-character data (the --html page) for this many

    def __post_init__(self) -> None:
        check_types(self)
        for name, low in MINIMUM.items():
            value = getattr(self, name)
            if value is None:
                continue
            if value < low:
                bound = "> 0" if low == 1 else f">= {low}"
                raise CharLMError(f"{flag(name)} must be {bound}, got {brief(value)}")
        if not self.dynamic:
            if (self.dynamic_lr, self.dynamic_decay, self.dynamic_rms) != (None, None, None):
                raise CharLMError(
                    f"{flag('dynamic_lr')}, {flag('dynamic_decay')} and {flag('dynamic_rms')} "
                    f"only apply with {flag('dynamic', True)}"
                )
            return
        if self.adapt is not None and self.streams != 1:  # made here: bad values fail first
            raise CharLMError(
                f"{flag('dynamic')} learns from the text in order, as one stream: it cannot "
                f"score it as {flag('streams', self.streams)} pieces at once (drop "
                f"{flag('streams')})"
            )

    @property
    def adapt(self) -> Dynamic | None:
        """The dynamic update asked for, None without --dynamic. Its defaults are the plain
        update's, or with --dynamic-rms the RMS-normalised one's (whose statistics are read
        from that text when the model is at hand: `report.adaptation`)."""
        if not self.dynamic:
            return None
        rms = self.dynamic_rms is not None
        lr = (RMS_LR if rms else DEFAULT_LR) if self.dynamic_lr is None else self.dynamic_lr
        decay = (RMS_DECAY if rms else 0.0) if self.dynamic_decay is None else self.dynamic_decay
        return Dynamic(lr=lr, decay=decay)
