"""Loss bookkeeping (charlm/meter.py): sums on the device, divergence caught at its threshold."""

from __future__ import annotations

import math

import pytest
import torch

from charlm.config import TrainConfig
from charlm.errors import CharLMError, command_line
from charlm.meter import LossMeter, Progress
from charlm.metrics import DIVERGED


def meter(vocab_size: int = 65) -> LossMeter:
    return LossMeter(Progress(step=7), torch.device("cpu"), TrainConfig(lr=0.1), vocab_size)


def feed(m: LossMeter, losses: list[float]) -> None:
    for loss in losses:
        m.add(torch.tensor(loss, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))


def test_a_huge_finite_loss_is_a_divergence() -> None:
    m = meter(65)
    limit = DIVERGED * math.log(65)
    feed(m, [limit * 0.9] * 3)
    m.check()  # a bad start, not yet a divergence
    feed(m, [limit * 2] * 3)  # mean of the six: 1.45 x the limit
    with pytest.raises(CharLMError, match=r"by step 7, over 10 times that of a uniform guess"):
        m.check()


@pytest.mark.parametrize("bad", [math.inf, math.nan, 1e308 * 10])
def test_non_finite_losses_stop_the_run(bad: float) -> None:
    m = meter()
    feed(m, [1.0, bad])
    with pytest.raises(CharLMError, match=r"training diverged\. Lower lr \(now"):
        m.check()
    with command_line():  # a meter made by the command names the flags
        m = meter()
    feed(m, [1.0, bad])
    with pytest.raises(CharLMError, match=r"training diverged\. Lower --lr"):
        m.check()


def test_fold_moves_the_sums_and_counts_afresh() -> None:
    m = meter()
    feed(m, [2.0, 4.0])
    m.p.epoch_batches = 2
    m.fold()
    assert (m.p.epoch_loss, m.p.epoch_grad_norm, m.batches) == (6.0, 2.0, 0)
    assert float(m.loss) == 0.0 and m.mean() == 3.0
    m.check()  # nothing since the fold: not a divergence


def test_a_one_character_vocabulary_has_a_threshold() -> None:
    m = meter(1)  # ln 1 = 0 would make every loss a divergence
    feed(m, [0.5])
    m.check()
