"""The training loop: metrics, checkpoints, stopping rules, reproducibility."""

import json
import math
import re
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from charlm.budget import Costs
from charlm.checkpoint import BEST, LATEST, load_model
from charlm.info import format_info, run_info
from charlm.train import TrainConfig, train
from tests.conftest import SignalAt, epoch_rows, tiny

KEYS = {
    "epoch",
    "step",
    "train_loss",
    "train_ppl",
    "val_loss",
    "val_ppl",
    "val_bpc",
    "lr",
    "grad_norm",
    "chars_per_sec",
    "elapsed_s",
}


def rows(out):
    return epoch_rows(out)


def test_training_writes_metrics_checkpoints_and_learns(tiny_config, tmp_path):
    result = train(tiny(tiny_config, epochs=3), progress_bar=False)
    out = tmp_path / "run"
    metrics = rows(out)
    assert [r["epoch"] for r in metrics] == [1, 2, 3]
    for r in metrics:
        assert r.keys() >= KEYS
        assert r["train_ppl"] == pytest.approx(math.exp(r["train_loss"]))
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
        assert r["val_bpc"] == pytest.approx(r["val_loss"] / math.log(2))
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["val_loss"] < math.log(len(set(Path(tiny_config.corpus).read_text())))
    assert result.stopped_by == "epochs" and result.exit_code == 0
    for name in (LATEST, BEST):
        ckpt = torch.load(out / name, weights_only=True)
        assert ckpt["vocab"] and ckpt["progress"]["step"] == metrics[-1]["step"]
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 32


def test_same_seed_same_weights_and_metrics(tiny_config, tmp_path):
    a = train(
        tiny(tiny_config, out=str(tmp_path / "a"), dropout=0.2, num_layers=2), progress_bar=False
    )
    b = train(
        tiny(tiny_config, out=str(tmp_path / "b"), dropout=0.2, num_layers=2), progress_bar=False
    )
    wa = load_model(a.out / LATEST, "cpu")[0].state_dict()
    wb = load_model(b.out / LATEST, "cpu")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["train_loss"] for r in rows(a.out)] == [r["train_loss"] for r in rows(b.out)]
    c = train(tiny(tiny_config, out=str(tmp_path / "c"), seed=99), progress_bar=False)
    assert rows(c.out)[0]["train_loss"] != rows(a.out)[0]["train_loss"]


def test_no_validation_gives_null_val_fields(tiny_config, tmp_path):
    train(tiny(tiny_config, val_fraction=0.0, epochs=1), progress_bar=False)
    (row,) = rows(tmp_path / "run")
    assert row["val_loss"] is None and row["val_ppl"] is None and row["val_bpc"] is None
    assert not (tmp_path / "run" / BEST).exists()


def test_max_steps_stops_mid_epoch_with_a_final_row_and_checkpoint(tiny_config, tmp_path):
    result = train(tiny(tiny_config, max_steps=5), progress_bar=False)
    (row,) = rows(tmp_path / "run")
    assert result.stopped_by == "max_steps" and row["step"] == 5 and row["partial"]
    assert row["val_loss"] is not None
    assert torch.load(tmp_path / "run" / LATEST, weights_only=True)["progress"]["step"] == 5


def test_time_budget_stops(tiny_config):
    result = train(tiny(tiny_config, epochs=1000, time_budget=0.5), progress_bar=False)
    assert result.stopped_by == "time_budget" and result.progress.epoch < 1000


@pytest.mark.parametrize("sampler", ["random", "consecutive"])
def test_textbook_configuration_runs(sampler, corpus, tmp_path):
    cfg = TrainConfig(
        corpus=str(corpus),
        out=str(tmp_path / sampler),
        model="rnn",
        embedding_dim=0,
        hidden_size=256,
        num_layers=1,
        seq_len=35,
        batch_size=32,
        optimizer="sgd",
        lr=100,
        clip=0.01,
        val_fraction=0,
        epochs=2,
        sampler=sampler,
        lr_schedule="constant",
        sample_every=0,
        device="cpu",
    )
    train(cfg, progress_bar=False)
    metrics = rows(tmp_path / sampler)
    assert len(metrics) == 2 and metrics[1]["train_ppl"] < metrics[0]["train_ppl"]
    assert metrics[0]["grad_norm"] > 0.01  # the pre-clip norm is recorded, not the clipped one
    assert metrics[0]["lr"] == 100


def test_clipping_bounds_the_update(tiny_config, tmp_path):
    """With SGD, one clipped step moves the weights by at most lr * clip in norm."""
    cfg = tiny(
        tiny_config,
        optimizer="sgd",
        lr=1.0,
        clip=1e-3,
        max_steps=1,
        val_fraction=0,
        lr_schedule="constant",
    )
    torch.manual_seed(cfg.seed)
    from charlm.train import Trainer

    trainer = Trainer(cfg, progress_bar=False)
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.run()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    assert (after - before).norm() <= 1e-3 * 1.0001
    assert rows(tmp_path / "run")[0]["grad_norm"] > 1e-3


