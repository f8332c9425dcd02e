"""Fitting a run to a time budget: how many steps fit, decided once, early in the run.

A budget that only stopped the run would cut the learning-rate schedule wherever the clock
ran out: on a large corpus, with the rate still near its peak. Instead the run measures what
a step, a validation and a checkpoint cost on this machine (after the first, slow steps), and
plans the number of steps that fit together with the validations and checkpoints that come
with them; the schedule (warm-up, cosine, step) spans that plan. The plan is recorded in
config.json and in every checkpoint, so `--resume` keeps it, and `--max-steps PLANNED
--time-budget 0 --hidden-size H --seq-len T --lr LR --dropout P` (the values it ran with: auto
picks them by the budget and the plan) replays the run step for step on any machine.

    budget = measuring + N * step + ceil(N / E) * (validation + 2 checkpoints)
             + (N // save_every) * checkpoint + a safety margin
"""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from charlm import checkpoint, distributed
from charlm.config import flag

if TYPE_CHECKING:
    from charlm.train import Trainer

# fraction of the budget left out of the plan: noise on a shared machine, samples, rounding
SAFETY = 0.03
# untimed steps first (memory, kernels and optimizer state are set up in the first ones), then
# up to MEASURE_STEPS timed ones, while they take under MEASURE_FRACTION of the budget. Their
# mean counts: on a shared machine a step's time moves by a third from one second to the next,
# and the run's total is the mean's multiple (a median of five planned 25% too many steps)
WARM_UP_STEPS = 2
MEASURE_STEPS = 30
MEASURE_FRACTION = 0.02


@dataclass(frozen=True)
class Costs:
    """Seconds that one step, one validation and one checkpoint take on this machine, and
    the seconds the measuring itself took (spent from the budget too)."""

    step_s: float
    validation_s: float
    checkpoint_s: float
    measure_s: float = 0.0


def plan_steps(seconds: float, costs: Costs, steps_per_epoch: int, save_every: int = 0) -> int:
    """The most steps whose training, epoch-end work and checkpoints fit in `seconds` (>= 1).

    Every epoch end, and the final partial one, validates and writes checkpoint.pt and
    best.pt. N steps end ceil(N / E) <= N / E + 1 epochs: the extra one is paid up front.
    """
    usable = (seconds - costs.measure_s) * (1 - SAFETY)
    epoch_end = costs.validation_s + 2 * costs.checkpoint_s
    per_step = costs.step_s + epoch_end / steps_per_epoch
    if save_every:
        per_step += costs.checkpoint_s / save_every
    return max(1, int((usable - epoch_end) / per_step))


def plan_record(
    steps: int, set_by: str, costs: Costs | None, chosen: dict[str, float]
) -> dict[str, Any]:
    """The plan as config.json records it: enough to understand it and to replay the run.

    The replay names the settings that auto chose by the budget (`chosen`: --hidden-size,
    --seq-len, --lr, --dropout): left at auto, a run without a budget would choose others."""
    given = " ".join(f"{flag(name)} {value:g}" for name, value in chosen.items())
    record: dict[str, Any] = {
        "steps": steps,
        "set_by": set_by,
        "replay": f"--max-steps {steps} --time-budget 0 {given}",
    }
    if costs is not None:
        record["measured"] = asdict(costs)
    return record


def plan_line(record: dict[str, Any]) -> str:
    """The plan in one line, printed when a run starts."""
    costs = record.get("measured")
    measured = (
        f"; measured {costs['step_s']:.4f} s a step, {costs['validation_s']:.1f} s a validation"
        if costs
        else ""
    )
    return (
        f"plan: {record['steps']:,} steps (set by {record['set_by']}{measured}); replay exactly "
        f"with {record['replay']}"
    )


def agreed_fit(trainer: Trainer, costs: Costs) -> int:
    """The steps that fit in what is left of the budget, rank 0's answer on every rank: their
    clocks differ, their schedules must not."""
    cfg, p = trainer.cfg, trainer.p
    fit = plan_steps(cfg.time_budget - p.elapsed_s, costs, len(trainer.sampler), cfg.save_every)
    mine = torch.tensor(float(fit if trainer.dist.is_main else 0), device=trainer.device)
    return int(distributed.all_reduce_sum(mine))


def measure(trainer: Trainer) -> Costs:
    """Time a step, a validation and a checkpoint here, after untimed warm-up steps.

    The steps train a throwaway copy of the run's state, put back afterwards, so the run is the
    one `--max-steps PLANNED` replays.
    """
    start = time.perf_counter()
    snapshot = io.BytesIO()
    torch.save(trainer.payload(), snapshot)  # weights, optimizer, schedule, RNG, hidden state
    learner = trainer.learner
    batches = trainer.sampler.batches(trainer.p.epoch)  # the run's own batches: real data
    step_s, (X, _) = _time_steps(trainer, batches, start)
    snapshot.seek(0)
    trainer.restore(torch.load(snapshot, map_location=learner.device, weights_only=True))
    validation_s = _time_validation(trainer, X)
    tick = time.perf_counter()
    payload = trainer.payload()  # on every rank: it gathers the hidden state
    if trainer.dist.is_main:
        probe = trainer.folder.file(".checkpoint-probe.tmp")  # a kill leaves it: see run.py
        checkpoint.save(payload, probe)
        probe.unlink()
    checkpoint_s = time.perf_counter() - tick
    return Costs(step_s, validation_s, checkpoint_s, time.perf_counter() - start)


def _time_steps(
    trainer: Trainer, batches: Iterator[tuple[Any, Any]], start: float
) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """The mean of up to MEASURE_STEPS steps after WARM_UP_STEPS untimed ones, and a batch.

    An epoch shorter than the measuring starts over: the steps train a throwaway copy."""
    learner, times = trainer.learner, []
    for _ in range(WARM_UP_STEPS + MEASURE_STEPS):
        X, Y = learner.to_device(*next(batches, None) or next(trainer.sampler.batches(0)))
        tick = time.perf_counter()
        float(learner.step(X, Y)[0])  # float(): wait for the device
        times.append(time.perf_counter() - tick)
        over = time.perf_counter() - start > MEASURE_FRACTION * trainer.cfg.time_budget
        # ranks stop measuring together: each of these steps all-reduces gradients
        over = distributed.all_reduce_sum(torch.tensor(float(over), device=trainer.device))
        if len(times) > WARM_UP_STEPS and float(over) > 0:
            break
    return statistics.mean(times[WARM_UP_STEPS:]), (X, Y)


def _time_validation(trainer: Trainer, X: torch.Tensor) -> float:
    """A validation window is the shape of a training batch (streams = batch rows)."""
    if not len(trainer.val_ids):
        return 0.0
    model = trainer.model
    with torch.no_grad():
        for _ in range(2):  # the first one warms up
            tick = time.perf_counter()
            float(model(X, dropout=False)[0].sum())
            forward_s = time.perf_counter() - tick
    windows = math.ceil(math.ceil(len(trainer.val_ids) / trainer.cfg.batch_size) / X.shape[0])
    return windows * forward_s
