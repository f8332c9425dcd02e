"""--time-budget plans the run: the steps that fit, fixed once, recorded, resumable, replayable.

The costs a plan is made from are injected through the public `Trainer.measure_costs` hook,
so every plan here is the same on a quiet machine and on a busy one.
"""

import json
import math
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from charlm.budget import SAFETY, Costs, plan_steps
from charlm.checkpoint import LATEST, load_model
from charlm.config import DEFAULT_EPOCHS, TrainConfig
from charlm.errors import CharLMError, command_line
from charlm.settle import AUTO_MANY_EPOCHS, MANY_EPOCHS, resolve_auto
from charlm.train import Callback, Trainer
from tests.conftest import SignalAt

STEP_S = 1.0  # the injected cost of a step: far above a tiny step's real cost, so the
# clock never stops these runs before their plan (a 60 s budget plans ~55 steps)


class KnownCosts(Trainer):
    """Measures for real (so the throwaway steps run and must leave no trace), then plans
    from known costs."""

    def measure_costs(self) -> Costs:
        super().measure_costs()
        return Costs(step_s=STEP_S, validation_s=0.2, checkpoint_s=0.01, measure_s=0.0)


class NeverMeasures(Trainer):
    def measure_costs(self) -> Costs:
        raise AssertionError("a plan is made once; a resumed run must not measure again")


def cost(n: int, c: Costs, steps_per_epoch: int) -> float:
    """The seconds n steps take with their epoch ends: the quantity a plan must keep in budget."""
    return n * c.step_s + math.ceil(n / steps_per_epoch) * (c.validation_s + 2 * c.checkpoint_s)


