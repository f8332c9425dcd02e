"""Measuring what a step, a validation and a checkpoint cost on this machine, for a time
budget's plan (budget.py, settle.py).

The measuring trains a throwaway copy of the learner's state, put back afterwards, so the run
is the one `--max-steps PLANNED` replays. It is handed the learner, the sampler whose batches
it trains on and a function that saves a checkpoint, and knows nothing else of the run.
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
from charlm.budget import Costs
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
) -> Costs:
    """Time a step (on `epoch`'s batches), a validation of `val_chars` characters and a
    `save()`, after untimed warm-up steps; the learner is left as it was."""
    start = time.perf_counter()
    snapshot = io.BytesIO()
    torch.save(learner.state_dict(), snapshot)  # weights, optimizer, schedule, RNG, state
    batches = sampler.batches(epoch)  # the run's own batches: real data
    step_s, X = _time_steps(learner, sampler, batches, start, budget_s)
    snapshot.seek(0)
    saved = torch.load(snapshot, map_location=learner.device, weights_only=True)
    learner.load_state_dict(saved, sampler.rows)
    validation_s = _time_validation(learner, X, val_chars)
    tick = time.perf_counter()
    save()  # on every rank: building a checkpoint gathers the hidden state
    checkpoint_s = time.perf_counter() - tick
    return Costs(step_s, validation_s, checkpoint_s, time.perf_counter() - start)


def agree(
    costs: Costs, spent_s: float, ctx: distributed.Context, device: torch.device
) -> tuple[Costs, float]:
    """Rank 0's costs and spent seconds, on every rank: their clocks differ, their plans (and
    so their schedules) must not."""
    mine = [*astuple(costs), spent_s] if ctx.is_main else [0.0] * 5
    agreed = distributed.all_reduce_sum(torch.tensor(mine, dtype=torch.float64, device=device))
    *numbers, spent = agreed.tolist()
    return Costs(*numbers), spent


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


def _time_validation(learner: Learner, X: torch.Tensor, val_chars: int) -> float:
    """A validation window is the shape of a training batch (streams = batch rows)."""
    if not val_chars:
        return 0.0
    with torch.no_grad():
        for _ in range(2):  # the first one warms up
            tick = time.perf_counter()
            float(learner.model(X, dropout=False)[0].sum())
            forward_s = time.perf_counter() - tick
    windows = math.ceil(math.ceil(val_chars / learner.cfg.batch_size) / X.shape[0])
    return windows * forward_s
