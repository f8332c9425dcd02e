"""A loss in nats per character as the numbers people compare: perplexity and bits.

The one place these formulas live; training rows, `eval`, `info`, `plot` and the surprisal page
all call them. Perplexity is exp(nll), inf (not an OverflowError) once a run diverges; bits per
character (per byte, for a byte-level model) is nll / ln 2. A mean loss of DIVERGED times a
uniform guess's, ln V, counts as diverged: training stops there, dynamic evaluation refuses it.
"""

from __future__ import annotations

import math

LN2 = math.log(2)
DIVERGED = 10  # a mean loss this many times a uniform guess's (ln V) is a diverged run


def perplexity(nll: float) -> float:
    """exp(nll), or inf where that overflows a float."""
    try:
        return math.exp(nll)
    except OverflowError:
        return math.inf


def bits(nll: float) -> float:
    """nll in nats -> bits."""
    return nll / LN2
