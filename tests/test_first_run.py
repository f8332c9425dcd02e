"""A first run that explains itself: the built-in corpus cleaned of drawing, the start naming
the corpus and its size, the end printing the next commands (which run as printed), and a run
on the built-in text of before the cleaning refused, not continued on another text."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm.builtin import BORDER, RULE, builtin_text, clean
from charlm.cli import main
from charlm.config import TrainConfig
from charlm.errors import CharLMError, command_line
from charlm.train import train

TABLE = """\
The meaning of the options:

   +-----------+----------------------+
   | Option    | Meaning              |
   |===========|======================|
   | "'|'"     | x | y: the or of x   |
   |           | and y.               |
   +-----------+----------------------+

Grammar
*******

   stmt ::= a_stmt
            | b_stmt
------
   1/0
   ~^~
   +-+---- 1 ----
"""

CLEANED = """\
The meaning of the options:

     Option      Meaning
     "'|'"       x | y: the or of x
                 and y.

Grammar

   stmt ::= a_stmt
            | b_stmt
   1/0
   ~^~
   +-+---- 1 ----
"""

DRAWING = set("+-=|*~")  # what a token made only of these draws


def words(text: str) -> list[str]:
    """The tokens of a text that are not pure drawing, in order."""
    return [w for w in text.split() if not set(w) <= DRAWING]


def test_the_cleaning_drops_borders_and_rules_and_keeps_every_word() -> None:
    assert clean(TABLE) == CLEANED
    assert clean(CLEANED) == CLEANED  # nothing left to clean


def test_the_builtin_corpus_is_the_help_topics_cleaned() -> None:
    from pydoc_data.topics import topics

    raw = "\n\n".join(topics[key] for key in sorted(topics))
    text = builtin_text()
    assert text == clean(raw) and len(text) < 0.97 * len(raw)  # a few % of it was drawing
    assert words(text) == words(raw)  # every word kept, in order
    assert not [line for line in text.split("\n") if BORDER.fullmatch(line)]
    assert not [line for line in text.split("\n") if RULE.fullmatch(line)]
    assert "+-----+" not in text and "|====" not in text
    assert "Forces the field to be left-aligned" in text  # a table's cells are kept


@pytest.fixture
def small_builtin(monkeypatch) -> str:
    """The built-in corpus cut to its first 30,000 characters: its runs and scores are quick."""
    from charlm import inputs

    text = builtin_text()[:30_000]
    monkeypatch.setattr(inputs, "builtin_text", lambda: text)
    return text


def first_run(tmp_path: Path, monkeypatch) -> list[str]:
    """`charlm train` on the built-in corpus, small, as a first run is typed: its output."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "--out", "runs/first", "--hidden-size", "16", "--embedding-dim", "8",
            "--seq-len", "32", "--batch-size", "8", "--max-steps", "4", "--sample-every", "0",
            "--device", "cpu", "--amp", "off", "--val-fraction", "0.01"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_the_start_names_the_corpus_and_the_end_what_to_run_next(
    tmp_path, monkeypatch, torch_one_thread
) -> None:
    builtin_run = first_run(tmp_path, monkeypatch)
    text = builtin_text()
    size = len(text.encode("utf-8")) / 1e6
    assert builtin_run[0] == (
        f"corpus: builtin (Python's pydoc help topics), {size:.1f} MB, {len(text):,} "
        f"characters, {len(set(text))} distinct"
    )
    done = builtin_run.index("done (max_steps); saved in runs/first")
    assert builtin_run[done + 1 :] == [
        "next:",
        "  charlm generate --checkpoint runs/first --length 300 --temperature 0.8",
        "  charlm eval perplexity builtin --checkpoint runs/first",
        "  charlm plot runs/first -o runs/first/curves.png",
    ]


def test_the_next_commands_run_as_printed(
    tmp_path, monkeypatch, small_builtin, torch_one_thread
) -> None:
    pytest.importorskip("matplotlib")  # the plot command's optional dependency
    builtin_run = first_run(tmp_path, monkeypatch)
    start = builtin_run.index("next:") + 1
    for line in builtin_run[start:]:
        command = shlex.split(line)
        assert command[0] == "charlm"
        if command[1] == "generate":
            command += ["--length", "20"]  # shortened: the test shows it runs
        result = CliRunner().invoke(main, command[1:])
        assert result.exit_code == 0, (line, result.output)
    assert Path("runs/first/curves.png").stat().st_size > 0


def test_the_end_names_a_split_corpus_test_part_and_the_reading_flags(monkeypatch) -> None:
    from charlm import catalog
    from charlm.cli import _scored_inputs

    split = type("Named", (), {"split": (8, 1, 1)})()
    monkeypatch.setattr(catalog, "lookup", lambda arg: (split, None) if arg == "toy" else None)
    assert _scored_inputs(TrainConfig(corpus="toy")) == "toy:test"
    cfg = TrainConfig(corpus=("my notes", "src"), include=("*.py", "*.md"), hidden=True,
                      separator=r"\n\n")  # fmt: skip
    assert shlex.split(_scored_inputs(cfg)) == [
        "my notes", "src", "--include", "*.py", "--include", "*.md", "--hidden",
        "--separator", r"\n\n",
    ]  # fmt: skip


def test_a_run_on_the_builtin_text_of_before_the_cleaning_is_refused(
    tmp_path: Path, small_builtin: str, torch_one_thread
) -> None:
    """Runs before this recorded no inputs for the built-in corpus: one is not continued on
    the cleaned text (nor on another Python's help topics); a run of today's text is."""
    cfg = TrainConfig(out=str(tmp_path / "run"), hidden_size=16, embedding_dim=8, seq_len=32,
                      batch_size=8, max_steps=2, sample_every=0, device="cpu",
                      amp="off")  # fmt: skip
    train(cfg, progress_bar=False)
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["inputs"][0][:2] == ["builtin", len(small_builtin.encode("utf-8"))]
    train(TrainConfig(**{**vars(cfg), "max_steps": 3}), resume=True, progress_bar=False)
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "inputs": []}, path)  # as a run of before the cleaning recorded it
    before = path.read_bytes()
    again = TrainConfig(**{**vars(cfg), "max_steps": 4})
    why = "the built-in corpus is not the text the run read"
    with pytest.raises(CharLMError, match=rf"cannot resume: .*{why}.* another out=\.\.\.\)$"):
        train(again, resume=True, progress_bar=False)
    with command_line(), pytest.raises(CharLMError, match=rf"{why}.* another --out\)$"):
        train(again, resume=True, progress_bar=False)
    assert path.read_bytes() == before  # refused before anything was written
