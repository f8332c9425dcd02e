"""`charlm plot`: learning curves from metrics.jsonl, and its errors."""

from __future__ import annotations

import builtins
import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm.cli import main
from charlm.errors import CharLMError
from charlm.plot import plot_runs, read_metrics, run_labels
from charlm.train import train


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _fake_run(folder: Path, rows: int, val: bool = True) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for i in range(rows):
        loss = 3.0 / (i + 1)
        lines.append(
            json.dumps(
                {
                    "epoch": i + 1,
                    "step": 10 * (i + 1),
                    "train_loss": loss,
                    "val_loss": loss * 1.1 if val else None,
                    "elapsed_s": 2.5 * (i + 1),
                }
            )
        )
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_plot_of_a_real_run(tiny_config, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    train(tiny_config, progress_bar=False)
    out = tmp_path / "curves.png"
    result = CliRunner().invoke(main, ["plot", tiny_config.out, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    width, height = _png_size(out)
    assert (width, height) == (12 * 120, 8 * 120)
    assert out.stat().st_size > 20_000  # four panels with curves, not an empty canvas


def test_several_runs_on_one_figure(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    a = _fake_run(tmp_path / "a" / "charlm", 4)
    b = _fake_run(tmp_path / "b" / "charlm", 1, val=False)  # one point, no validation
    c = _fake_run(tmp_path / "c", 3)
    out = plot_runs([a, b, c], tmp_path / "cmp.png", dpi=50)
    assert _png_size(out) == (600, 400)


def test_labels_are_folder_names_made_unique() -> None:
    assert run_labels(["runs/lstm", "runs/rnn"]) == ["lstm", "rnn"]
    assert run_labels(["x/a/charlm", "x/b/charlm"]) == ["a/charlm", "b/charlm"]


def test_missing_and_empty_metrics_are_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["plot", str(tmp_path / "nope"), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert result.output.startswith("error: no metrics.jsonl in")
    assert "Traceback" not in result.output
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("\n")
    result = runner.invoke(main, ["plot", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "has no rows yet" in result.output
    assert not (tmp_path / "x.png").exists()


def test_a_malformed_row_names_its_line(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "r", 2)
    with open(run / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(CharLMError, match="line 3"):
        read_metrics(run)


def test_without_matplotlib_the_error_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    run = _fake_run(tmp_path / "r", 2)
    result = CliRunner().invoke(main, ["plot", str(run), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert result.output == (
        "error: plotting needs matplotlib, which is not installed: pip install matplotlib "
        '(in a clone of charlm: pip install -e ".[plot]")\n'
    )


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = _fake_run(tmp_path / "r", 2)
    with pytest.raises(CharLMError, match="cannot write"):
        plot_runs([run], tmp_path / "no" / "such" / "dir.png")
