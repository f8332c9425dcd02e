"""--tensorboard DIR: the rows as scalars, the samples as text and the settings as hparams,
read back with TensorBoard's own reader; without the package, one line saying how to get it."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from charlm.cli import main
from charlm.metrics import bits
from charlm.run import METRICS
from charlm.tensorboard import SCALARS
from charlm.train import train
from tests.conftest import one_line_error, tiny


@pytest.fixture
def logged(tiny_config, tmp_path) -> tuple[Path, Path]:
    """A run logged to TensorBoard: rows of every kind, samples in and at the end of epochs."""
    cfg = tiny(tiny_config, tensorboard=str(tmp_path / "tb"), log_every=5, eval_every=10,
               sample_every=1, sample_steps=15, sample_length=30, threads=1)  # fmt: skip
    train(cfg, progress_bar=False)
    events = EventAccumulator(cfg.tensorboard, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return Path(cfg.out), events


def test_every_row_is_a_scalar_at_its_step(logged) -> None:
    out, events = logged
    rows = [json.loads(line) for line in (out / METRICS).read_text().splitlines()]
    assert set(events.Tags()["scalars"]) == {t for tags in SCALARS.values() for t in tags.values()}
    for kind, tags in SCALARS.items():
        mine = [r for r in rows if r["kind"] == kind]
        assert mine
        for field, tag in tags.items():
            logged_values = [(e.step, e.value) for e in events.Scalars(tag)]
            want = [(r["step"], r[field] if field in r else bits(r["train_loss"])) for r in mine]
            assert [s for s, _ in logged_values] == [s for s, _ in want], tag
            for (_, got), (_, value) in zip(logged_values, want, strict=True):
                assert got == pytest.approx(value, rel=1e-6), tag  # stored as float32


def test_the_samples_are_text_and_the_settings_hparams(logged) -> None:
    out, events = logged
    texts = events.Tensors("samples/text_summary")
    samples = (out / "samples.txt").read_text().split("=== ")[1:]
    assert len(texts) == len(samples) == 6  # steps 15 and 30 into each epoch, and its end
    assert [t.step for t in texts] == [15, 30, 41, 56, 71, 82]
    for event, sample in zip(texts, samples, strict=True):
        heading, body = sample.split("\n", 1)
        shown = event.tensor_proto.string_val[0].decode()
        assert shown.startswith(heading + "\n\n") and body.strip().splitlines()[0] in shown
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    settings = json.loads((out / "config.json").read_text())
    assert hparams["hidden_size"].number_value == settings["hidden_size"] == 32
    assert hparams["sampler"].string_value == settings["sampler"]
    assert hparams["corpus"].string_value == settings["corpus"]


def test_without_the_package_the_error_says_how_to_install(tiny_config, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    logs = str(Path(tiny_config.out).parent / "tb")
    args = ["train", tiny_config.corpus, "--out", tiny_config.out, "--tensorboard", logs,
            "--max-steps", "1", "--device", "cpu"]  # fmt: skip
    one_line_error(CliRunner().invoke(main, args), "--tensorboard needs the tensorboard package",
                   'pip install -e ".[tensorboard]"')  # fmt: skip
    assert not Path(tiny_config.out).exists()
