"""--amp auto|on|off: what auto decides, how the choice is recorded, and old runs' true/false."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm import checkpoint, precision
from charlm.cli import main
from charlm.train import TrainConfig, Trainer, resume_config, train
from tests.conftest import tiny

CPU = torch.device("cpu")


def test_cpu_flags_are_read_from_cpuinfo() -> None:
    info = "processor : 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n\nprocessor : 1\n"
    assert precision.cpu_bf16_flags(info) == ["avx512_bf16"]
    assert precision.cpu_bf16_flags("flags : fpu sse avx2 avx512f\n") == []
    assert precision.cpu_bf16_flags("") == []


@pytest.mark.parametrize(
    ("flags", "expected"), [(["avx512_bf16"], True), (["amx_bf16"], True), ([], False)]
)
def test_auto_follows_the_hardware(monkeypatch, flags, expected) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: flags)
    on, why = precision.resolve_amp("auto", CPU)
    assert on is expected and why.startswith("--amp auto")


@pytest.mark.parametrize(("setting", "expected"), [("on", True), ("off", False), (True, True)])
def test_on_and_off_force_it(monkeypatch, setting, expected) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: [] if expected else ["amx_bf16"])
    assert precision.resolve_amp(setting, CPU)[0] is expected


def test_old_true_false_mean_on_off() -> None:
    assert TrainConfig(amp=True).amp == "on" and TrainConfig(amp=False).amp == "off"


def test_auto_is_resolved_and_recorded(tiny_config, tmp_path: Path) -> None:
    trainer = Trainer(tiny(tiny_config, amp="auto", max_steps=2), progress_bar=False)
    expected = precision.resolve_amp("auto", CPU)[0]
    assert trainer.amp is expected
    trainer.run()
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["amp"]
    assert recorded == ("on" if expected else "off")
    ckpt = checkpoint.load(tmp_path / "run" / checkpoint.LATEST)
    assert ckpt["config"]["amp"] == recorded


def test_a_checkpoint_with_amp_false_still_resumes(tiny_config, tmp_path: Path) -> None:
    train(tiny(tiny_config, max_steps=3), progress_bar=False)
    path = tmp_path / "run" / checkpoint.LATEST
    ckpt = checkpoint.load(path)
    ckpt["config"]["amp"] = False  # as written before --amp auto existed
    checkpoint.save(ckpt, path)
    cfg = resume_config(tmp_path / "run", {"max_steps": 6})
    assert cfg.amp == "off"
    result = train(cfg, resume=True, progress_bar=False)
    assert result.progress.step == 6


TINY_FLAGS = "--hidden-size 32 --embedding-dim 16 --seq-len 16 --batch-size 8 --max-steps 2"
TINY_FLAGS = [*TINY_FLAGS.split(), "--sample-every", "0", "--device", "cpu"]


@pytest.mark.parametrize(("flags", "expected"), [(["--amp"], "on"), (["--amp", "off"], "off")])
def test_bare_amp_still_means_on(corpus: Path, tmp_path: Path, flags, expected) -> None:
    out = tmp_path / "run"
    args = ["train", str(corpus), "--out", str(out), *TINY_FLAGS, *flags]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["amp"] == expected
    corpus_line, settings = result.output.splitlines()[:2]  # what it reads, then how
    assert corpus_line.startswith(f"corpus: {corpus}, ")
    assert ("bfloat16 autocast" if expected == "on" else "float32") in settings


def test_a_bad_amp_value_is_one_line(corpus: Path, tmp_path: Path) -> None:
    args = ["train", str(corpus), "--out", str(tmp_path / "r"), *TINY_FLAGS, "--amp", "fast"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "'fast' is not one of 'auto', 'on', 'off'" in result.output
