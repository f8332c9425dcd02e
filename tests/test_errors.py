"""Errors name a setting the way their reader sets it: `--hidden-size` at the command line,
`hidden_size` to a Python caller (errors.flag, errors.command_line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import charlm
from charlm.cli import main
from charlm.errors import CharLMError, command_line, flag, on_command_line, option
from tests.conftest import TEXT, one_line_error


def test_flag_names_a_setting_for_its_reader() -> None:
    forms = [("hidden_size",), ("seq_len", 35), ("overwrite", True), ("out", ...),
             ("corpus", "a b.txt"), ("html", ..., "html_max_chars")]  # fmt: skip
    python = [flag(*f) for f in forms]
    with command_line():
        assert on_command_line()
        cli = [flag(*f) for f in forms]
    assert not on_command_line()
    assert python == ["hidden_size", "seq_len=35", "overwrite=True", "out=...",
                      "corpus='a b.txt'", "html_max_chars=..."]  # fmt: skip
    assert cli == ["--hidden-size", "--seq-len 35", "--overwrite", "--out", "--corpus a b.txt",
                   "--html"]  # fmt: skip
    assert option("max_steps") == "--max-steps"  # a command line to type, whoever reads it


def test_the_context_is_left_as_it_was_after_an_error() -> None:
    with pytest.raises(CharLMError), command_line():
        raise CharLMError(flag("lr"))
    assert flag("lr") == "lr"


def test_a_repeated_python_run_is_refused_in_python(
    tmp_path: Path, monkeypatch, torch_one_thread
) -> None:
    """Hours of training are not lost to a repeated call: refused, in the caller's words."""
    monkeypatch.chdir(tmp_path)
    Path("t.txt").write_text(TEXT, encoding="utf-8")
    cfg = charlm.TrainConfig(corpus="t.txt", out="runs/api", hidden_size=16, embedding_dim=8,
                             seq_len=16, batch_size=8, max_steps=1, sample_every=0,
                             device="cpu", amp="off")  # fmt: skip
    charlm.train(cfg, progress_bar=False)
    with pytest.raises(CharLMError) as e:
        charlm.train(cfg, progress_bar=False)
    assert str(e.value) == (
        "runs/api already holds a run: continue it with resume=True, start over with "
        "overwrite=True, or choose another out=..."
    )
    assert charlm.train(cfg, progress_bar=False, overwrite=True).progress.step == 1
    args = ["train", "t.txt", "--out", "runs/api", "--hidden-size", "16", "--max-steps", "1"]
    one_line_error(
        CliRunner().invoke(main, args),
        "runs/api already holds a run: continue it with --resume, start over with "
        "--overwrite, or choose another --out",
    )
    with pytest.raises(CharLMError, match=r"^hidden_size must be >= 0, got -1$"):
        charlm.train(charlm.TrainConfig(hidden_size=-1))
