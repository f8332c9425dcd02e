"""Settle, then run: one pure function settles a run's settings from what was asked and the
facts known so far; `charlm train --dry-run` prints what it settled and writes nothing."""

import json
import math
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm.budget import Costs, Plan, plan_steps
from charlm.cli import main
from charlm.config import DEFAULT_EPOCHS, TrainConfig
from charlm.errors import CharLMError, command_line
from charlm.settle import AUTO_MANY_EPOCHS, MANY_EPOCHS, Facts, keep_resumed, settle
from charlm.train import StopReason, Trainer, dry_run, train
from tests.conftest import ROOT, tiny

E = 41  # steps an epoch of the tiny corpus


def test_settling_is_pure_and_free_of_torch() -> None:
    code = "import sys, charlm.settle; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    asked = TrainConfig(time_budget=600.0)
    facts = Facts(steps_per_epoch=E, costs=Costs(0.1, 0.5, 0.01))
    assert settle(asked, facts) == settle(asked, facts) and asked == TrainConfig(time_budget=600.0)


def test_without_a_budget_nothing_is_left_to_measure() -> None:
    settled = settle(TrainConfig(max_steps=100), Facts(steps_per_epoch=E, amp=False))
    assert (settled.cfg.epochs, settled.cfg.amp, settled.cfg.hidden_size) == (3, "off", 448)
    assert settled.plan is None and not settled.needs_costs
    assert settle(TrainConfig(), Facts(steps_per_epoch=E)).cfg.epochs == DEFAULT_EPOCHS
    # the epochs wait for an epoch's steps to be known
    assert settle(TrainConfig(max_steps=100)).cfg.epochs == 0


def test_a_budget_is_settled_twice_before_and_after_measuring() -> None:
    asked = TrainConfig(time_budget=60.0)
    before = settle(asked, Facts(steps_per_epoch=E))
    assert before.needs_costs and before.plan is None and before.cfg.epochs == 0
    assert (before.cfg.hidden_size, before.cfg.seq_len) == (384, 64)  # by the budget alone
    costs = Costs(step_s=0.05, validation_s=0.4, checkpoint_s=0.02, measure_s=1.5)
    after = settle(asked, Facts(steps_per_epoch=E, costs=costs, spent_s=2.0))
    steps = plan_steps(60.0 - 2.0, costs, E)
    assert not after.needs_costs and after.plan.steps == steps
    assert after.plan.set_by == "time_budget" and after.cfg.epochs == math.ceil(steps / E)
    assert after.plan.replay == (
        f"--max-steps {steps} --time-budget 0 --hidden-size 384 --seq-len 64 --lr 0.01 "
        f"--dropout 0.25"
    )
    assert Plan.from_record(after.plan.record()) == after.plan


def test_epochs_or_max_steps_allowing_fewer_steps_set_the_plan() -> None:
    asked = TrainConfig(time_budget=600.0, max_steps=30)
    settled = settle(asked, Facts(steps_per_epoch=E, costs=Costs(0.01, 0.0, 0.0)))
    assert (settled.plan.steps, settled.plan.set_by) == (30, "epochs/max_steps")


def test_the_first_plan_fixes_the_model() -> None:
    """A plan of many epochs chooses a larger model; measured again it is slower, and its plan
    holds fewer epochs, but the model stays: the run trains what it measured."""
    asked = TrainConfig(time_budget=600.0)
    fast = Costs(step_s=0.05, validation_s=0.1, checkpoint_s=0.01)
    first = settle(asked, Facts(steps_per_epoch=E, costs=fast))
    assert first.planned_epochs > MANY_EPOCHS and first.needs_costs  # another model: measure
    assert first.cfg.hidden_size == AUTO_MANY_EPOCHS["hidden_size"]
    slow = replace(fast, step_s=2.0)  # 600 s hold ~7 epochs of it
    second = settle(asked, Facts(steps_per_epoch=E, costs=slow, plan=first.plan))
    assert second.planned_epochs <= MANY_EPOCHS and not second.needs_costs
    assert (second.cfg.hidden_size, second.cfg.dropout) == (640, 0.5)
    assert second.plan.steps == plan_steps(600.0, slow, E)
    assert "--hidden-size 640" in second.plan.replay


