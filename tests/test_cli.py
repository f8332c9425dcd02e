"""The command line, end to end: train, generate, eval, and one-line errors for bad input."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm.cli import main
from tests.conftest import run_cli

TINY = [
    "--hidden-size",
    "24",
    "--embedding-dim",
    "8",
    "--seq-len",
    "16",
    "--batch-size",
    "8",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--quiet",
]


def invoke(*args):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def run(corpus, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", str(corpus), "--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    return out


def test_train_generate_eval(run, corpus):
    assert (run / "checkpoint.pt").exists()
    gen = invoke(
        "generate", "--checkpoint", str(run), "--prefix", "First", "--length", "40", "--seed", "1"
    )
    assert gen.exit_code == 0 and gen.output.startswith("First")
    assert len(gen.output.rstrip("\n")) >= 40
    ev = invoke("eval", "perplexity", str(corpus), "--checkpoint", str(run), "--json")
    assert ev.exit_code == 0, ev.output
    data = json.loads(ev.output)
    assert set(data) >= {"perplexity", "bits_per_char", "nll", "chars"}
    assert data["chars"] == len(corpus.read_text()) - 1
    ev4 = invoke("eval", "perplexity", str(corpus), "--checkpoint", str(run), "--streams", "4",
                 "--json")  # fmt: skip
    assert ev4.exit_code == 0, ev4.output
    fast = json.loads(ev4.output)
    assert fast["chars"] == len(corpus.read_text()) - 4  # each piece's first character
    assert fast["nll"] == pytest.approx(data["nll"], rel=0.05) and fast["nll"] != data["nll"]
    one_line_error(
        invoke("eval", "perplexity", str(corpus), "--checkpoint", str(run), "--streams", "0"),
        "--streams",
    )


def test_generate_num_samples_separated_by_blank_lines(run):
    gen = invoke(
        "generate",
        "--checkpoint",
        str(run / "checkpoint.pt"),
        "--prefix",
        "All:",
        "--length",
        "30",
        "--num-samples",
        "3",
        "--seed",
        "2",
    )
    assert gen.exit_code == 0
    assert gen.output.count("All:") >= 3


def test_python_m_charlm_and_help_have_examples():
    proc = run_cli("train", "--help")
    assert proc.returncode == 0 and "Examples" in proc.stdout and "--seq-len" in proc.stdout
    for cmd in (["generate", "--help"], ["eval", "perplexity", "--help"]):
        assert "Example" in invoke(*cmd).output
    assert invoke("--version").output.startswith("charlm")


def test_train_refuses_to_overwrite_a_run(run, corpus):
    before = (run / "checkpoint.pt").read_bytes()
    again = invoke("train", str(corpus), "--out", str(run), *TINY)
    assert again.exit_code == 1 and "--resume" in again.output
    assert (run / "checkpoint.pt").read_bytes() == before
    assert invoke("train", str(corpus), "--out", str(run), "--overwrite", *TINY).exit_code == 0


def one_line_error(result, *fragments):
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"", ["empty"]),
        (b"abc\xffdef", ["byte offset 3", "--encoding"]),
        (b"\x7fELF\x00\x00\x01binary", ["binary"]),
        (b"short text", ["at least", "characters"]),
    ],
)
def test_bad_corpus_files(tmp_path, content, fragments):
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    one_line_error(invoke("train", str(path), "--out", str(tmp_path / "o"), *TINY), *fragments)


def test_missing_corpus_and_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("runs/charlm").mkdir(parents=True)
    Path("runs/charlm/checkpoint.pt").write_bytes(b"")  # an older run: the corpus is checked first
    one_line_error(invoke("train", str(tmp_path / "nope.txt"), *TINY), "no such file")
    # a folder is read as a corpus; this one holds only the run's own folder, never read
    one_line_error(invoke("train", str(tmp_path), *TINY), "no text to read", "1 run folder")
    one_line_error(invoke("train", "nope.txt", "--out", "new", *TINY), "no such file")
    assert not Path("new").exists()  # nothing created for a run that cannot start


def test_lenient_decoding_option(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"abc\xffdef " * 200)
    result = invoke("train", str(path), "--out", str(tmp_path / "o"), "--errors", "replace", *TINY)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--hidden-size", "-1", "--hidden-size must be >= 0"),
        ("--num-layers", "-1", "--num-layers"),
        ("--seq-len", "-1", "--seq-len must be >= 0"),
        ("--batch-size", "-4", "--batch-size"),
        ("--lr", "-1", "--lr must be >= 0"),
        ("--lr", "-0.1", "--lr"),
        ("--epochs", "-1", "--epochs"),
        ("--embedding-dim", "-1", "--embedding-dim"),
        ("--dropout", "1.5", "--dropout"),
        ("--val-fraction", "1", "--val-fraction must be in [0, 1)"),
        ("--val-fraction", "-0.1", "--val-fraction"),
        ("--clip", "-1", "--clip"),
    ],
)
def test_bad_hyperparameters(corpus, tmp_path, flag, value, fragment):
    out = tmp_path / "o"
    one_line_error(invoke("train", str(corpus), "--out", str(out), *TINY, flag, value), fragment)
    assert not out.exists()  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(corpus):
    one_line_error(invoke("train", str(corpus), *TINY, "--device", "cuda"), "CUDA")


def test_unwritable_out_is_reported_before_training(corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    one_line_error(invoke("train", str(corpus), "--out", str(blocker / "run"), *TINY), "--out")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--temperature", "0"], "--temperature"),
        (["--temperature", "-1"], "--temperature"),
        (["--top-k", "0"], "--top-k"),
        (["--length", "-5"], "--length"),
        (["--prefix", "Zebra\u2603"], "'\u2603'"),
    ],
)
def test_bad_generate_settings(run, args, fragment):
    one_line_error(invoke("generate", "--checkpoint", str(run), *args), fragment)


def test_eval_unknown_characters_listed_or_skipped(run, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("First Citizen: \u2603 speak \u00e9")
    one_line_error(
        invoke("eval", "perplexity", str(text), "--checkpoint", str(run)),
        "'\u2603'",
        "'\u00e9'",
        "add --skip-unknown",
    )
    ok = invoke(
        "eval", "perplexity", str(text), "--checkpoint", str(run), "--skip-unknown", "--json"
    )
    assert ok.exit_code == 0 and json.loads(ok.output)["skipped"] == 2


def test_missing_checkpoint(tmp_path):
    one_line_error(invoke("generate", "--checkpoint", str(tmp_path / "none")), "no such")
    one_line_error(invoke("generate", "--checkpoint", str(tmp_path)), "no checkpoint")


@pytest.mark.parametrize(
    "flags",
    [
        ["--seed", "-1"],
        ["--seed", str(2**70)],
        ["--weight-decay", "nan"],
        ["--clip", "nan"],
        ["--time-budget", "nan"],
        ["--time-budget", "inf"],
        ["--lr", "inf"],
        ["--dropout", "nan"],
        ["--lr-gamma", "-2"],
        ["--lr-gamma", "0"],
    ],
)
def test_numbers_outside_their_meaning_are_one_line_and_create_nothing(tmp_path, flags):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--out", str(out), *flags])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {flags[0]} ") and result.output.count("\n") == 1
    assert not out.exists()


def test_an_error_quoting_a_newline_stays_one_line(tmp_path):
    result = invoke("train", str(tmp_path / "no\nsuch.txt"), "--out", str(tmp_path / "o"))
    one_line_error(result, "no\\nsuch.txt")
