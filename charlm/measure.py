"""Measuring what a step, a validation, an evaluation, a sample and a checkpoint cost on this
machine, for a time budget's plan (budget.py, settle.py).

The measuring trains a throwaway copy of the learner's state, put back afterwards, so the run
is the one `--max-steps PLANNED` replays. It is handed the learner, the sampler whose batches
it trains on and functions that save a checkpoint and draw a sample, and knows nothing else of
the run. As the run goes, `agree_rate` gives every rank rank 0's recent step rate, so that all
revise the plan alike.
"""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple
from typing import Any

import torch

from charlm import distributed
from charlm.budget import Costs, Pace, Plan, Work, revised_steps
from charlm.learner import Learner
from charlm.samplers import Sampler

# untimed steps first (memory, kernels and optimizer state are set up in the first ones), then
# up to MEASURE_STEPS timed ones, while they take under MEASURE_FRACTION of the budget. Their
# mean counts: on a shared machine a step's time moves by a third from one second to the next,
# and the run's total is the mean's multiple (a median of five planned 25% too many steps)
WARM_UP_STEPS = 2
MEASURE_STEPS = 30
MEASURE_FRACTION = 0.02


def measure(
    learner: Learner,
    sampler: Sampler,
    save: Callable[[], None],
    epoch: int,
    budget_s: float,
    val_chars: int,
    evaluation: tuple[int, int] = (0, 1),
    sample: Callable[[], None] | None = None,
) -> Costs:
    """Time a step (on `epoch`'s batches), a validation of `val_chars` characters, an
    evaluation of `evaluation` = (characters, streams), a `sample()` and a `save()`, after
    untimed warm-up steps; the learner is left as it was."""
    start = time.perf_counter()
    snapshot = io.BytesIO()
    torch.save(learner.state_dict(), snapshot)  # weights, optimizer, schedule, RNG, state
    batches = sampler.batches(epoch)  # the run's own batches: real data
    step_s, X = _time_steps(learner, sampler, batches, start, budget_s)
    snapshot.seek(0)
    saved = torch.load(snapshot, map_location=learner.device, weights_only=True)
    learner.load_state_dict(saved, sampler.rows)
    validation_s = _time_validation(learner, X, val_chars, learner.cfg.batch_size)
    eval_s = _time_validation(learner, X, *evaluation)
    sample_s = _time(sample) if sample else 0.0
    checkpoint_s = _time(save)  # on every rank: building a checkpoint gathers the hidden state
    return Costs(step_s, validation_s, checkpoint_s, time.perf_counter() - start, eval_s, sample_s)


def _time(work: Callable[[], None]) -> float:
    tick = time.perf_counter()
    work()
    return time.perf_counter() - tick


def agree(
    costs: Costs, spent_s: float, ctx: distributed.Context, device: torch.device
) -> tuple[Costs, float]:
    """Rank 0's costs and spent seconds, on every rank: their clocks differ, their plans (and
    so their schedules) must not."""
    numbers = [*astuple(costs), spent_s]
    *agreed, spent = _rank0(numbers, ctx, device)
    return Costs(*agreed), spent


def agree_rate(
    due: bool, step_s: float, spent_s: float, ctx: distributed.Context, device: torch.device
) -> tuple[bool, float, float]:
    """Rank 0's answer on every rank: whether the plan is due for a revision, the recent
    seconds a step and the seconds spent (called by every rank at the same step)."""
    flag, step_s, spent_s = _rank0([float(due), step_s, spent_s], ctx, device)
    return flag > 0, step_s, spent_s


def _rank0(numbers: list[float], ctx: distributed.Context, device: torch.device) -> list[float]:
    """Rank 0's `numbers`, on every rank."""
    mine = numbers if ctx.is_main else [0.0] * len(numbers)
    return distributed.all_reduce_sum(
        torch.tensor(mine, dtype=torch.float64, device=device)
    ).tolist()


def _time_steps(
    learner: Learner,
    sampler: Sampler,
    batches: Iterator[tuple[Any, Any]],
    start: float,
    budget_s: float,
) -> tuple[float, torch.Tensor]:
    """The mean of up to MEASURE_STEPS steps after WARM_UP_STEPS untimed ones, and a batch's
    input. An epoch shorter than the measuring starts over: the steps train a throwaway copy."""
    times = []
    for _ in range(WARM_UP_STEPS + MEASURE_STEPS):
        X, Y = learner.to_device(*next(batches, None) or next(sampler.batches(0)))
        tick = time.perf_counter()
        float(learner.step(X, Y)[0])  # float(): wait for the device
        times.append(time.perf_counter() - tick)
        over = time.perf_counter() - start > MEASURE_FRACTION * budget_s
        # ranks stop measuring together: each of these steps all-reduces gradients
        over = distributed.all_reduce_sum(torch.tensor(float(over), device=learner.device))
        if len(times) > WARM_UP_STEPS and float(over) > 0:
            break
    return statistics.mean(times[WARM_UP_STEPS:]), X


def _time_validation(learner: Learner, X: torch.Tensor, chars: int, streams: int) -> float:
    """A validation of `chars` characters in `streams` streams (windows of the batch's length;
    this rank's share of the streams, as it has of the batch's rows)."""
    if not chars:
        return 0.0
    rows = max(1, min(X.shape[1], streams * X.shape[1] // learner.cfg.batch_size))
    with torch.no_grad():
        for _ in range(2):  # the first one warms up
            tick = time.perf_counter()
            float(learner.model(X[:, :rows], dropout=False)[0].sum())
            forward_s = time.perf_counter() - tick
    windows = math.ceil(math.ceil(chars / streams) / X.shape[0])
    return windows * forward_s


class Replanning:
    """A time budget's plan, fitted again to the recent step rate as the run goes (budget.py):
    every `every_s` seconds of steps, at rank 0's rate on every rank (under torchrun, at a
    step of `sync_every`: every rank enters the agreement at the same step)."""

    def __init__(
        self, every_s: float, sync_every: int, ctx: distributed.Context, device: torch.device
    ) -> None:
        self.pace, self.sync_every, self.ctx, self.device = Pace(every_s), sync_every, ctx, device

    def add(self, seconds: float) -> None:
        """A step took `seconds`."""
        self.pace.add(seconds)

    def revise(
        self, plan: Plan, step: int, spent_s: float, budget_s: float, work: Work, run: str
    ) -> Plan | None:
        """The plan revised at `step` (`spent_s` of `budget_s` spent), if it is due and its
        end moved; the run's folder `run` replays it."""
        due, step_s = self.pace.due, self.pace.step_s
        if self.ctx.enabled:
            if step % self.sync_every:
                return None
            due, step_s, spent_s = agree_rate(due, step_s, spent_s, self.ctx, self.device)
        if not due:
            return None
        self.pace.take()
        steps = revised_steps(plan, step_s, step, spent_s, budget_s, work)
        return None if steps is None else plan.revised(step, steps, step_s, run)