def test_a_resumed_run_keeps_its_settings_and_its_plan() -> None:
    ran = replace(settle(TrainConfig(time_budget=600.0, epochs=3)).cfg, out="runs/a")
    plan = Plan.made(100, "time_budget", Costs(1.0, 0.0, 0.0), {"hidden_size": 448})
    asked = replace(TrainConfig(out="runs/a", lr=1e-3, epochs=5), time_budget=600.0)
    settled = settle(asked, Facts(steps_per_epoch=E, resumed=ran, plan=plan))
    assert settled.plan == plan and not settled.needs_costs  # nothing measured again
    assert (settled.cfg.hidden_size, settled.cfg.seq_len, settled.cfg.dropout) == (448, 128, 0.25)
    assert (settled.cfg.lr, settled.cfg.epochs) == (1e-3, 5)  # given: not fixed on resume
    with pytest.raises(
        CharLMError,
        match=r"cannot resume with seq_len=32: .* seq_len=128 \(.* another out=\.\.\.\)",
    ):
        keep_resumed(replace(asked, seq_len=32), ran)
    with (
        command_line(),
        pytest.raises(CharLMError, match=r"cannot resume with --seq-len 32: .* --seq-len 128"),
    ):
        keep_resumed(replace(asked, seq_len=32), ran)


def test_stop_reasons_are_todays_strings() -> None:
    assert StopReason.TIME_BUDGET == "time_budget" and f"done ({StopReason.TIME_BUDGET})" == (
        "done (time_budget)"
    )
    assert json.dumps({"stopped_by": StopReason.MAX_STEPS}) == '{"stopped_by": "max_steps"}'
    assert [r for r in StopReason if r.is_signal] == ["SIGINT", "SIGTERM", "SIGHUP"]
    assert StopReason.SIGINT.exit_code == 128 + signal.SIGINT == 130
    assert StopReason.SIGTERM.exit_code == 128 + signal.SIGTERM
    assert StopReason.EPOCHS.exit_code == StopReason.MAX_STEPS.exit_code == 0


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder`, with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


TINY = ["--hidden-size", "32", "--embedding-dim", "16", "--seq-len", "16", "--batch-size", "8",
        "--device", "cpu", "--amp", "off", "--sample-every", "0"]  # fmt: skip


def test_dry_run_prints_the_settled_run_and_writes_nothing(corpus: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = ["train", str(corpus), "--out", str(out), *TINY, "--lr", "0", "--time-budget", "30"]
    result = CliRunner().invoke(main, [*args, "--dry-run", "--quiet"])
    assert result.exit_code == 0, result.output
    assert not out.exists()  # no run folder, no lock, no checkpoint probe
    lines = result.output.splitlines()
    assert {line.split()[0] for line in lines} >= set(TrainConfig.__dataclass_fields__)
    assert re.search(r"^lr +0.01  \(asked: 0\)$", result.output, re.MULTILINE)
    assert re.search(r"^epochs +[1-9]\d*  \(asked: 0\)$", result.output, re.MULTILINE)
    assert any(line.startswith("measured: ") for line in lines)
    plan = lines[-1]
    assert plan.startswith("plan: ") and "replay exactly with --max-steps" in plan
    # an existing folder stays as it was, to the byte and the modification time
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    assert CliRunner().invoke(main, [*args, "--dry-run", "--quiet"]).exit_code == 0
    assert snapshot(out) == before


def test_a_dry_run_settles_what_the_run_then_trains(tiny_config, monkeypatch) -> None:
    """The same plan, settings and replay line: the dry run is the run's own settling."""
    monkeypatch.setattr(Trainer, "measure_costs", lambda self: Costs(0.5, 0.1, 0.01))
    cfg = tiny(tiny_config, lr=0.0, dropout=-1.0, epochs=0, time_budget=60.0, revise_every=0.0)
    lines = dry_run(cfg, quiet=True)
    assert not Path(cfg.out).exists()
    train(cfg, progress_bar=False)
    recorded = json.loads((Path(cfg.out) / "config.json").read_text())
    assert lines[-1] == Plan.from_record(recorded["plan"]).line()
    for name in ("lr", "dropout", "epochs", "amp", "seq_len"):
        value = recorded[name]
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert any(line.split()[:2] == [name, shown] for line in lines), (name, lines)


def test_a_dry_run_of_a_resume_touches_nothing(tiny_config) -> None:
    train(tiny(tiny_config, max_steps=3), progress_bar=False)
    out = Path(tiny_config.out)
    before = snapshot(out)
    args = ["train", tiny_config.corpus, "--out", str(out), "--resume", "--dry-run", "--quiet",
            "--epochs", "5", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    shown = [line.split()[:2] for line in result.output.splitlines()]
    assert (
        ["epochs", "5"] in shown and ["hidden_size", "32"] in shown and ["max_steps", "3"] in shown
    )
    assert snapshot(out) == before
    refused = CliRunner().invoke(main, [*args, "--hidden-size", "64"])
    assert refused.exit_code == 1 and "cannot resume with --hidden-size 64" in refused.output
    assert snapshot(out) == before