def test_samples_are_written_every_epoch(tiny_config, tmp_path):
    train(tiny(tiny_config, sample_every=1, sample_length=30), progress_bar=False)
    samples = (tmp_path / "run" / "samples.txt").read_text()
    assert "=== epoch 1" in samples and "=== epoch 2" in samples


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_lr_schedule_is_logged(tiny_config, tmp_path, schedule):
    train(
        tiny(tiny_config, lr_schedule=schedule, lr_step_size=5, warmup_steps=2, epochs=3),
        progress_bar=False,
    )
    lrs = [r["lr"] for r in rows(tmp_path / "run")]
    assert lrs[0] < tiny_config.lr and lrs[-1] < lrs[0]  # warm-up, then down


# --- stopping at and just before an epoch boundary, then resuming ----------------------------


def boundary_config(tiny_config, out, sampler, **changes):
    changes = {"epochs": 2, **changes}
    return tiny(tiny_config, out=str(out), sampler=sampler, lr_schedule="constant", **changes)


class StepClock:
    """A stand-in for time.perf_counter that advances one second per call: one step = 1 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.parametrize("sampler", ["random", "consecutive"])
@pytest.mark.parametrize(
    ("reason", "before"),
    [("epochs", 0), *((r, b) for r in ("max_steps", "time_budget", "SIGTERM") for b in (0, 1))],
)
def test_stop_at_or_before_an_epoch_boundary_then_resume(
    tiny_config, tmp_path, monkeypatch, sampler, reason, before
):
    """Whatever stops a run at step n or n-1 (n = one epoch), resuming ends like a straight run."""
    from charlm.train import Trainer

    straight = train(
        boundary_config(tiny_config, tmp_path / "straight", sampler), progress_bar=False
    )
    n = rows(straight.out)[0]["step"]
    stop_at = n - before
    out = tmp_path / "stopped"
    if reason == "epochs":
        first = train(boundary_config(tiny_config, out, sampler, epochs=1), progress_bar=False)
    elif reason == "max_steps":
        first = train(
            boundary_config(tiny_config, out, sampler, max_steps=stop_at), progress_bar=False
        )
    elif reason == "time_budget":
        clock = SimpleNamespace(perf_counter=StepClock())
        monkeypatch.setattr(sys.modules["charlm.train"], "time", clock)
        # the plan sets no earlier stop (a step costs ~nothing) and measuring takes no time:
        # the clock alone stops the run, one step per second
        monkeypatch.setattr(Trainer, "measure_costs", lambda self: Costs(1e-6, 0.0, 0.0))
        cfg = boundary_config(
            tiny_config, out, sampler, time_budget=stop_at - 0.5, revise_every=0.0
        )  # the plan is not revised: the clock alone stops the run
        first = train(cfg, progress_bar=False)
        monkeypatch.undo()
    else:
        first = train(
            boundary_config(tiny_config, out, sampler),
            progress_bar=False,
            callbacks=[SignalAt(stop_at, signal.SIGTERM)],
        )
    assert first.stopped_by == reason and first.progress.step == stop_at
    assert (first.progress.epoch, first.progress.batch == 0) == (
        (1, True) if not before else (0, False)
    )
    info = format_info(run_info(out))
    assert bool(re.search(r"trained\s+1 of", info)) == (not before), info

    again = train(boundary_config(tiny_config, out, sampler), resume=True, progress_bar=False)
    assert again.stopped_by == "epochs"
    got, want = rows(out), rows(straight.out)
    steps = [r["step"] for r in got]
    assert len(steps) == len(set(steps))  # never two rows for one step
    assert [r for r in got if not r["partial"]] == [
        {**r, "elapsed_s": g["elapsed_s"], "chars_per_sec": g["chars_per_sec"]}
        for r, g in zip(want, [r for r in got if not r["partial"]], strict=True)
    ]
    wa = torch.load(straight.out / LATEST, weights_only=True)["model"]
    wb = torch.load(out / LATEST, weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_at_its_limit_trains_nothing_and_writes_no_row(tiny_config, tmp_path):
    cfg = tiny(tiny_config, max_steps=3)
    train(cfg, progress_bar=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    result = train(cfg, resume=True, progress_bar=False)
    assert result.stopped_by == "max_steps" and result.progress.step == 3
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_a_run_from_before_output_dropout_is_refused_on_resume(tiny_config, tmp_path):
    """Its --dropout acted between layers only: resumed now, the rest would train another
    model, so --resume says so (runs without dropout resume as before)."""
    from charlm.errors import CharLMError, command_line

    cfg = tiny(tiny_config, epochs=1, num_layers=2, dropout=0.2)
    train(cfg, progress_bar=False)
    path = tmp_path / "run" / LATEST
    old = torch.load(path, weights_only=True)
    del old["output_dropout"]
    torch.save(old, path)
    with pytest.raises(
        CharLMError,
        match=r"with dropout between layers only.* overwrite=True or another out=\.\.\.",
    ):
        train(tiny(cfg, epochs=2), resume=True, progress_bar=False)
    with command_line(), pytest.raises(CharLMError, match="--dropout between layers only"):
        train(tiny(cfg, epochs=2), resume=True, progress_bar=False)
    old["config"]["dropout"] = 0.0
    torch.save(old, path)
    assert (
        train(tiny(cfg, epochs=2, dropout=0.0), resume=True, progress_bar=False).progress.epoch == 2
    )
