"""Learning you can watch: a training row every --log-every steps, an evaluation on the first
--eval-chars characters of the validation text every --eval-every steps, a sample every
--sample-steps steps into an epoch, all in metrics.jsonl with their `kind`; plots against
steps, epochs or seconds; old run folders still plot and report."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from charlm.checkpoint import BEST, LATEST, load_model
from charlm.cli import main
from charlm.config import TrainConfig
from charlm.distributed import Context
from charlm.meter import Progress
from charlm.run import METRICS, RunFolder
from charlm.train import Callback, Trainer, train
from charlm.watch import Watch, eval_part
from tests.conftest import SignalAt, char_nll, epoch_rows, tiny

E = 41  # steps an epoch of the tiny corpus
# every row at every step, an evaluation every 10 steps, a sample 15 steps into an epoch
WATCHED = dict(log_every=1, eval_every=10, eval_chars=300, sample_every=1, sample_steps=15,
               sample_length=20, threads=1)  # fmt: skip
FIXTURES = Path(__file__).parent / "fixtures"


def all_rows(out: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / METRICS).read_text().splitlines()]


def test_rows_of_every_kind_at_their_steps(tiny_config) -> None:
    cfg = tiny(tiny_config, epochs=2, **WATCHED)
    train(cfg, progress_bar=False)
    rows = all_rows(cfg.out)
    kinds = {k: [r for r in rows if r["kind"] == k] for k in ("train", "eval", "epoch")}
    assert [r["step"] for r in kinds["train"]] == list(range(1, 2 * E + 1))
    assert [r["step"] for r in kinds["eval"]] == list(range(10, 2 * E, 10))
    assert [r["step"] for r in kinds["epoch"]] == [E, 2 * E]
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)  # written as they happen
    for r in rows:
        assert r["epochs"] == pytest.approx(r["step"] / E) and r["epoch"] == -(-r["step"] // E)
        assert r["lr"] > 0 and r["elapsed_s"] >= 0
    assert all(r["chars"] == 300 for r in kinds["eval"])
    for epoch in (1, 2):  # rows of one step each: their mean is the epoch's mean
        steps = [r for r in kinds["train"] if r["epoch"] == epoch]
        row = kinds["epoch"][epoch - 1]
        for key in ("train_loss", "grad_norm"):
            assert np.mean([r[key] for r in steps]) == pytest.approx(row[key], rel=1e-9)
    headings = [h for h in Path(cfg.out, "samples.txt").read_text().splitlines() if "===" in h]
    assert headings == [
        *("=== step 15 (0.37 epochs)", "=== step 30 (0.73 epochs)", "=== epoch 1"),
        *("=== step 56 (1.37 epochs)", "=== step 71 (1.73 epochs)", "=== epoch 2"),
    ]


def test_an_evaluation_scores_the_first_characters_of_the_validation_text(tiny_config) -> None:
    weights = {}

    class Keep(Callback):
        def on_step(self, trainer) -> None:
            if trainer.p.step == 20:
                weights.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer = Trainer(tiny(tiny_config, **WATCHED), progress_bar=False, callbacks=[Keep()])
    trainer.run()
    (row,) = [r for r in all_rows(trainer.cfg.out) if r["kind"] == "eval" and r["step"] == 20]
    model = load_model(Path(trainer.cfg.out) / LATEST, "cpu")[0]
    model.load_state_dict(weights)
    part, streams = eval_part(trainer.cfg, trainer.val_ids)
    assert len(part) == 300 and streams == 1
    nll = char_nll(model, part, seq_len=trainer.cfg.seq_len, streams=streams)
    assert row["val_loss"] == pytest.approx(float(nll.double().mean()), rel=1e-6)


def test_watching_changes_nothing_that_is_trained(tiny_config, tmp_path) -> None:
    quiet = tiny(tiny_config, out=str(tmp_path / "quiet"), eval_every=0, sample_every=0,
                 threads=1, dropout=0.2, num_layers=2)  # fmt: skip
    watched = tiny(quiet, out=str(tmp_path / "watched"), **WATCHED)
    for cfg in (quiet, watched):
        train(cfg, progress_bar=False)
    wa, wb = (load_model(Path(c.out) / LATEST, "cpu")[0].state_dict() for c in (quiet, watched))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["val_loss"] for r in epoch_rows(quiet.out)] == [
        r["val_loss"] for r in epoch_rows(watched.out)
    ]


def test_best_is_chosen_by_the_full_validation_only(tiny_config, monkeypatch) -> None:
    """An evaluation that scores 0 (a part of the text the model knows by heart) is a row, but
    best.pt follows the epochs' full validations."""
    import charlm.watch

    monkeypatch.setattr(charlm.watch, "validate", lambda *args: 0.0)
    cfg = tiny(tiny_config, epochs=2, **WATCHED)
    train(cfg, progress_bar=False)
    evals = [r["val_loss"] for r in all_rows(cfg.out) if r["kind"] == "eval"]
    assert evals and set(evals) == {0.0}
    best = torch.load(Path(cfg.out) / BEST, weights_only=True)["progress"]["best_val_loss"]
    assert best == min(r["val_loss"] for r in epoch_rows(cfg.out)) > 0


