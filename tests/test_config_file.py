"""`charlm train --config FILE`: settings from JSON or TOML; defaults < file < flags."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm.cli import main
from charlm.config import TrainConfig, read_settings
from charlm.errors import CharLMError
from tests.conftest import epoch_rows

TINY = {"hidden_size": 24, "embedding_dim": 8, "seq_len": 16, "batch_size": 8, "device": "cpu"}


def train_cli(*args: str):
    return CliRunner().invoke(main, ["train", "--quiet", *args])


def effective(out: Path) -> dict:
    return json.loads((out / "config.json").read_text())


def test_defaults_then_file_then_flags(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = {**TINY, "corpus": str(corpus), "out": str(out), "lr": 0.01, "max-steps": 3}
    config = tmp_path / "run.json"
    config.write_text(json.dumps(settings))
    result = train_cli("--config", str(config), "--lr", "0.02", "--seq-len", "12")
    assert result.exit_code == 0, result.output
    cfg = effective(out)
    assert cfg["lr"] == 0.02 and cfg["seq_len"] == 12  # flags beat the file
    assert cfg["hidden_size"] == 24 and cfg["max_steps"] == 3  # the file beats the defaults
    assert cfg["corpus"] == str(corpus)
    assert cfg["clip"] == TrainConfig().clip and cfg["model"] == TrainConfig().model  # defaults


def test_positional_corpus_beats_the_file(corpus: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.json"
    out = tmp_path / "run"
    config.write_text(json.dumps({**TINY, "corpus": "nowhere.txt", "out": str(out), "epochs": 1}))
    result = train_cli(str(corpus), "--config", str(config))
    assert result.exit_code == 0, result.output
    assert effective(out)["corpus"] == str(corpus)


def test_toml_with_dashes_and_underscores(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('hidden-size = 48\nlr_schedule = "step"\nlr = 1\namp = true\n')
    assert read_settings(config) == {
        "hidden_size": 48,
        "lr_schedule": "step",
        "lr": 1.0,
        "amp": "on",  # a config from before --amp auto: true still means on
    }
    assert isinstance(read_settings(config)["lr"], float)


def test_the_library_reads_config_files_as_the_cli_does(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("hidden-size = 48\nlr = 1\n")
    cfg = TrainConfig.from_file(config, lr=0.5)
    assert (cfg.hidden_size, cfg.lr, cfg.seq_len) == (48, 0.5, TrainConfig().seq_len)


def test_a_runs_own_config_json_repeats_the_run(corpus: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    config = tmp_path / "first.json"
    config.write_text(json.dumps({**TINY, "corpus": str(corpus), "out": str(first), "epochs": 1}))
    assert train_cli("--config", str(config)).exit_code == 0
    second = tmp_path / "second"
    result = train_cli("--config", str(first / "config.json"), "--out", str(second))
    assert result.exit_code == 0, result.output
    assert {**effective(first), "out": str(second)} == effective(second)


def test_resume_takes_out_from_the_file(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tmp_path / "run.json"
    config.write_text(json.dumps({**TINY, "corpus": str(corpus), "out": str(out), "epochs": 1}))
    assert train_cli("--config", str(config)).exit_code == 0
    result = train_cli("--config", str(config), "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    rows = epoch_rows(out)
    assert [r["epoch"] for r in rows] == [1, 2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "run.json",
            '{"hidden_size": 8, "hiden-size": 8, "colour": "red"}',
            "unknown setting(s): hiden-size, colour",
        ),
        ("run.json", '{"hidden_size": "big"}', "hidden_size must be int, got 'big'"),
        ("run.json", '{"epochs": true}', "epochs must be int, got True"),
        ("run.json", '{"amp": 1}', "amp must be str, got 1"),
        ("run.json", '{"lr": 0.1,}', "is not valid JSON"),
        ("run.json", "[1, 2]", "must hold one object of settings"),
        ("run.toml", "lr = ", "is not valid TOML"),
        ("run.yaml", "lr: 1", "must end in .json or .toml"),
    ],
)
def test_bad_files_are_one_line_errors(
    tmp_path: Path, corpus: Path, name: str, content: str, message: str
) -> None:
    config = tmp_path / name
    config.write_text(content)
    result = train_cli(str(corpus), "--config", str(config), "--out", str(tmp_path / "r"))
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert not (tmp_path / "r").exists(), "nothing may be trained or written on a bad file"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CharLMError, match="no such config file"):
        read_settings(tmp_path / "absent.json")


def test_toml_without_tomllib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.10 has no tomllib: the message says so and offers JSON."""
    monkeypatch.setitem(sys.modules, "tomllib", None)  # makes `import tomllib` fail
    config = tmp_path / "run.toml"
    config.write_text("lr = 1\n")
    with pytest.raises(CharLMError, match=r"need Python 3.11 or newer; use a .json file"):
        read_settings(config)
