"""What a time budget buys: the steps that fit, and the plan a run records.

A budget that only stopped the run would cut the learning-rate schedule wherever the clock
ran out: on a large corpus, with the rate still near its peak. Instead the run measures what
a step, a validation and a checkpoint cost on this machine (measure.py), and plans the number
of steps that fit together with the validations and checkpoints that come with them; the
schedule (warm-up, cosine, step) spans that plan. The plan is recorded in config.json and in
every checkpoint, so `--resume` keeps it, and `--max-steps PLANNED --time-budget 0
--hidden-size H --seq-len T --lr LR --dropout P` (the values it ran with: auto picks them by the
budget and the plan) replays the run step for step on any machine.

    budget = measuring + N * step + ceil(N / E) * (validation + 2 checkpoints)
             + (N // save_every) * checkpoint + a safety margin

Plain arithmetic, free of torch: settle.py makes the plan from the measured costs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from charlm.errors import option
from charlm.schema import Float, Int, Opt, Record, Str, check

# fraction of the budget left out of the plan: noise on a shared machine, samples, rounding
SAFETY = 0.03


@dataclass(frozen=True)
class Costs:
    """Seconds that one step, one validation and one checkpoint take on this machine, and
    the seconds the measuring itself took (spent from the budget too)."""

    step_s: float
    validation_s: float
    checkpoint_s: float
    measure_s: float = 0.0

    def line(self) -> str:
        """The costs in one line, as `charlm train --dry-run` prints them."""
        return (
            f"measured: {self.step_s:.4f} s a step, {self.validation_s:.2f} s a validation, "
            f"{self.checkpoint_s:.3f} s a checkpoint ({self.measure_s:.1f} s measuring)"
        )


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


_SECONDS = Float(0)
COSTS = Record(
    {"step_s": _SECONDS, "validation_s": _SECONDS, "checkpoint_s": _SECONDS},
    {"measure_s": _SECONDS},
)
# a plan as config.json and every checkpoint record it
PLAN = Record(
    {"steps": Int(1, 2**62), "set_by": Str(), "replay": Str()},
    {"measured": Opt(COSTS)},
)


@dataclass(frozen=True)
class Plan:
    """The steps a run's schedule spans and why, as config.json and every checkpoint record
    it: enough to understand the plan and to replay the run."""

    steps: int
    set_by: str  # "time_budget", or "epochs/max_steps" where those allow fewer steps
    replay: str  # the flags that replay the run step for step, on any machine
    measured: Costs | None = None

    @classmethod
    def made(
        cls, steps: int, set_by: str, costs: Costs | None, chosen: dict[str, float | str]
    ) -> Plan:
        """A new plan. The replay names the settings auto chose by the budget (`chosen`:
        --hidden-size, --seq-len, --lr, --dropout, and --model, --num-layers where it chose a
        cell): left at auto, a run without a budget would choose others."""
        given = " ".join(
            f"{option(name)} {value if isinstance(value, str) else format(value, 'g')}"
            for name, value in chosen.items()
        )
        return cls(steps, set_by, f"--max-steps {steps} --time-budget 0 {given}", costs)

    @classmethod
    def from_record(cls, record: Any, source: str = "the plan") -> Plan:
        """The plan a run recorded (`record()`), checked as PLAN declares it; a record that
        is not one is one line naming `source`."""
        plan = check(PLAN, record, source)
        measured = plan.get("measured")
        costs = None if measured is None else Costs(**measured)
        return cls(plan["steps"], plan["set_by"], plan["replay"], costs)

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"steps": self.steps, "set_by": self.set_by, "replay": self.replay}
        if self.measured is not None:
            record["measured"] = asdict(self.measured)
        return record

    def line(self) -> str:
        """The plan in one line, printed when a run starts."""
        costs = self.measured
        measured = (
            f"; measured {costs.step_s:.4f} s a step, {costs.validation_s:.1f} s a validation"
            if costs
            else ""
        )
        return (
            f"plan: {self.steps:,} steps (set by {self.set_by}{measured}); replay exactly "
            f"with {self.replay}"
        )
