"""What a time budget buys: the steps that fit, the plan a run records, and its revisions.

A budget that only stopped the run would cut the learning-rate schedule wherever the clock
ran out: on a large corpus, with the rate still near its peak. Instead the run measures what
a step, a validation, an evaluation on --eval-chars, a sample and a checkpoint cost on this
machine (measure.py), and plans the number of steps that fit together with the work that comes
with them; the schedule (warm-up, cosine, step) spans that plan.

    budget = measuring + N * step + ceil(N / E) * (validation + 2 checkpoints + sample)
             + (N / eval_every) * evaluation + (N / save_every) * checkpoint
             + samples every --sample-steps into an epoch + a safety margin

A machine's speed changes under a run (another process starts: a step takes 6-9 times
longer within seconds), so the plan is revised as the run goes: every --revise-every seconds
of steps, the recent seconds a step are measured and the steps that still fit are fitted
again, the work still to come (validations, evaluations, samples, checkpoints) counted at the
same slowed (or quickened) rate; the schedule stretches or shrinks its remaining part (optim.py).
A revision is made where the plan would miss the budget's end by more than its tolerance.

The plan and each revision (at step s, the new total N) are recorded in config.json and in
every checkpoint, so `--resume` goes on with it, and `charlm train --replay RUN` trains the run
again step for step on any machine; an unrevised plan is replayed by `--max-steps PLANNED
--time-budget 0 --hidden-size H --seq-len T --lr LR --dropout P` too (the values it ran with:
auto picks them by the budget and the plan).

Plain arithmetic, free of torch: settle.py makes the plan from the measured costs.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from typing import Any

from charlm.errors import option
from charlm.schema import Float, Int, Opt, Record, Seq, Str, Test, check

# fraction of the budget left out of the plan: noise on a shared machine, rounding
SAFETY = 0.03
# a revision is made where the plan, at the recent rate, would end more than this far from
# the planned end: REVISE_FRACTION of the budget, at least REVISE_MIN_S seconds
REVISE_FRACTION, REVISE_MIN_S = 0.01, 1.0
# the recent rate is the mean over this many windows of --revise-every seconds of steps: on a
# shared 2-core machine a step's time swung 5x from one 3 s window to the next, and fitting
# each window swung the schedule with it (its rate decayed to lr/11 by a third of the run)
PACE_WINDOWS = 3


@dataclass(frozen=True)
class Costs:
    """Seconds that one step, one validation, one checkpoint, one evaluation on --eval-chars
    and one sample take on this machine, and the seconds the measuring itself took (spent
    from the budget too)."""

    step_s: float
    validation_s: float
    checkpoint_s: float
    measure_s: float = 0.0
    eval_s: float = 0.0
    sample_s: float = 0.0

    def line(self) -> str:
        """The costs in one line, as `charlm train --dry-run` prints them."""
        return (
            f"measured: {self.step_s:.4f} s a step, {self.validation_s:.2f} s a validation, "
            f"{self.eval_s:.3f} s an evaluation, {self.sample_s:.3f} s a sample, "
            f"{self.checkpoint_s:.3f} s a checkpoint ({self.measure_s:.1f} s measuring)"
        )

    def at_rate(self, step_s: float) -> Costs:
        """These costs on a machine where a step takes `step_s`: the rest scaled alike."""
        k = step_s / self.step_s if self.step_s > 0 else 1.0
        return Costs(step_s, self.validation_s * k, self.checkpoint_s * k, 0.0,
                     self.eval_s * k, self.sample_s * k)  # fmt: skip


@dataclass(frozen=True)
class Work:
    """What a run does besides its steps, and how often: a plan pays for all of it."""

    steps_per_epoch: int
    save_every: int = 0  # a checkpoint every N steps
    eval_every: int = 0  # an evaluation on --eval-chars every N steps
    sample_every: int = 0  # a sample every N epoch ends (0: no samples at all)
    sample_steps: int = 0  # a sample every N steps into an epoch

    def seconds(self, costs: Costs, start: int, end: int) -> float:
        """What training from step `start` to step `end` costs, its work included: the epoch
        ends it crosses and the final one (each validates, writes checkpoint.pt and best.pt
        and samples), its evaluations, samples and checkpoints."""
        if end <= start:
            return 0.0
        E = self.steps_per_epoch
        ends = end // E - start // E + (1 if end % E else 0)
        epoch_end = costs.validation_s + 2 * costs.checkpoint_s
        epoch_end += costs.sample_s if self.sample_every else 0.0
        total = (end - start) * costs.step_s + ends * epoch_end
        if self.save_every:
            total += (end // self.save_every - start // self.save_every) * costs.checkpoint_s
        if self.eval_every:
            total += (end // self.eval_every - start // self.eval_every) * costs.eval_s
        if self.sample_every and self.sample_steps:
            total += (self._samples(end) - self._samples(start)) * costs.sample_s
        return total

    def _samples(self, step: int) -> int:
        """Samples taken into an epoch in the first `step` steps (not those at epoch ends)."""
        E, N = self.steps_per_epoch, self.sample_steps
        return (step // E) * ((E - 1) // N) + (step % E) // N


def plan_steps(
    seconds: float,
    costs: Costs,
    steps_per_epoch: int,
    save_every: int = 0,
    *,
    eval_every: int = 0,
    sample_every: int = 0,
    sample_steps: int = 0,
) -> int:
    """The most steps whose training, epoch-end work, evaluations, samples and checkpoints fit
    in `seconds` (>= 1), from the start of an epoch.

    Every epoch end, and the final partial one, validates, writes checkpoint.pt and best.pt
    and samples. N steps end ceil(N / E) <= N / E + 1 epochs: the extra one is paid up front.
    """
    usable = (seconds - costs.measure_s) * (1 - SAFETY)
    epoch_end = costs.validation_s + 2 * costs.checkpoint_s
    if sample_every:
        epoch_end += costs.sample_s
    per_step = costs.step_s + epoch_end / steps_per_epoch
    if save_every:
        per_step += costs.checkpoint_s / save_every
    if eval_every:
        per_step += costs.eval_s / eval_every
    if sample_every and sample_steps:
        per_step += costs.sample_s * ((steps_per_epoch - 1) // sample_steps) / steps_per_epoch
    return max(1, int((usable - epoch_end) / per_step))


def refit(costs: Costs, work: Work, start: int, seconds: float, limit: int = 0) -> int:
    """The last step of the most steps after `start` that fit in `seconds` with their work
    (`work.seconds`), at most `limit` (0: none); at least start + 1, so the schedule ends."""
    low = start + 1
    high = low + int(max(seconds, 0.0) / max(costs.step_s, 1e-12))
    if limit:
        high = max(low, min(high, limit))
    while low < high:  # the last end whose cost fits: cost grows with the end
        mid = (low + high + 1) // 2
        if work.seconds(costs, start, mid) <= seconds:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass(frozen=True)
class Revision:
    """At step `step` the plan was fitted again to `step_s` seconds a step: `steps` in all."""

    step: int
    steps: int
    step_s: float


_SECONDS = Float(0)
COSTS = Record(
    {"step_s": _SECONDS, "validation_s": _SECONDS, "checkpoint_s": _SECONDS},
    {"measure_s": _SECONDS, "eval_s": _SECONDS, "sample_s": _SECONDS},
)
_STEPS = Int(0, 2**62)


def _in_order(revisions: list[dict[str, Any]]) -> str | None:
    """What is wrong with a plan's revisions (they only go forward, each to a later end)."""
    for r in revisions:
        if r["steps"] <= r["step"]:
            return f"revise at step {r['step']} to {r['steps']} steps, not past it"
    if any(b["step"] < a["step"] for a, b in pairwise(revisions)):
        return "are not in step order"
    return None


