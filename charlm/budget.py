"""Fitting a run to a time budget: how many steps fit, decided once, early in the run.

A budget that only stopped the run would cut the learning-rate schedule wherever the clock
ran out: on a large corpus, with the rate still near its peak. Instead the run measures what
a step, a validation and a checkpoint cost on this machine (after the first, slow steps), and
plans the number of steps that fit together with the validations and checkpoints that come
with them; the schedule (warm-up, cosine, step) spans that plan. The plan is recorded in
config.json and in every checkpoint, so `--resume` keeps it, and `--max-steps PLANNED
--time-budget 0` replays the run step for step on any machine.

    budget = measuring + N * step + ceil(N / E) * (validation + 2 checkpoints)
             + (N // save_every) * checkpoint + a safety margin
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# fraction of the budget left out of the plan: noise on a shared machine, samples, rounding
SAFETY = 0.03
# untimed steps first (memory, kernels and optimizer state are set up in the first ones), then
# up to MEASURE_STEPS timed ones (their median counts), while they take under MEASURE_FRACTION
# of the budget
WARM_UP_STEPS = 2
MEASURE_STEPS = 5
MEASURE_FRACTION = 0.03


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


def plan_record(steps: int, set_by: str, costs: Costs | None) -> dict[str, Any]:
    """The plan as config.json records it: enough to understand it and to replay the run."""
    record: dict[str, Any] = {
        "steps": steps,
        "set_by": set_by,
        "replay": f"--max-steps {steps} --time-budget 0",
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