def test_resume_goes_on_with_every_kind_of_row(tiny_config, tmp_path) -> None:
    """Rows newer than the checkpoint are dropped, and the resumed run writes each row once:
    the same rows as a run never stopped."""
    straight = tiny(tiny_config, out=str(tmp_path / "straight"), epochs=2, **WATCHED)
    train(straight, progress_bar=False)
    cut = tiny(straight, out=str(tmp_path / "cut"), save_every=7)
    assert train(cut, progress_bar=False, callbacks=[SignalAt(23)]).stopped_by == "SIGINT"
    train(cut, resume=True, progress_bar=False)
    keys = ("kind", "step", "epochs", "lr", "train_loss", "val_loss", "grad_norm")
    got, want = all_rows(cut.out), all_rows(straight.out)
    assert [[r.get(k) for k in keys] for r in got] == [[r.get(k) for k in keys] for r in want]


def test_resume_keeps_the_lines_up_to_its_checkpoint(tmp_path) -> None:
    lines = [
        json.dumps({"kind": "train", "epoch": 1, "epochs": 0.5, "step": 5, "elapsed_s": 1.0,
                    "lr": 0.1, "train_loss": 2.0}),
        json.dumps({"kind": "eval", "epoch": 1, "epochs": 0.5, "step": 5, "elapsed_s": 1.0,
                    "lr": 0.1, "val_loss": 2.1, "chars": 100}),
        json.dumps({"kind": "later", "step": 6, "what": "a later charlm's row"}),
        json.dumps({"epoch": 1, "step": 10, "train_loss": 1.5, "elapsed_s": 2.0}),  # no kind
        json.dumps({"kind": "later", "step": 12}),
        json.dumps({"kind": "train", "epoch": 2, "epochs": 1.2, "step": 12, "elapsed_s": 2.5,
                    "lr": 0.1, "train_loss": 1.4}),
        '{"kind": "train", "st',
    ]  # fmt: skip
    (tmp_path / METRICS).write_text("\n".join(lines))
    folder = RunFolder(tmp_path)
    folder.open(fresh=False, step=10)
    folder.close()
    assert (tmp_path / METRICS).read_text() == "".join(line + "\n" for line in lines[:4])


def test_the_defaults_show_a_three_minute_run() -> None:
    """A 180 s budget on tiny Shakespeare: ~2,000 steps in epochs of 245 (the default run's
    numbers): at least 10 validation points and 5 samples with the default settings."""
    cfg, steps, epoch_steps = TrainConfig(time_budget=180.0), 2000, 245
    folder = RunFolder("unused", writes=False)
    watch = Watch(cfg, folder, None, np.zeros(100_000), epoch_steps, Context(), print)
    p, validations, samples = Progress(), 0, 0
    for step in range(1, steps + 1):
        p.count_step(0.0)
        if p.batch == epoch_steps:  # an epoch end: the full validation, and a sample
            validations += 1
            samples += (p.epoch + 1) % cfg.sample_every == 0
            p.next_epoch()
        elif step < steps and watch.due(p):  # the last step ends the run: no evaluation
            validations += watch._evaluates(p)
            samples += watch._samples(p)
    if p.batch:  # the last, partial epoch's end
        validations, samples = validations + 1, samples + 1
    assert validations >= 10 and samples >= 5


def _png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


@pytest.mark.parametrize(("axes", "columns"), [(["step"], 1), (["epoch", "step", "time"], 3)])
def test_plot_draws_against_steps_epochs_or_seconds(tiny_config, tmp_path, axes, columns):
    pytest.importorskip("matplotlib")
    cfg = tiny(tiny_config, **WATCHED)
    train(cfg, progress_bar=False)
    args = ["plot", cfg.out, "-o", str(tmp_path / "c.png"), "--dpi", "20"]
    result = CliRunner().invoke(main, [*args, *(a for x in axes for a in ("--x-axis", x))])
    assert result.exit_code == 0, result.output
    assert _png_size(tmp_path / "c.png") == (6 * 20 * columns, 8 * 20)
    bad = CliRunner().invoke(main, [*args, "--x-axis", "tokens"])
    assert bad.exit_code == 2 and "tokens" in bad.output


@pytest.mark.parametrize("fixture", ["charlm-0.1", "format1-layout2"])
def test_old_run_folders_plot_and_report(fixture, tmp_path) -> None:
    """Epoch rows only, without a kind: they plot and report as before."""
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / fixture / "run", run)
    plotted = CliRunner().invoke(main, ["plot", str(run), "-o", str(tmp_path / "c.png")])
    assert plotted.exit_code == 0, plotted.output
    info = CliRunner().invoke(main, ["info", str(run)])
    assert info.exit_code == 0, info.output
    rows = len((run / METRICS).read_text().splitlines())
    assert f"metrics        {rows} epoch rows, 0 evaluations, 0 training rows; last " in info.output