REVISION = Record({"step": _STEPS, "steps": Int(1, 2**62), "step_s": _SECONDS})
# a plan as config.json and every checkpoint record it
PLAN = Record(
    {"steps": Int(1, 2**62), "set_by": Str(), "replay": Str()},
    {"measured": Opt(COSTS), "revisions": Test(Seq(REVISION), _in_order), "limit": _STEPS},
)


@dataclass(frozen=True)
class Plan:
    """The steps a run's schedule spans and why, as config.json and every checkpoint record
    it: enough to understand the plan and to replay the run."""

    steps: int  # the first plan's
    set_by: str  # "time_budget", or "epochs/max_steps" where those allow fewer steps
    replay: str  # the flags that replay the run step for step, on any machine
    measured: Costs | None = None
    revisions: tuple[Revision, ...] = ()
    limit: int = 0  # the steps --epochs and --max-steps allowed (0: no limit but the budget)

    @classmethod
    def made(
        cls,
        steps: int,
        set_by: str,
        costs: Costs | None,
        chosen: dict[str, float | str],
        limit: int = 0,
    ) -> Plan:
        """A new plan. The replay names the settings auto chose by the budget (`chosen`:
        --hidden-size, --seq-len, --lr, --dropout, and --model, --num-layers where it chose a
        cell): left at auto, a run without a budget would choose others."""
        given = " ".join(
            f"{option(name)} {value if isinstance(value, str) else format(value, 'g')}"
            for name, value in chosen.items()
        )
        replay = f"--max-steps {steps} --time-budget 0 {given}"
        return cls(steps, set_by, replay, costs, limit=limit)

    @property
    def total(self) -> int:
        """The steps the schedule spans now: the last revision's, else the first plan's."""
        return self.revisions[-1].steps if self.revisions else self.steps

    def schedule(self) -> tuple[tuple[int, int], ...]:
        """The revisions as the LR schedule takes them: (at step, new total) pairs."""
        return tuple((r.step, r.steps) for r in self.revisions)

    def revised(self, step: int, steps: int, step_s: float, run: str) -> Plan:
        """This plan with a revision at `step`; a plain --max-steps no longer replays it, the
        run's record does (`charlm train --replay RUN`)."""
        return replace(
            self,
            revisions=(*self.revisions, Revision(step, steps, step_s)),
            replay=f"--replay {shlex.quote(run)}",
        )

    @classmethod
    def from_record(cls, record: Any, source: str = "the plan") -> Plan:
        """The plan a run recorded (`record()`), checked as PLAN declares it; a record that
        is not one is one line naming `source`."""
        plan = check(PLAN, record, source)
        measured = plan.get("measured")
        costs = None if measured is None else Costs(**measured)
        revisions = tuple(Revision(**r) for r in plan.get("revisions", ()))
        # a plan recorded before `limit`: one set by --epochs or --max-steps was limited so
        steps, set_by = plan["steps"], plan["set_by"]
        limit = plan.get("limit", steps if set_by == "epochs/max_steps" else 0)
        return cls(steps, set_by, plan["replay"], costs, revisions, limit)

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"steps": self.steps, "set_by": self.set_by, "replay": self.replay}
        if self.measured is not None:
            record["measured"] = asdict(self.measured)
        if self.revisions:
            record["revisions"] = [asdict(r) for r in self.revisions]
        if self.limit:
            record["limit"] = self.limit
        return record

    def line(self) -> str:
        """The plan in one line, printed when a run starts."""
        costs = self.measured
        measured = (
            f"; measured {costs.step_s:.4f} s a step, {costs.validation_s:.1f} s a validation"
            if costs
            else ""
        )
        n = len(self.revisions)
        revised = f", revised {'once' if n == 1 else f'{n} times'}" if n else ""
        return (
            f"plan: {self.total:,} steps (set by {self.set_by}{measured}{revised}); replay "
            f"exactly with {self.replay}"
        )

    def revisions_line(self) -> str:
        """How the plan changed, for the line a run ends with ("" if it never did)."""
        if not self.revisions:
            return ""
        changes = " -> ".join(
            f"{r.steps:,} at step {r.step:,} ({r.step_s:.4f} s a step)" for r in self.revisions
        )
        n = len(self.revisions)
        times = "once" if n == 1 else f"{n} times"
        return f"the plan was revised {times}: {self.steps:,} -> {changes}"


