"""Evaluation as a library object: the settings refuse what cannot run where they are made, and
the report of `evaluate_inputs` / `evaluate_text` is what `charlm eval perplexity` prints,
dumps and draws."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.config import READING, TrainConfig
from charlm.errors import CharLMError, command_line
from charlm.evaluate import Score, score, score_text, surprisal
from charlm.inputs import Reading
from charlm.model import CharLM, ModelConfig
from charlm.report import Report, evaluate_inputs, evaluate_text
from charlm.scoring import DEFAULT_LR, RMS_DECAY, RMS_LR, Dynamic, Scoring
from charlm.vocab import Vocab
from tests.conftest import ROOT, char_nll

FIXTURE = ROOT / "tests" / "fixtures" / "charlm-0.1"
CKPT = str(FIXTURE / "run" / "checkpoint.pt")


@pytest.mark.parametrize(
    ("settings", "message", "python"),
    [
        ({"seq_len": 0}, "--seq-len must be > 0, got 0", "seq_len must be > 0, got 0"),
        ({"streams": -1}, "--streams must be > 0, got -1", "streams must be > 0, got -1"),
        ({"html_max_chars": 1}, "--html-max-chars must be >= 2, got 1",
         "html_max_chars must be >= 2, got 1"),
        ({"seq_len": 2.5}, "--seq-len must be a whole number, got 2.5",
         "seq_len must be a whole number, got 2.5"),
        ({"streams": True}, "--streams must be a whole number, got True",
         "streams must be a whole number, got True"),
        ({"dynamic_lr": 0.1}, "only apply with --dynamic", "only apply with dynamic=True"),
        ({"dynamic_decay": 0.0}, "only apply with --dynamic", "only apply with dynamic=True"),
        ({"dynamic_rms": "train.txt"}, "only apply with --dynamic", "only apply with dynamic=True"),
        ({"dynamic": True, "streams": 4}, "cannot score it as --streams 4 pieces",
         "cannot score it as streams=4 pieces"),
        ({"dynamic": True, "dynamic_lr": -1.0}, "--dynamic-lr must be > 0, got -1.0",
         "dynamic_lr must be > 0, got -1.0"),
        ({"dynamic": True, "dynamic_lr": math.inf}, "--dynamic-lr must be > 0, got inf",
         "dynamic_lr must be > 0, got inf"),
        ({"dynamic": True, "dynamic_decay": 1.0}, "--dynamic-decay must be in [0, 1), got 1.0",
         "dynamic_decay must be in [0, 1), got 1.0"),
        ({"dynamic": True, "dynamic_rms": "x", "dynamic_decay": -0.5}, "--dynamic-decay must be",
         "dynamic_decay must be"),
    ],
)  # fmt: skip
def test_scoring_refuses_what_cannot_run_naming_the_flag(settings, message, python) -> None:
    with pytest.raises(CharLMError) as caught:  # a Python caller: the parameter
        Scoring(**settings)
    assert python in str(caught.value) and "--" not in str(caught.value)
    with command_line(), pytest.raises(CharLMError) as caught:
        Scoring(**settings)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_update_and_its_defaults_are_chosen_by_the_settings() -> None:
    assert Scoring().adapt is None
    assert Scoring(dynamic=True).adapt == Dynamic(lr=DEFAULT_LR, decay=0.0)
    assert Scoring(dynamic=True, dynamic_rms="t.txt").adapt == Dynamic(lr=RMS_LR, decay=RMS_DECAY)
    given = Scoring(dynamic=True, dynamic_rms="t.txt", dynamic_lr=0.02, dynamic_decay=0.1)
    assert given.adapt == Dynamic(lr=0.02, decay=0.1)
    assert Scoring(dynamic=True, dynamic_lr=0.5).adapt == Dynamic(lr=0.5, decay=0.0)


def test_the_settings_are_made_and_checked_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from charlm.scoring import Dynamic, Scoring\n"
        "from charlm.inputs import Reading\n"
        "from charlm.errors import CharLMError\n"
        "assert Scoring(dynamic=True, dynamic_rms='t.txt').adapt.lr > 0\n"
        "assert Reading().hidden is False\n"
        "try:\n    Scoring(dynamic=True, streams=2)\nexcept CharLMError as e:\n    print(e)\n"
        "from charlm.errors import command_line\n"
        "with command_line():\n"
        "    try:\n        Scoring(dynamic=True, streams=2)\n"
        "    except CharLMError as e:\n        print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    python, command = proc.stdout.splitlines()
    assert "streams=2" in python and "--streams 2" in command


def test_reading_is_trainconfigs_declaration_and_eval_takes_the_same_flags() -> None:
    train_default = TrainConfig()
    assert tuple(f.name for f in fields(Reading)) == READING
    assert {n: getattr(Reading(), n) for n in READING} == {
        n: getattr(train_default, n) for n in READING
    }
    train_opts = {p.name: p for p in main.commands["train"].params}
    eval_opts = {p.name: p for p in main.commands["eval"].commands["perplexity"].params}
    for name in READING:
        a, b = train_opts[name], eval_opts[name]
        assert (a.opts, a.secondary_opts, a.help, a.default, a.multiple) == (
            b.opts, b.secondary_opts, b.help, b.default, b.multiple,
        )  # fmt: skip
        assert getattr(a.type, "choices", None) == getattr(b.type, "choices", None)
    assert eval_opts["errors"].type.choices == ("strict", "replace", "surrogateescape")


def _cli(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(main, ["eval", "perplexity", *args, "--checkpoint", CKPT])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def model_and_vocab() -> tuple[CharLM, Vocab]:
    model, vocab, _ = load_model(CKPT, "cpu")
    return model, vocab


RMS_TEXT = str(FIXTURE / "corpus.txt")


@pytest.mark.parametrize(
    ("flags", "settings"),
    [
        ([], {}),
        (["--streams", "3"], {"streams": 3}),
        (["--dynamic", "--dynamic-lr", "0.05"], {"dynamic": True, "dynamic_lr": 0.05}),
        (
            ["--dynamic", "--dynamic-rms", RMS_TEXT, "--dynamic-decay", "0.1"],
            {"dynamic": True, "dynamic_rms": RMS_TEXT, "dynamic_decay": 0.1},
        ),
    ],
)
def test_the_report_is_what_the_command_prints_dumps_and_draws(
    model_and_vocab, tmp_path: Path, flags: list[str], settings: dict
) -> None:
    model, vocab = model_and_vocab
    text = (FIXTURE / "corpus.txt").read_text(encoding="utf-8")[:1500] + "\u2603 end"
    file = tmp_path / "t.txt"
    file.write_text(text, encoding="utf-8")
    page = tmp_path / "page.html"
    common = [str(file), "--seq-len", "40", "--skip-unknown", *flags]
    printed, _ = _cli(*common)
    dumped, said = _cli(*common, "--json", "--html", str(page), "--html-max-chars", "900")

    scoring = Scoring(seq_len=40, skip_unknown=True, html_max_chars=900, **settings)
    heard: list[str] = []
    report = evaluate_inputs(model, vocab, [str(file)], scoring, say=heard.append)
    assert report.text() + "\n" == printed
    assert json.dumps(report.as_dict()) + "\n" == dumped
    assert report.html() == page.read_text(encoding="utf-8")
    assert [line for line in said.splitlines() if not line.startswith("wrote")] == heard
    # the numbers are score()'s, on the text with the unknown character left out
    ids = vocab.encode(text, skip_unknown=True)
    expected = score(model, ids, 40, scoring.streams, dynamic=report.dynamic)
    assert (report.score.nll, report.score.chars) == (expected.nll, expected.chars)
    assert report.score.skipped == 1 and report.unit == "char" and report.length == len(text)
    assert report.per_char is not None and report.per_char.text == text[:900]
    assert (report.dynamic is None) == ("--dynamic" not in flags)


def test_a_string_is_scored_per_character_through_the_same_report(model_and_vocab) -> None:
    """The server's case: the mean of the per-character surprisals is the score, each
    character's value is the NLL of a plain loop over the windows (conftest's char_nll)."""
    model, vocab = model_and_vocab
    text = "First Citizen:\nSpeak, speak.\n\nAll:\nBefore we proceed any further, hear me."
    report = evaluate_text(model, vocab, text, Scoring(seq_len=11, html_max_chars=len(text)))
    assert report.score == score_text(model, vocab, text, seq_len=11)
    chars = report.per_char
    assert chars is not None and chars.text == text and report.source == "text"
    nll = char_nll(model, vocab.encode(text), seq_len=11).double().numpy()
    np.testing.assert_allclose(chars.bits[1:], nll / math.log(2), atol=1e-6)
    assert chars.bits_per_char == pytest.approx(report.score.bits_per_char, abs=1e-6)
    data = chars.as_dict()
    assert data["bits"][0] is None and data["top"][0] is None
    assert all(len(top[0]) == 5 and len(top[1]) == 5 for top in data["top"][1:])
    assert data == surprisal(model, vocab, text, seq_len=11).as_dict()
    assert "<pre" in report.html() and report.as_dict()["chars"] == len(text) - 1
    dynamic = evaluate_text(model, vocab, text, Scoring(seq_len=11, dynamic=True))
    assert dynamic.per_char is None and dynamic.as_dict()["dynamic"] == {"lr": DEFAULT_LR,
                                                                        "decay": 0.0}  # fmt: skip
    with pytest.raises(CharLMError, match="html_max_chars"):
        dynamic.html()
    with pytest.raises(CharLMError, match="'\u2603'"):
        evaluate_text(model, vocab, text + "\u2603")


def test_json_says_null_for_what_is_not_a_finite_number() -> None:
    report = Report(Score(nll=1e6, chars=3), "char", None, "", "t", "", 4, None)
    assert math.isinf(report.score.perplexity)
    assert report.as_dict() == {"perplexity": None, "bits_per_char": 1e6 / math.log(2),
                                "nll": 1e6, "chars": 3, "skipped": 0, "unit": "char"}  # fmt: skip
    assert json.loads(json.dumps(report.as_dict()))["perplexity"] is None


def test_a_byte_level_model_reports_bytes_and_draws_no_page() -> None:
    vocab = Vocab.of_bytes()
    model = CharLM(ModelConfig(vocab_size=256, hidden_size=8, embedding_dim=4)).eval()
    text = "caf\u00e9 na\u00efve \u2603"  # 12 characters, 16 bytes
    report = evaluate_text(model, vocab, text, Scoring(seq_len=5))
    assert report.unit == "byte" and report.score.chars == len(text.encode()) - 1
    assert report.score.skipped == 0  # every byte is known: none left out
    assert "bytes scored   15" in report.text() and "bits per byte " in report.text()
    with pytest.raises(CharLMError, match=r"^html_max_chars shows characters"):
        evaluate_text(model, vocab, text, Scoring(html_max_chars=100))
    with command_line(), pytest.raises(CharLMError, match="--html shows characters"):
        evaluate_text(model, vocab, text, Scoring(html_max_chars=100))
