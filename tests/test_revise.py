"""A time budget's plan revised as the run goes: a machine that slows or quickens mid-run still
ends the run within its budget with the learning rate at its final value; every revision is
recorded, resumed and replayed step for step.

The runs here take their time from a fake clock (`time.perf_counter` of charlm.train, one call
per step), so a step costs exactly what the test says, whatever the machine's load.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm.budget import (
    PACE_WINDOWS,
    SAFETY,
    Costs,
    Pace,
    Plan,
    Work,
    plan_steps,
    refit,
    revised_steps,
)
from charlm.checkpoint import LATEST, load_model
from charlm.cli import main
from charlm.distributed import Context
from charlm.errors import CharLMError
from charlm.measure import Replanning
from charlm.optim import OptimSettings, lr_factor
from charlm.train import Callback, TrainConfig, Trainer, end_line, replay_config
from tests.conftest import TEXT, epoch_rows, one_line_error

# the tests' tiny run (conftest's tiny_config), for a fixture shared by the module
TINY = TrainConfig(hidden_size=32, embedding_dim=16, seq_len=16, batch_size=8, lr=1e-2,
                   sample_every=0, log_every=5, device="cpu", amp="off")  # fmt: skip

DT = 0.05  # the fake seconds of a step before the machine changes
BUDGET = 12.0  # fake seconds: a first plan of ~220 steps of the tiny corpus (41 an epoch)
CHANGE_AT = 60  # the step after which a step takes `factor` times longer


class Clock:
    """charlm.train's time.perf_counter: every call advances the clock by `dt` (the loop reads
    it once a step; an epoch end costs two calls, an evaluation one)."""

    def __init__(self, dt: float) -> None:
        self.now, self.dt = 0.0, dt

    def perf_counter(self) -> float:
        self.now += self.dt
        return self.now


# costs as the fake clock makes them: a step, a validation and an evaluation one call, a
# checkpoint half of one (an epoch end: two calls)
KNOWN = Costs(step_s=DT, validation_s=DT, checkpoint_s=DT / 2, eval_s=DT)


class Known(Trainer):
    def measure_costs(self) -> Costs:
        return KNOWN


class SlowsAt(Callback):
    """From step `at` on, a step takes `factor` times as long."""

    def __init__(self, clock: Clock, at: int, factor: float) -> None:
        self.clock, self.at, self.factor = clock, at, factor

    def on_step(self, trainer) -> None:
        if trainer.p.step == self.at:
            self.clock.dt = DT * self.factor


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock(DT)
    monkeypatch.setattr(sys.modules["charlm.train"], "time", fake)
    return fake


def budgeted_config(config: TrainConfig) -> TrainConfig:
    """A budget of ~220 fake steps, revised every 20 of them (one thread: a tiny model's steps
    stay fast on a busy machine, and a replay is bitwise the same)."""
    return replace(config, epochs=0, time_budget=BUDGET, revise_every=1.0, threads=1)


@pytest.fixture
def budgeted(tiny_config) -> TrainConfig:
    return budgeted_config(tiny_config)


def recorded_plan(out: str | Path) -> dict:
    return json.loads((Path(out) / "config.json").read_text())["plan"]


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_a_machine_that_slows_or_quickens_still_ends_the_run_on_its_plan(
    budgeted, clock, factor, capsys
) -> None:
    first = plan_steps(BUDGET, KNOWN, 41, eval_every=budgeted.eval_every)
    trainer = Known(budgeted, callbacks=[SlowsAt(clock, CHANGE_AT, factor)])
    result = trainer.run()
    p = result.progress
    assert result.stopped_by == "time_budget" and p.step == p.planned_steps  # the plan's end
    assert (1 - SAFETY - 0.02) * BUDGET <= p.elapsed_s <= BUDGET
    assert epoch_rows(budgeted.out)[-1]["lr"] == pytest.approx(budgeted.lr * 0.05)
    plan = recorded_plan(budgeted.out)
    assert plan["steps"] == first and plan["replay"] == f"--replay {budgeted.out}"
    assert all(r["step"] > CHANGE_AT for r in plan["revisions"])
    assert plan["revisions"][-1]["step_s"] == pytest.approx(DT * factor)
    assert (p.step < first) == (factor > 1)
    ckpt = torch.load(Path(budgeted.out) / LATEST, weights_only=True)
    assert ckpt["plan"] == plan and ckpt["progress"]["planned_steps"] == p.step
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"trained {p.step:,} of {p.step:,} planned steps; the plan was ")
    assert out[-1].endswith(f"; replay exactly with --replay {budgeted.out}")


def test_a_plan_made_once_is_cut_by_the_clock(budgeted, clock, capsys) -> None:
    """What revisions prevent: the machine slows, the clock stops the run before its plan's
    end, the learning rate short of its final value."""
    cfg = replace(budgeted, revise_every=0.0)
    result = Known(cfg, callbacks=[SlowsAt(clock, CHANGE_AT, 2.0)]).run()
    p = result.progress
    assert result.stopped_by == "time_budget" and p.step < p.planned_steps
    assert epoch_rows(cfg.out)[-1]["lr"] > 2 * cfg.lr * 0.05
    assert "revisions" not in recorded_plan(cfg.out)
    last = capsys.readouterr().out.splitlines()[-1]
    assert (
        last
        == f"stopped at {p.step:,} of {p.planned_steps:,} planned steps (the clock ran out first)"
    )


@pytest.fixture(scope="module")
def revised(tmp_path_factory) -> Path:
    """A run whose plan was revised (slowed by half at CHANGE_AT), shared by the tests that
    read it."""
    folder = tmp_path_factory.mktemp("revised")
    (folder / "corpus.txt").write_text(TEXT, encoding="utf-8")
    cfg = replace(TINY, corpus=str(folder / "corpus.txt"), out=str(folder / "run"))
    with pytest.MonkeyPatch.context() as patch:
        fake = Clock(DT)
        patch.setattr(sys.modules["charlm.train"], "time", fake)
        run = Known(budgeted_config(cfg), progress_bar=False,
                    callbacks=[SlowsAt(fake, CHANGE_AT, 2.0)])  # fmt: skip
        run.run()
    assert recorded_plan(cfg.out)["revisions"]
    return Path(cfg.out)


def test_replay_trains_the_revised_run_step_for_step(revised, tmp_path) -> None:
    """On the real clock: a replay has no budget, nothing to revise."""
    out = tmp_path / "replay"
    result = CliRunner().invoke(main, ["train", "--replay", str(revised), "--out", str(out),
                                       "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    a, b = load_model(revised / LATEST, "cpu")[0], load_model(out / LATEST, "cpu")[0]
    wa, wb = a.state_dict(), b.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    keys = ("kind", "step", "lr", "train_loss", "val_loss", "grad_norm")
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (revised, out)]  # fmt: skip
    assert [[r.get(k) for k in keys] for r in rows[0]] == [
        [r.get(k) for k in keys] for r in rows[1]
    ]
    replayed = json.loads((out / "config.json").read_text())
    assert replayed["time_budget"] == 0 and replayed["plan"] == recorded_plan(revised)


def test_a_replay_defaults_its_folder_and_keeps_the_threads(revised) -> None:
    cfg, plan = replay_config(revised, {})
    assert cfg.out == f"{revised}-replay" and cfg.time_budget == 0.0
    assert cfg.threads == json.loads((revised / "config.json").read_text())["torch_threads"]
    assert plan is not None and cfg.max_steps == plan.total
    assert replay_config(revised, {"threads": 2})[0].threads == 2


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--resume"], "--replay starts a new run and --resume continues one"),
        (["--time-budget", "60"], "without a --time-budget"),
        (["--out", "{run}"], "give the replay another --out"),
    ],
)
def test_a_replay_refuses_in_one_line(revised, extra, fragment) -> None:
    args = [a.replace("{run}", str(revised)) for a in extra]
    one_line_error(CliRunner().invoke(main, ["train", "--replay", str(revised), *args]), fragment)


def test_a_replay_of_no_run_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(main, ["train", "--replay", str(tmp_path / "none")])
    one_line_error(result, "no config.json there")


def test_resume_goes_on_with_the_revisions(budgeted, clock) -> None:
    class CutAfterRevision(Callback):
        def on_step(self, trainer) -> None:
            if trainer.plan.revisions and trainer.p.step == trainer.plan.revisions[0].step + 3:
                signal.raise_signal(signal.SIGINT)

    callbacks = [SlowsAt(clock, CHANGE_AT, 2.0), CutAfterRevision()]
    stopped = Known(budgeted, progress_bar=False, callbacks=callbacks).run()
    assert stopped.stopped_by == "SIGINT"
    before = recorded_plan(budgeted.out)["revisions"]
    result = Known(budgeted, resume=True, progress_bar=False).run()
    after = recorded_plan(budgeted.out)
    assert after["revisions"][: len(before)] == before  # the record goes on
    p = result.progress
    assert result.stopped_by == "time_budget" and p.step == p.planned_steps
    assert p.elapsed_s <= BUDGET
    assert epoch_rows(budgeted.out)[-1]["lr"] == pytest.approx(budgeted.lr * 0.05)


# --- the arithmetic, against plain loops -------------------------------------------------------


def cosine_by_steps(warmup: int, total: int, revisions: list[tuple[int, int]], t: int) -> float:
    """The cosine's progress at step t, one step at a time: each step moves it by what is left,
    spread over the steps left in the plan of the time."""
    progress, end = 0.0, total
    changes = dict(revisions)
    for step in range(warmup, t):
        end = changes.get(step, end)
        progress += (1 - progress) / (end - step) if end > step else 1 - progress
    return min(progress, 1.0)


@pytest.mark.parametrize("seed", range(8))
def test_the_schedule_stretches_from_where_it_is(seed: int) -> None:
    rng = random.Random(seed)
    warmup, total = rng.choice([0, 5]), rng.randint(40, 200)
    revisions, at = [], warmup
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(at + 1, at + 30)
        revisions.append((at, rng.randint(at + 1, at + 250)))
    opt = OptimSettings("adam", 1.0, 0.0, "cosine", warmup, 1, 1.0, 1.0)
    factor = lr_factor(opt, total, revisions)
    last = revisions[-1][1]
    for t in range(warmup, last + 1):
        want = 0.05 + 0.95 * 0.5 * (
            1 + math.cos(math.pi * cosine_by_steps(warmup, total, revisions, t))
        )
        assert factor(t) == pytest.approx(want, rel=1e-9, abs=1e-12), t
    for i, (at, _) in enumerate(revisions):  # no jump where the plan changed
        before = lr_factor(opt, total, revisions[:i])
        assert factor(at) == before(at)
    assert factor(last) == 0.05 and factor(last + 10) == 0.05
    assert lr_factor(opt, total)(7) == lr_factor(opt, total, [])(7)


def brute_seconds(c: Costs, w: Work, start: int, end: int) -> float:
    """What `Work.seconds` counts, step by step."""
    E, total = w.steps_per_epoch, 0.0
    for t in range(start + 1, end + 1):
        total += c.step_s
        if t % E == 0 or t == end:
            total += c.validation_s + 2 * c.checkpoint_s + (c.sample_s if w.sample_every else 0)
        if w.save_every and t % w.save_every == 0:
            total += c.checkpoint_s
        if w.eval_every and t % w.eval_every == 0:
            total += c.eval_s
        if w.sample_every and w.sample_steps and t % E and (t % E) % w.sample_steps == 0:
            total += c.sample_s
    return total


@pytest.mark.parametrize("seed", range(12))
def test_the_work_of_a_stretch_of_steps_and_what_fits(seed: int) -> None:
    rng = random.Random(seed)
    c = Costs(*(rng.uniform(0.01, 1.0) for _ in range(3)), 0.0, rng.random(), rng.random())
    w = Work(rng.randint(1, 60), rng.choice([0, 7]), rng.choice([0, 10]), rng.choice([0, 1]),
             rng.choice([0, 4]))  # fmt: skip
    start = rng.randint(0, 200)
    for end in range(start, start + 150):
        assert w.seconds(c, start, end) == pytest.approx(brute_seconds(c, w, start, end))
    seconds, limit = rng.uniform(0, 30), rng.choice([0, start + 20])
    fits = refit(c, w, start, seconds, limit)
    ends = range(start + 1, (limit or start + 3000) + 1)  # a step costs >= 0.01 s: 3000 > 30 s
    best = max([e for e in ends if w.seconds(c, start, e) <= seconds], default=start + 1)
    assert fits == best


def test_the_recent_rate_is_the_mean_of_the_last_windows() -> None:
    """A load that comes for one window moves the rate by part of its size; one that lasts
    shows in full after PACE_WINDOWS windows (of 1 s of steps here)."""
    pace, windows = Pace(1.0), []
    for step_s in (0.125, 0.125, 0.125, 0.5, 0.125, 0.125, 0.5, 0.5, 0.5):
        for _ in range(round(1.0 / step_s)):
            pace.add(step_s)
        assert pace.due
        windows.append((round(1.0 / step_s), 1.0))
        last = windows[-PACE_WINDOWS:]
        assert pace.take() == pytest.approx(sum(s for _, s in last) / sum(n for n, _ in last))
        assert not pace.due
    assert pace.step_s == 0.5  # the last windows, nothing since
    never = Pace(0.0)  # --revise-every 0: never due
    never.add(100.0)
    assert not never.due


def test_a_plan_on_track_is_not_revised() -> None:
    costs = Costs(0.1, 1.0, 0.1)
    work = Work(100)
    plan = Plan.made(plan_steps(600.0, costs, 100), "time_budget", costs, {})
    step, spent = 1000, 1000 * 0.1 + 10 * 1.2  # as planned so far
    assert revised_steps(plan, 0.1, step, spent, 600.0, work) is None
    slower = revised_steps(plan, 0.2, step, spent, 600.0, work)
    assert slower is not None and step < slower < plan.total
    assert revised_steps(plan, 0.05, step, spent, 600.0, work) > plan.total


def test_a_plan_record_round_trips_and_old_ones_read() -> None:
    plan = Plan.made(100, "time_budget", Costs(1.0, 0.1, 0.01), {}, limit=500)
    plan = plan.revised(10, 80, 1.5, "runs/a").revised(20, 90, 1.2, "runs/a")
    assert Plan.from_record(json.loads(json.dumps(plan.record()))) == plan
    assert (plan.total, plan.schedule()) == (90, ((10, 80), (20, 90)))
    old = {"steps": 30, "set_by": "epochs/max_steps", "replay": "--max-steps 30"}
    assert Plan.from_record(old).limit == 30 and Plan.from_record(old).revisions == ()
    for bad, why in (
        ([{"step": 5, "steps": 4, "step_s": 1.0}], "revise at step 5 to 4 steps, not past it"),
        ([{"step": 5, "steps": 9, "step_s": 1.0}, {"step": 2, "steps": 9, "step_s": 1.0}],
         "are not in step order"),
        ([{"step": 5, "steps": 9, "step_s": "fast"}], "revisions.0.step_s must be a finite"),
        ([{"step": 5, "steps": 9}], "revisions.0.step_s is missing"),
    ):  # fmt: skip
        with pytest.raises(CharLMError, match=f"^runs/a: plan: .*{why}"):
            Plan.from_record({**old, "revisions": bad}, "runs/a: plan")


def test_under_torchrun_rank_0_decides_at_a_log_step() -> None:
    """Every rank enters the agreement at the same step; rank 0's rate and clock decide (with
    no process group here, the all-reduce is this rank's own numbers)."""
    costs = Costs(0.1, 0.0, 0.0)
    plan = Plan.made(1000, "time_budget", costs, {})
    work = Work(10_000)
    for rank, revises in ((0, True), (1, False)):
        replanning = Replanning(1.0, 20, Context(rank=rank, world_size=2), torch.device("cpu"))
        for _ in range(30):
            replanning.add(0.2)  # twice the planned step
        assert replanning.revise(plan, 30, 6.0, 100.0, work, "runs/a") is None  # not a log step
        revised = replanning.revise(plan, 40, 8.0, 100.0, work, "runs/a")
        assert (revised is not None) == revises


def test_the_end_line() -> None:
    plan = Plan.made(917, "time_budget", Costs(0.03, 0.1, 0.01), {}).revised(400, 640, 0.05, "r")
    assert end_line(637, 917, "time_budget", None) == (
        "stopped at 637 of 917 planned steps (the clock ran out first)"
    )
    assert end_line(640, 640, "time_budget", plan) == (
        "trained 640 of 640 planned steps; the plan was revised once: 917 -> 640 at step 400 "
        "(0.0500 s a step); replay exactly with --replay r"
    )
