"""Settle, then run: every setting of a run decided in one place, from what was asked and what
is known so far.

What is asked (a TrainConfig) may leave settings at auto (config.AUTO) and --epochs at 0.
`settle` turns it into the complete config a Trainer runs, and the plan its schedule spans,
from the facts known so far: the steps an epoch of the corpus takes, what --amp auto became on
this device, the costs measured for a time budget, the record of a run being resumed. It reads
no file and imports no torch: a run calls it as facts arrive (before measuring and again
after), and `charlm train --dry-run` prints its answer.

    auto values  by the budget: under SHORT_BUDGET_S a smaller model making more, shorter
                 updates (AUTO_SHORT), else AUTO_LONG; once a plan is known and holds more than
                 MANY_EPOCHS epochs, a larger model with more dropout (AUTO_MANY_EPOCHS). The
                 first plan fixes the model: the run measures that model and plans again
    the plan     the steps that fit in what is left of the budget (budget.plan_steps), or
                 --epochs / --max-steps where they allow fewer; a revised plan (budget.py)
                 is settled again: it changes the epochs, never the model
    the epochs   0: those that hold the plan, else those --max-steps needs, else DEFAULT_EPOCHS
    resuming     the settings FIXED_ON_RESUME stay the run's (a change is refused), auto given
                 again means what the run chose, and the run's plan is kept
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from charlm.budget import Costs, Plan, Work, plan_steps
from charlm.config import (
    AUTO,
    AUTO_FIELDS,
    DEFAULT_EPOCHS,
    MODEL_FIELDS,
    READING,
    TrainConfig,
    check_config,
)
from charlm.errors import CharLMError, flag, on_command_line

# What --hidden-size 0, --seq-len 0, --lr 0 and --dropout -1 (the defaults) become: a budget
# under SHORT_BUDGET_S buys about an epoch of tiny Shakespeare on a 2-core CPU, where a smaller
# model making more, shorter updates learns fastest; longer runs learn more with a larger model
# from longer windows at a lower rate. A budget that plans more than MANY_EPOCHS passes over
# the text (a long budget, a small corpus) overfits the 448-unit model: a larger one with more
# dropout learns more there (measured: benchmarks/RESULTS.md). A plan changes the model only,
# never the windows: it counted the steps an epoch of them takes
SHORT_BUDGET_S = 120.0
MANY_EPOCHS = 12
AUTO_SHORT = {"hidden_size": 384, "seq_len": 64, "lr": 1e-2, "dropout": 0.25}
AUTO_LONG = {"hidden_size": 448, "seq_len": 128, "lr": 5e-3, "dropout": 0.25}
AUTO_MANY_EPOCHS = {"hidden_size": 640, "dropout": 0.5}  # on top of AUTO_LONG
# The min cells' own auto values, for a run that names one with --model ("short": a budget under
# SHORT_BUDGET_S, "long": the rest), from benchmarks/tune_cells.py's bounded search on a quiet
# 2-core CPU (2026-12-05, docs/models.md): no dropout learned most in both cells at 30, 60 and
# 180 s, lr 3e-3 beat 2e-3, 5e-3 and 1e-2, windows of 128 beat 64 and 256. The search ran 2
# layers of 192 units; one layer (the --num-layers default) of 272 learned as much, hence 256.
# One recipe for both spans and both cells: the search found no budget where they differ
MIN_CELL_RECIPE = {"hidden_size": 256, "seq_len": 128, "lr": 3e-3, "dropout": 0.0}
CELL_AUTO = {
    cell: {"short": MIN_CELL_RECIPE, "long": MIN_CELL_RECIPE} for cell in ("mingru", "minlstm")
}
# The cell, and its --num-layers, that a budget's auto values choose instead of the LSTM, for a
# run that leaves --model, --num-layers and every auto value at their defaults; its plan's
# replay then names --model and --num-layers. OFF (empty) until measurements show the cell
# learning more than the LSTM in that budget (benchmarks/tune_cells.py). To switch on, e.g.:
#     AUTO_CELL = {"short": ("mingru", 2)}
# (then a run that asks for `--model lstm` with nothing else gets the cell too: name any other
# model setting, e.g. --num-layers 1 --hidden-size 384, to keep the LSTM)
AUTO_CELL: dict[str, tuple[str, int]] = {}
# settings a resumed run must keep, or it would not continue the same run: the model, the
# batch order, and every setting that makes the training text (what is read, how it is decoded
# and joined, where validation is cut)
FIXED_ON_RESUME = (
    *MODEL_FIELDS,
    "sampler",
    "random_offset",
    "seq_len",
    "batch_size",
    "val_fraction",
    "optimizer",
    "seed",
    *READING,
    "byte_level",
)


@dataclass(frozen=True)
class Facts:
    """What is known about a run when it is settled; each fact at its default until known."""

    steps_per_epoch: int = 0  # the corpus's, cut as the settled --seq-len and --batch-size say
    amp: bool | None = None  # what --amp became on this device
    resumed: TrainConfig | None = None  # the settings of the run being resumed
    plan: Plan | None = None  # a plan made already: the resumed run's, or the run's first
    costs: Costs | None = None  # measured for a --time-budget: a plan is made from them
    step: int = 0  # the step the run is at when it plans
    spent_s: float = 0.0  # the part of the budget spent by then


@dataclass(frozen=True)
class Settled:
    """A complete config (nothing left at auto) and the plan its schedule spans, if any."""

    cfg: TrainConfig
    plan: Plan | None
    steps_per_epoch: int
    # a budget with no plan yet, or one made from the costs of a model this plan changed:
    # measure (again), and settle again with the costs
    needs_costs: bool

    @property
    def planned_epochs(self) -> int:
        """The epochs the plan holds (0: no plan, or the epoch's steps unknown)."""
        if self.plan is None or not self.steps_per_epoch:
            return 0
        return epochs_for(self.plan.steps, self.steps_per_epoch)


def settle(asked: TrainConfig, facts: Facts = Facts()) -> Settled:
    """The config and plan a run with settings `asked` trains with, given `facts`."""
    cfg = asked if facts.resumed is None else keep_resumed(asked, facts.resumed)
    if facts.amp is not None:
        cfg = replace(cfg, amp="on" if facts.amp else "off")
    E, plan = facts.steps_per_epoch, facts.plan
    settled = resolve_auto(cfg, epochs_for(plan.steps, E) if plan and E else 0)
    remodelled = False
    if facts.costs is not None and cfg.time_budget and E:
        steps, set_by = fit(cfg, facts)  # measured on `settled`'s model
        first = plan.steps if plan else steps  # the first plan fixes the model
        chosen = resolve_auto(cfg, epochs_for(first, E))
        remodelled, settled = chosen != settled, chosen
        names = AUTO_FIELDS if chosen.model == cfg.model else ("model", "num_layers", *AUTO_FIELDS)
        chose = {n: getattr(chosen, n) for n in names}
        plan = Plan.made(steps, set_by, facts.costs, chose, limit=span(cfg, E))
    if not settled.epochs and E and (plan or not cfg.time_budget):  # a budget's: by its plan
        settled = replace(settled, epochs=epochs_for(plan.total if plan else cfg.max_steps, E))
    if plan and plan.revisions and not plan.limit and E:  # revised: the epochs that hold it
        settled = replace(settled, epochs=max(settled.epochs, epochs_for(plan.total, E)))
    check_config(settled)
    needs_costs = bool(cfg.time_budget) and (plan is None or remodelled)
    return Settled(settled, plan, E, needs_costs)


def resolve_auto(cfg: TrainConfig, planned_epochs: int = 0) -> TrainConfig:
    """`cfg` with the settings left at auto (AUTO) chosen by the run's budget and, once the
    budget has been planned, by the epochs the plan holds; a min cell's by CELL_AUTO, and the
    cell itself by AUTO_CELL where it is switched on."""
    span = "short" if 0 < cfg.time_budget < SHORT_BUDGET_S else "long"
    cfg = choose_cell(cfg, span)
    if cfg.model in CELL_AUTO:
        recipe = CELL_AUTO[cfg.model][span]
    elif span == "short":
        recipe = AUTO_SHORT
    elif cfg.time_budget and planned_epochs > MANY_EPOCHS:
        recipe = {**AUTO_LONG, **AUTO_MANY_EPOCHS}
    else:
        recipe = AUTO_LONG
    return replace(
        cfg, **{name: value for name, value in recipe.items() if getattr(cfg, name) == AUTO[name]}
    )


def choose_cell(cfg: TrainConfig, span: str) -> TrainConfig:
    """`cfg` with the cell AUTO_CELL names for the budget's span, where it names one and the
    run left the model to the budget (--model, --num-layers and every auto value at default)."""
    if not cfg.time_budget or span not in AUTO_CELL:
        return cfg
    default = TrainConfig()
    if (cfg.model, cfg.num_layers) != (default.model, default.num_layers) or any(
        getattr(cfg, name) != AUTO[name] for name in AUTO_FIELDS
    ):
        return cfg
    model, layers = AUTO_CELL[span]
    return replace(cfg, model=model, num_layers=layers)


def fit(cfg: TrainConfig, facts: Facts) -> tuple[int, str]:
    """The steps that fit in what is left of the budget, or fewer where --epochs or
    --max-steps say so; and which of them set the number."""
    assert facts.costs is not None
    limit = span(cfg, facts.steps_per_epoch) or math.inf
    left = cfg.time_budget - facts.spent_s
    work = work_of(cfg, facts.steps_per_epoch)
    fits = plan_steps(left, facts.costs, work.steps_per_epoch, work.save_every,
                      eval_every=work.eval_every, sample_every=work.sample_every,
                      sample_steps=work.sample_steps)  # fmt: skip
    steps = min(limit, facts.step + fits)
    return int(steps), "time_budget" if steps < limit else "epochs/max_steps"


def work_of(cfg: TrainConfig, steps_per_epoch: int) -> Work:
    """What a run does besides its steps: a plan pays for it (its measured costs: nothing
    for evaluations without a validation text)."""
    return Work(
        steps_per_epoch,
        save_every=cfg.save_every,
        eval_every=cfg.eval_every,
        sample_every=cfg.sample_every,
        sample_steps=cfg.sample_steps,
    )


def span(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The steps --epochs and --max-steps allow, the fewer of them (0: no limit but a budget)."""
    limits = [cfg.epochs * steps_per_epoch, cfg.max_steps]
    return min(n for n in limits if n) if any(limits) else 0


def epochs_for(steps: int, steps_per_epoch: int) -> int:
    """The epochs that hold `steps` steps (0 steps: DEFAULT_EPOCHS)."""
    return -(-steps // steps_per_epoch) if steps else DEFAULT_EPOCHS


def resumed(ran: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """What a resumed run asks for: the settings it `ran` with, the ones `given` again on top
    (see keep_resumed). A run that --max-steps limited, given a new --max-steps and no
    --epochs, settles its epochs again from it (0: as many as it needs), as a fresh run with
    that --max-steps would: made with --max-steps 5 and resumed with --max-steps 100, it
    trains to step 100, not to the end of the one epoch that 5 steps settled."""
    again = "max_steps" in given and "epochs" not in given and ran.max_steps
    return keep_resumed(replace(ran, **given, **({"epochs": 0} if again else {})), ran)


def keep_resumed(asked: TrainConfig, ran: TrainConfig) -> TrainConfig:
    """`asked` for a run that continues one trained with `ran`: auto, given again, means what
    the run chose; a change to a setting fixed on resume is refused."""
    chosen = {
        name: getattr(ran, name) for name in AUTO_FIELDS if getattr(asked, name) == AUTO[name]
    }
    cfg = replace(asked, **chosen)
    for name in FIXED_ON_RESUME:
        value, was = _same(getattr(cfg, name)), _same(getattr(ran, name))
        if value != was:
            raise CharLMError(
                f"cannot resume with {_setting(name, value)}: the run in {cfg.out} was "
                f"trained with {_setting(name, was)} (start a new run with another "
                f"{flag('out', ...)})"
            )
    return cfg


def _same(value: Any) -> Any:
    """A setting as compared on resume: a list and a tuple of the same patterns are one."""
    return tuple(value) if isinstance(value, list) else value


def _setting(name: str, value: Any) -> str:
    """A setting and its value as a message says it: a flag and its value as typed at the
    command line (see `_said`), a parameter and its repr to a Python caller."""
    return flag(name, _said(value) if on_command_line() else value)


def _said(value: Any) -> str:
    """A setting as a message shows it (a separator's newline as \\n, a list as its items)."""
    if isinstance(value, tuple):
        return " ".join(map(repr, value)) if value else "(none)"
    plain = isinstance(value, str) and value.isprintable() and value.strip() == value != ""
    return repr(value) if isinstance(value, str) and not plain else str(value)


def many_epochs_line(settled: Settled) -> str:
    """Why a run measures again: its plan chose the model for many epochs."""
    cfg = settled.cfg
    return (
        f"auto: the plan holds {settled.planned_epochs} epochs, more than {MANY_EPOCHS}: hidden "
        f"size {cfg.hidden_size} and dropout {cfg.dropout:g} learn more on a text this short; "
        f"measuring that model"
    )


def settled_lines(settled: Settled, asked: TrainConfig, facts: dict[str, Any]) -> list[str]:
    """Every setting as settled, one a line (a value settled from another asked names it),
    then the run's `facts` (config.json's record beside the settings)."""
    width = max(len(f.name) for f in fields(TrainConfig))
    lines = []
    for f in fields(TrainConfig):
        value, was = getattr(settled.cfg, f.name), getattr(asked, f.name)
        note = "" if value == was else f"  (asked: {_shown(was)})"
        lines.append(f"{f.name:<{width}}  {_shown(value)}{note}")
    return lines + [f"{name:<{width}}  {_shown(value)}" for name, value in facts.items()]


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return " ".join(map(str, value)) if value else "-"
    return f"{value:g}" if isinstance(value, float) else str(value)