class Pace:
    """The recent seconds a step: when a plan is due for a revision (every `every_s` seconds of
    steps: `due`), and the rate it is fitted to (`take`): the mean over the last PACE_WINDOWS
    such windows, so that a load that comes and goes from one second to the next does not
    swing the schedule, while a lasting change shows in full within PACE_WINDOWS windows."""

    def __init__(self, every_s: float) -> None:
        self.every_s, self.steps, self.seconds = every_s, 0, 0.0
        self.windows: list[tuple[int, float]] = []

    def add(self, seconds: float) -> None:
        self.steps += 1
        self.seconds += seconds

    @property
    def due(self) -> bool:
        return self.every_s > 0 and self.steps > 0 and self.seconds >= self.every_s

    @property
    def step_s(self) -> float:
        """The mean seconds a step over the last windows, this one included."""
        windows = [*self.windows[1 - PACE_WINDOWS :], (self.steps, self.seconds)]
        return sum(s for _, s in windows) / max(1, sum(n for n, _ in windows))

    def take(self) -> float:
        """`step_s`; the next window starts now."""
        step_s = self.step_s
        self.windows = [*self.windows[2 - PACE_WINDOWS :], (self.steps, self.seconds)]
        self.steps, self.seconds = 0, 0.0
        return step_s


def revised_steps(
    plan: Plan, step_s: float, step: int, spent_s: float, budget_s: float, work: Work
) -> int | None:
    """The plan's new total at `step`, fitted to `step_s` seconds a step and what is left of
    the budget (`spent_s` spent), at most its limit; None where the plan, at that rate, ends
    within the tolerance of the budget's planned end (or nothing would change)."""
    assert plan.measured is not None
    costs = plan.measured.at_rate(step_s)
    left = budget_s * (1 - SAFETY) - spent_s  # the same end as the first plan's
    tolerance = max(REVISE_MIN_S, REVISE_FRACTION * budget_s)
    if abs(work.seconds(costs, step, max(plan.total, step)) - left) <= tolerance:
        return None
    steps = refit(costs, work, step, left, plan.limit)
    return None if steps == plan.total else steps