@pytest.mark.parametrize("seed", range(20))
def test_plan_fits_the_budget_and_wastes_at_most_an_epoch_end(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    step, val, ckpt = (torch.rand(3, generator=g) * torch.tensor([0.2, 5.0, 0.5])).tolist()
    c = Costs(step_s=step + 1e-3, validation_s=val, checkpoint_s=ckpt)
    E = int(torch.randint(1, 3000, (1,), generator=g))
    budget = float(torch.randint(30, 3600, (1,), generator=g))
    n = plan_steps(budget, c, E)
    usable = budget * (1 - SAFETY)
    assert n == 1 or cost(n, c, E) <= usable
    best = max(k for k in range(1, n + 20_000) if cost(k, c, E) <= usable or k == 1)
    assert best - n <= (c.validation_s + 2 * c.checkpoint_s) / c.step_s + 1


def test_plan_counts_measuring_and_periodic_checkpoints() -> None:
    c = Costs(step_s=0.1, validation_s=0.0, checkpoint_s=0.5, measure_s=10.0)
    # (100 - 10) * 0.97 = 87.3 s; per step 0.1 + 2 * 0.5 / 1000 + 0.5 / 10 = 0.151 s
    assert plan_steps(100.0, c, 1000, save_every=10) == int((87.3 - 1.0) / 0.151)


def rows(out: Path) -> list[dict]:
    """The epoch rows of a run's metrics.jsonl."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind", "epoch") == "epoch"]


@pytest.fixture
def one_thread():
    """Bitwise comparisons on one thread: on a loaded machine MKL may change its thread count
    between two runs, and with it the order of a sum (seen here with dropout, 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def budget_config(tiny_config):
    # 2 layers and dropout: the throwaway steps draw random numbers that must be given back;
    # the plan is made once from the known costs (revisions: tests/test_revise.py)
    return replace(
        tiny_config, epochs=1000, time_budget=60.0, num_layers=2, dropout=0.2, revise_every=0.0
    )


def test_budget_plans_records_and_anneals(budget_config, tmp_path: Path) -> None:
    trainer = KnownCosts(budget_config, progress_bar=False)
    result = trainer.run()
    E = len(trainer.sampler)
    costs = Costs(step_s=STEP_S, validation_s=0.2, checkpoint_s=0.01)
    planned = plan_steps(60.0, costs, E)
    assert planned < 1000 * E
    assert result.stopped_by == "time_budget" and result.progress.step == planned
    plan = json.loads((tmp_path / "run" / "config.json").read_text())["plan"]
    assert plan["steps"] == planned and plan["set_by"] == "time_budget"
    H, lr = budget_config.hidden_size, budget_config.lr
    assert plan["replay"] == (
        f"--max-steps {planned} --time-budget 0 --hidden-size {H} --seq-len 16 --lr {lr:g} "
        f"--dropout 0.2"
    )
    ckpt = torch.load(tmp_path / "run" / LATEST, weights_only=True)
    assert ckpt["progress"]["planned_steps"] == planned and ckpt["plan"] == plan
    # the cosine schedule has run its course: the rate ends at lr / 20
    assert rows(tmp_path / "run")[-1]["lr"] == pytest.approx(lr * 0.05)


@pytest.mark.parametrize("sampler", ["random", "consecutive"])
@pytest.mark.usefixtures("one_thread")
def test_a_budget_run_replays_step_for_step(budget_config, tmp_path: Path, sampler: str) -> None:
    a = replace(budget_config, sampler=sampler, out=str(tmp_path / "a"))
    KnownCosts(a, progress_bar=False).run()
    replay = json.loads((tmp_path / "a" / "config.json").read_text())["plan"]["steps"]
    # as the README replays a run: its config.json, the plan as a step count, no budget
    b = TrainConfig.from_file(
        tmp_path / "a" / "config.json", out=str(tmp_path / "b"), max_steps=replay, time_budget=0.0
    )
    result = Trainer(b, progress_bar=False).run()
    assert result.stopped_by == "max_steps" and result.progress.step == replay
    wa = load_model(tmp_path / "a" / LATEST, "cpu")[0].state_dict()
    wb = load_model(tmp_path / "b" / LATEST, "cpu")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    keys = ("step", "train_loss", "val_loss", "lr", "grad_norm")
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert [[r[k] for k in keys] for r in ra] == [[r[k] for k in keys] for r in rb]


@pytest.mark.usefixtures("one_thread")
def test_a_signal_while_measuring_saves_the_plan_and_resume_trains_it(budget_config, tmp_path):
    class CtrlCWhileMeasuring(KnownCosts):
        def measure_costs(self) -> Costs:
            signal.raise_signal(signal.SIGINT)
            return super().measure_costs()

    whole = replace(budget_config, out=str(tmp_path / "whole"))
    KnownCosts(whole, progress_bar=False).run()
    cut = replace(budget_config, out=str(tmp_path / "cut"))
    stopped = CtrlCWhileMeasuring(cut, progress_bar=False).run()
    assert stopped.stopped_by == "SIGINT" and stopped.progress.step == 0
    result = NeverMeasures(cut, resume=True, progress_bar=False).run()
    assert result.stopped_by == "time_budget"
    assert result.progress.step == stopped.progress.planned_steps > 0
    wa = load_model(tmp_path / "whole" / LATEST, "cpu")[0].state_dict()
    wb = load_model(tmp_path / "cut" / LATEST, "cpu")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.usefixtures("one_thread")
def test_resume_keeps_the_plan(budget_config, tmp_path: Path) -> None:
    whole = replace(budget_config, out=str(tmp_path / "whole"))
    KnownCosts(whole, progress_bar=False).run()
    cut = replace(budget_config, out=str(tmp_path / "cut"))
    ctrl_c = SignalAt(7, signal.SIGINT)  # a real Ctrl-C after step 7
    assert KnownCosts(cut, progress_bar=False, callbacks=[ctrl_c]).run().stopped_by == "SIGINT"
    result = NeverMeasures(cut, resume=True, progress_bar=False).run()
    assert result.stopped_by == "time_budget"
    wa = load_model(tmp_path / "whole" / LATEST, "cpu")[0].state_dict()
    wb = load_model(tmp_path / "cut" / LATEST, "cpu")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert rows(tmp_path / "whole")[-1]["lr"] == rows(tmp_path / "cut")[-1]["lr"]


def test_fewer_epochs_than_the_budget_allows_set_the_plan(budget_config, tmp_path) -> None:
    trainer = KnownCosts(replace(budget_config, epochs=2, time_budget=600.0), progress_bar=False)
    result = trainer.run()
    assert result.stopped_by == "epochs" and result.progress.step == 2 * len(trainer.sampler)
    plan = json.loads((tmp_path / "run" / "config.json").read_text())["plan"]
    assert plan["steps"] == 2 * len(trainer.sampler) and plan["set_by"] == "epochs/max_steps"
    assert [r["partial"] for r in rows(tmp_path / "run")] == [False, False]


def test_the_clock_still_stops_a_run_slower_than_planned(budget_config, tmp_path) -> None:
    class Optimist(Trainer):
        def measure_costs(self) -> Costs:
            return Costs(step_s=1e-6, validation_s=0.0, checkpoint_s=0.0)

    result = Optimist(replace(budget_config, time_budget=0.5), progress_bar=False).run()
    assert result.stopped_by == "time_budget"
    assert result.progress.step < result.progress.planned_steps
    assert result.progress.elapsed_s < 5.0


def test_without_epochs_the_budget_alone_sets_the_length(budget_config, tmp_path) -> None:
    trainer = KnownCosts(replace(budget_config, epochs=0), progress_bar=False)
    result = trainer.run()
    E, planned = len(trainer.sampler), result.progress.planned_steps
    assert planned == plan_steps(60.0, Costs(STEP_S, 0.2, 0.01), E) and planned > E
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["epochs"] == -(-planned // E) and config["plan"]["set_by"] == "time_budget"
    assert result.progress.step == planned


@pytest.mark.parametrize(("max_steps", "epochs"), [(0, DEFAULT_EPOCHS), (5, 1), (82, 2), (83, 3)])
def test_without_budget_epochs_default_to_seven_or_what_max_steps_needs(
    tiny_config, max_steps: int, epochs: int
) -> None:
    trainer = Trainer(replace(tiny_config, epochs=0, max_steps=max_steps), progress_bar=False)
    assert len(trainer.sampler) == 41  # the tiny corpus: 41 batches an epoch
    assert trainer.cfg.epochs == epochs


@pytest.mark.parametrize(
    ("budget", "epochs", "given", "chosen"),
    [
        (30.0, 0, {}, (384, 64, 1e-2, 0.25)),
        (119.0, 0, {}, (384, 64, 1e-2, 0.25)),
        (60.0, 50, {}, (384, 64, 1e-2, 0.25)),  # a short budget keeps its model on any text
        (120.0, 0, {}, (448, 128, 5e-3, 0.25)),
        (600.0, 12, {}, (448, 128, 5e-3, 0.25)),
        (600.0, 13, {}, (640, 128, 5e-3, 0.5)),  # a plan of many epochs: larger, more dropout
        (120.0, 13, {}, (640, 128, 5e-3, 0.5)),
        (0.0, 0, {}, (448, 128, 5e-3, 0.25)),  # no budget: the longer run's
        (0.0, 50, {}, (448, 128, 5e-3, 0.25)),  # ... whatever the epochs
        (30.0, 0, {"seq_len": 200}, (384, 200, 1e-2, 0.25)),
        (600.0, 0, {"lr": 1e-3}, (448, 128, 1e-3, 0.25)),
        (30.0, 0, {"hidden_size": 512}, (512, 64, 1e-2, 0.25)),
        (600.0, 0, {"hidden_size": 64}, (64, 128, 5e-3, 0.25)),
        (600.0, 20, {"hidden_size": 64}, (64, 128, 5e-3, 0.5)),
        (600.0, 20, {"dropout": 0.0}, (640, 128, 5e-3, 0.0)),
        (30.0, 0, {"dropout": 0.3}, (384, 64, 1e-2, 0.3)),
    ],
)
def test_auto_settings_follow_the_budget_and_the_plan_and_given_values_win(
    budget, epochs, given, chosen
):
    cfg = resolve_auto(TrainConfig(time_budget=budget, **given), planned_epochs=epochs)
    assert (cfg.hidden_size, cfg.seq_len, cfg.lr, cfg.dropout) == chosen


class CountsMeasures(Trainer):
    """Known costs: a step of 0.1 s plans 20-30 epochs of the tiny corpus in 90-130 s."""

    measured = 0

    def measure_costs(self) -> Costs:
        super().measure_costs()
        CountsMeasures.measured += 1
        return Costs(step_s=0.1, validation_s=0.2, checkpoint_s=0.01, measure_s=0.0)


@pytest.fixture
def many_epochs(tiny_config, monkeypatch):
    """A budget of ~30 epochs with the model left to auto; the recipe for many epochs scaled
    down to a test's size (its values are resolve_auto's, tested above)."""
    monkeypatch.setitem(AUTO_MANY_EPOCHS, "hidden_size", 24)
    monkeypatch.setattr(CountsMeasures, "measured", 0)
    return replace(
        tiny_config, hidden_size=0, dropout=-1.0, epochs=0, time_budget=130.0, revise_every=0.0
    )


@pytest.mark.usefixtures("one_thread")
def test_a_plan_of_many_epochs_trains_the_larger_model_and_replays(many_epochs, tmp_path):
    result = CountsMeasures(replace(many_epochs, out=str(tmp_path / "a")), progress_bar=False).run()
    assert CountsMeasures.measured == 2  # the default model's plan, then the larger one's
    recorded = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (recorded["hidden_size"], recorded["dropout"]) == (24, 0.5)
    steps = recorded["plan"]["steps"]
    assert recorded["plan"]["replay"] == (
        f"--max-steps {steps} --time-budget 0 --hidden-size 24 --seq-len 16 --lr 0.01 --dropout 0.5"
    )
    assert result.stopped_by == "time_budget" and result.progress.step == steps
    assert steps > MANY_EPOCHS * 41  # the second plan: the costs are the same, so the epochs too
    model = load_model(tmp_path / "a" / LATEST, "cpu")[0]
    assert model.cfg.hidden_size == 24 and model.cfg.dropout == 0.5
    # the replay line, as a user passes it: the same run, step for step
    b = replace(many_epochs, out=str(tmp_path / "b"), max_steps=steps, time_budget=0.0,
                hidden_size=24, dropout=0.5)  # fmt: skip
    Trainer(b, progress_bar=False).run()
    wa = load_model(tmp_path / "a" / LATEST, "cpu")[0].state_dict()
    wb = load_model(tmp_path / "b" / LATEST, "cpu")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    keys = ("step", "train_loss", "val_loss", "lr")
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert [[r[k] for k in keys] for r in ra] == [[r[k] for k in keys] for r in rb]


@pytest.mark.parametrize(
    ("given", "budget"), [({"hidden_size": 32, "dropout": 0.1}, 130.0), ({}, 90.0)]
)
def test_given_settings_or_a_short_budget_keep_the_first_model(many_epochs, given, budget):
    """Given values are kept whatever the plan; a budget under 120 s keeps its small model."""
    cfg = replace(many_epochs, time_budget=budget, **given)
    trainer = CountsMeasures(cfg, progress_bar=False, callbacks=[SignalAt(1)])  # plan, 1 step
    assert trainer.run().stopped_by == "SIGINT"
    assert CountsMeasures.measured == 1
    assert trainer.plan.steps > MANY_EPOCHS * len(trainer.sampler)
    want = given.get("hidden_size", 384), given.get("dropout", 0.25)
    assert (trainer.cfg.hidden_size, trainer.cfg.dropout) == want


def test_a_run_records_what_auto_chose_and_the_replay_names_it(tiny_config, tmp_path) -> None:
    cfg = replace(tiny_config, seq_len=0, lr=0.0, epochs=1000, time_budget=60.0, revise_every=0.0)
    KnownCosts(cfg, progress_bar=False).run()
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (recorded["seq_len"], recorded["lr"]) == (64, 1e-2)
    H = tiny_config.hidden_size
    assert recorded["plan"]["replay"].endswith(
        f"--hidden-size {H} --seq-len 64 --lr 0.01 --dropout 0.25"
    )


def test_sgd_has_no_automatic_rate(tiny_config) -> None:
    with pytest.raises(CharLMError, match="optimizer='sgd' has no automatic lr:"):
        Trainer(replace(tiny_config, optimizer="sgd", lr=0.0), progress_bar=False)
    with command_line(), pytest.raises(CharLMError, match="--optimizer sgd has no automatic --lr"):
        Trainer(replace(tiny_config, optimizer="sgd", lr=0.0), progress_bar=False)


def test_a_budget_spent_by_an_epoch_end_stops_the_run_there(budget_config) -> None:
    """No step into the next epoch, and no second validation and checkpoint for it."""

    class SlowEpochEnd(Callback):
        def on_epoch_end(self, trainer, row) -> None:
            trainer.p.elapsed_s += 1e6  # as if validating took all that was left

    trainer = KnownCosts(budget_config, progress_bar=False, callbacks=[SlowEpochEnd()])
    result = trainer.run()
    assert result.stopped_by == "time_budget"
    assert result.progress.step == len(trainer.sampler) and not result.last_row["partial"]
    assert len(rows(Path(budget_config.out))) == 1
