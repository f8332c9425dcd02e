"""Requests that cannot fit in memory are refused before anything is allocated or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm import resources
from charlm.cli import main
from charlm.train import train
from tests.conftest import one_line_error, tiny


def test_a_model_too_large_for_memory_is_refused_before_the_folder_exists(corpus, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["train", str(corpus), "--out", str(out), "--hidden-size", "100000", "--quiet"]
    )
    one_line_error(result, "--hidden-size 100000", "GB of memory", "available")
    assert not out.exists()


def test_the_estimate_counts_the_optimizer_and_the_batch(corpus, tmp_path, monkeypatch):
    """A model that fits with SGD and small batches is refused with Adam and large ones."""
    limit = {"bytes": 0}
    monkeypatch.setattr(resources, "available_bytes", lambda device: limit["bytes"])
    args = ["train", str(corpus), "--hidden-size", "256", "--embedding-dim", "0", "--quiet",
            "--max-steps", "1", "--sample-every", "0", "--val-fraction", "0.1"]  # fmt: skip
    sgd = resources.training_bytes(4 * 256 * (256 + 33) + 2 * 4 * 256 + 256 * 33, "sgd", 16, 2, 0)
    limit["bytes"] = int(sgd * 3)
    small = [*args, "--optimizer", "sgd", "--lr", "1", "--seq-len", "16", "--batch-size", "2"]
    ok = CliRunner().invoke(main, [*small, "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    big = [*args, "--optimizer", "adam", "--seq-len", "64", "--batch-size", "64"]
    one_line_error(
        CliRunner().invoke(main, [*big, "--out", str(tmp_path / "b")]), "--batch-size 64"
    )


@pytest.fixture
def trained(tiny_config, tmp_path: Path) -> Path:
    train(tiny(tiny_config, max_steps=2), progress_bar=False)
    return Path(tiny_config.out)


def test_too_many_samples_at_once_are_refused(trained):
    result = CliRunner().invoke(
        main, ["generate", "--checkpoint", str(trained), "--num-samples", "100000000"]
    )
    one_line_error(result, "--num-samples 100000000", "of memory")


def test_too_wide_a_beam_is_refused(trained):
    result = CliRunner().invoke(
        main, ["generate", "--checkpoint", str(trained), "--beam-width", "100000000"]
    )
    one_line_error(result, "--beam-width 100000000 x --length 200", "of memory")


def test_one_sample_streams_in_bounded_memory_several_are_held(trained, monkeypatch):
    """With 1 MB free, one sample of 200,000 characters is written as it is made; two samples
    (held until the end: 6.4 MB) are refused, with the way out in the message."""
    monkeypatch.setattr(resources, "available_bytes", lambda device: 2**20)
    gen = ["generate", "--checkpoint", str(trained), "--length", "200000", "--seed", "1"]
    one = CliRunner().invoke(main, gen)
    assert one.exit_code == 0, one.output
    assert len(one.output) >= 200_000
    two = CliRunner().invoke(main, [*gen, "--num-samples", "2"])
    one_line_error(two, "--length 200000 x --num-samples 2", "--num-samples 1")


def test_available_memory_is_read_from_the_system() -> None:
    import torch

    free = resources.available_bytes(torch.device("cpu"))
    assert free is None or 0 < free < 2**50
