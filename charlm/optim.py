"""The optimizer and the learning-rate schedule a run trains with.

The schedule is a multiplier of --lr at each step (LambdaLR): a linear warm-up over
--warmup-steps, then constant, cosine down to lr/20 at the last planned step, or a step decay
by --lr-gamma every --lr-step-size steps. The planned steps are --epochs or --max-steps, or
what fits in --time-budget (budget.py), whichever is fewest; a resumed run may change --lr, and
the schedule goes on from the step it is at.

A time budget's plan is revised as the run goes (budget.py): a revision (s, N) at step s
spreads what was left of the cosine at s over the steps up to N, so the rate goes on from its
value at s without a jump and still reaches lr/20 at the last planned step:

    progress(t) = p_s + (1 - p_s) * (t - s) / (N - s)        for t >= s, p_s = progress(s)

The constant and step schedules do not depend on the plan's length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from charlm.schema import Bool, Equal, Float, Int, Null, Opt, Record, Seq, Spec, Tensor, Test, Tup


@dataclass(frozen=True)
class OptimSettings:
    """What the optimizer, the schedule and the clipping of a run are made from (its
    --optimizer, --lr, --weight-decay, --lr-schedule, --warmup-steps, --lr-step-size,
    --lr-gamma and --clip)."""

    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    warmup_steps: int
    step_size: int
    gamma: float
    clip: float


def make_optimizer(opt: OptimSettings, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam's fused kernel where torch has one: the same update in one pass over the weights,
    a seventh of the foreach kernel's time on a CPU (4% of a default training step)."""
    params = list(model.parameters())
    if opt.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, weight_decay=opt.weight_decay)
    cls = torch.optim.Adam if opt.optimizer == "adam" else torch.optim.AdamW
    fused = params[0].device.type in ("cpu", "cuda")
    return cls(params, lr=opt.lr, weight_decay=opt.weight_decay, fused=fused or None)


# a revision of the plan: (at step, the new total of steps)
Revisions = Sequence[tuple[int, int]]


def lr_factor(
    opt: OptimSettings, total_steps: int, revisions: Revisions = ()
) -> Callable[[int], float]:
    """The schedule as a multiplier of --lr at a given step (for LambdaLR)."""

    def factor(step: int) -> float:
        if step < opt.warmup_steps:
            return (step + 1) / opt.warmup_steps
        if opt.schedule == "cosine":
            progress = cosine_progress(step, opt.warmup_steps, total_steps, revisions)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))  # down to lr/20
        if opt.schedule == "step":
            return opt.gamma ** ((step - opt.warmup_steps) // opt.step_size)
        return 1.0

    return factor


def cosine_progress(step: int, start: int, total: int, revisions: Revisions = ()) -> float:
    """How far along the cosine `step` is (0 to 1): from `start` (the warm-up's end) to
    `total`, each revision (s, N) spreading what was left at s over the steps up to N."""
    begin, done, end = start, 0.0, total
    for at, steps in revisions:
        at = max(at, start)
        if step < at:
            break
        begin, done, end = at, _along(at, begin, done, end), steps
    return _along(step, begin, done, end)


def _along(step: int, begin: int, done: float, end: int) -> float:
    if step >= end:
        return 1.0
    return min(1.0, done + (1 - done) * (step - begin) / max(1, end - begin))


def make_scheduler(
    opt: OptimSettings, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(opt, total_steps))


def reschedule(
    opt: OptimSettings,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    total_steps: int,
    revisions: Revisions = (),
) -> None:
    """Point the schedule at `total_steps` (and the plan's `revisions`) and --lr, from the step
    the run is at."""
    groups = scheduler.optimizer.param_groups
    scheduler.lr_lambdas = [lr_factor(opt, total_steps, revisions)] * len(groups)
    scheduler.base_lrs = [opt.lr] * len(groups)
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group in groups:
        group["initial_lr"], group["lr"] = opt.lr, opt.lr * factor


STEPS_MAX = 2**62  # more steps than any run takes: a counter past it is not a count


def _group_schema(group: dict[str, Any]) -> Record:
    """A saved parameter group, declared from a fresh optimizer's (`group`): its numbers in
    their ranges, its parameters those of the model, and its flags what charlm sets (torch
    takes a saved group's options over its own: `amsgrad: true` would step a state that was
    never made); `foreach` and `fused` only choose a kernel (older runs saved None)."""
    n = len(group["params"])
    indices = list(range(n))
    required: dict[str, Spec] = {
        "params": Test(Seq(Int()), lambda v: None if v == indices else f"must be {indices}")
    }
    optional: dict[str, Spec] = {}
    for key, value in group.items():
        if key == "params":
            continue
        if key in ("foreach", "fused"):
            optional[key] = Opt(Bool())
        elif isinstance(value, bool) or value is None:
            optional[key] = Equal(value)
        elif isinstance(value, tuple):  # Adam's betas
            required[key] = Tup(*(Float(0, 1) for _ in value))
        else:
            required[key] = Float(0)
    return Record(required, optional)


def _parameter_state(optimizer: str, shape: Sequence[int]) -> Record:
    """What the optimizer keeps for one parameter of `shape`: Adam's step and moments (one of
    another shape crashes the fused kernel: it writes past the buffer), SGD's momentum."""
    moment = Tensor(("float32",), shape, finite=True)
    if optimizer == "sgd":
        return Record({}, {"momentum_buffer": Opt(moment)})
    return Record({"step": Tensor(("float32",), (), finite=True), "exp_avg": moment,
                   "exp_avg_sq": moment})  # fmt: skip


def state_schema(
    opt: OptimSettings, optimizer: torch.optim.Optimizer, shapes: Sequence[Sequence[int]]
) -> Record:
    """What a checkpoint's optimizer state must be to be loaded into `optimizer` (made by
    `make_optimizer` over parameters of `shapes`), declared before torch reads any of it."""
    (group,) = optimizer.state_dict()["param_groups"]
    per_parameter = {k: _parameter_state(opt.optimizer, s) for k, s in enumerate(shapes)}
    return Record(
        {"state": Record({}, per_parameter), "param_groups": Seq(_group_schema(group), 1, 1)}
    )


def schedule_schema(groups: int) -> Record:
    """A saved LambdaLR: torch puts every key of it into the scheduler's attributes, so only
    its own keys, of their types (older torch saved `verbose`); the functions are not saved."""
    rates, steps = Seq(Float(0), groups, groups), Int(0, STEPS_MAX)
    required = {"base_lrs": rates, "last_epoch": steps, "lr_lambdas": Seq(Null(), groups, groups)}
    optional = {"_step_count": steps, "_is_initial": Bool(), "_last_lr": rates,
                "_get_lr_called_within_step": Bool(), "verbose": Bool()}  # fmt: skip
    return Record(required, optional)
