"""Hostile inputs a red team found, as classes: each ends in one `error:` line or correct
output, never a traceback, a NaN score or a silent wrong run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm import checkpoint
from charlm.cli import main
from charlm.errors import command_line
from charlm.train import train
from tests.conftest import one_line_error, tiny


@pytest.fixture
def trained(tiny_config) -> Path:
    train(tiny(tiny_config, max_steps=3), progress_bar=False)
    return Path(tiny_config.out)


def craft(run: Path, change) -> None:
    """Change the run's checkpoints (checkpoint.pt, and best.pt, which generate and eval read)."""
    for path in (run / "checkpoint.pt", run / "best.pt"):
        if path.exists():
            ckpt = torch.load(path, weights_only=True)
            change(ckpt)
            torch.save(ckpt, path)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(optimizer={"state": {}, "param_groups": []}),
        lambda c: c.update(optimizer="x"),
        lambda c: c.update(rng={}),
        lambda c: c["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)),
        lambda c: c["progress"].update(step="x"),
        lambda c: c["progress"].update(step=-5),
        lambda c: c.update(progress={"colour": 1}),
        lambda c: c.update(scheduler=None),
        lambda c: c.update(vocab=None),
    ],
)
def test_a_damaged_resume_payload_is_one_line(trained, tiny_config, change):
    craft(trained, change)
    args = ["train", tiny_config.corpus, "--out", str(trained), "--resume", "--quiet"]
    one_line_error(CliRunner().invoke(main, args), "cannot resume")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda c: c["model"]["W_hq"].fill_(float("nan")), "NaN or infinite"),
        (lambda c: c["model"].update(W_hq=c["model"]["W_hq"].to_sparse()), "dense"),
    ],
)
def test_unusable_weights_are_refused_by_generate_eval_and_info(trained, corpus, change, fragment):
    craft(trained, change)
    for args in (["generate", "--checkpoint", str(trained)],
                 ["eval", "perplexity", str(corpus), "--checkpoint", str(trained)],
                 ["info", str(trained / "checkpoint.pt")]):  # fmt: skip
        one_line_error(CliRunner().invoke(main, args), fragment)


def test_a_diverging_dynamic_evaluation_is_not_a_nan_score(trained, corpus):
    args = ["eval", "perplexity", str(corpus), "--checkpoint", str(trained), "--json",
            "--dynamic", "--dynamic-lr", "1e30"]  # fmt: skip
    one_line_error(CliRunner().invoke(main, args), "not a finite number", "--dynamic-lr")


def test_info_refuses_damaged_settings(trained):
    craft(trained, lambda c: c.update(config={"hidden_size": "x"}))
    one_line_error(CliRunner().invoke(main, ["info", str(trained)]), "damaged")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"a":' * 50_000, "not a config file"),
        ('{"hidden_size": ' + "9" * 5000 + "}", "not a config file"),
        ('{"hidden_size": 16, "hidden-size": 99999999}', "given twice"),
        ('{"out": ""}', "--out must name a folder"),
        ('{"corpus": []}', "no corpus"),
        ('{"lr": 1e308}', "up to 1e30"),
        ('{"num_layers": 100000}', "at most 1024"),
    ],
)
def test_hostile_config_files(tmp_path, corpus, text, fragment):
    config = tmp_path / "run.json"
    config.write_text(text)
    args = ["train", "--config", str(config), "--quiet"]
    if '"out"' not in text:
        args += ["--out", str(tmp_path / "o")]
    if '"corpus"' not in text:
        args.insert(1, str(corpus))
    one_line_error(CliRunner().invoke(main, args), fragment)
    assert not (tmp_path / "o").exists()


def test_a_config_folder_is_named_as_such(tmp_path):
    (tmp_path / "dir.json").mkdir()
    result = CliRunner().invoke(main, ["train", "--config", str(tmp_path / "dir.json")])
    one_line_error(result, "not a regular file")


def test_an_out_folder_in_a_symlink_loop(tmp_path, corpus):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    result = CliRunner().invoke(main, ["train", str(corpus), "--out", str(tmp_path / "a")])
    one_line_error(result, "cannot use --out")


def test_plot_skips_what_a_diverged_run_cannot_draw(trained, tmp_path):
    pytest.importorskip("matplotlib")
    metrics = trained / "metrics.jsonl"
    row = json.loads(metrics.read_text().splitlines()[-1])
    for n, bad in enumerate([1e308, float("inf"), float("nan")], start=2):
        row.update(epoch=n, train_loss=bad, val_loss=bad, elapsed_s=row["elapsed_s"] + n)
        with open(metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
    result = CliRunner().invoke(main, ["plot", str(trained), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_a_top_p_that_rounds_to_zero_keeps_the_likeliest(trained):
    gen = ["generate", "--checkpoint", str(trained), "--length", "20", "--prefix", "First"]
    greedy = CliRunner().invoke(main, [*gen, "--greedy"])
    tiny_p = CliRunner().invoke(main, [*gen, "--top-p", "1e-300", "--seed", "1"])
    assert tiny_p.exit_code == 0 and tiny_p.output == greedy.output


def test_interactive_seeds_past_the_top_wrap(trained):
    args = ["generate", "--checkpoint", str(trained), "--interactive", "--length", "5",
            "--seed", str(2**64 - 1)]  # fmt: skip
    result = CliRunner().invoke(main, args, input="First\nAll\n")
    assert result.exit_code == 0 and "error" not in result.output, result.output


def test_the_api_scores_with_the_cli_ranges(trained):
    from charlm import CharLMError, load_model, score_text

    model, vocab, _ = load_model(trained, "cpu")
    for seq_len in (0, -1):
        with pytest.raises(CharLMError, match=r"^seq_len must be > 0"):
            score_text(model, vocab, "First First", seq_len=seq_len)
        with command_line(), pytest.raises(CharLMError, match="--seq-len must be > 0"):
            score_text(model, vocab, "First First", seq_len=seq_len)
    assert checkpoint.load(trained / "checkpoint.pt")["progress"]["step"] == 3


def test_what_surrogateescape_reads_is_written_back(tmp_path):
    """Samples, generated text and the surprisal page of a corpus with undecodable bytes."""
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"hello world \xff\xfe caf\xc3\xa9 " * 200)
    out = tmp_path / "run"
    train_args = ["train", str(corpus), "--out", str(out), "--errors", "surrogateescape",
                  "--hidden-size", "8", "--seq-len", "8", "--batch-size", "4", "--max-steps", "3",
                  "--sample-length", "300", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(main, train_args)
    assert result.exit_code == 0, result.output
    assert b"=== epoch 1" in (out / "samples.txt").read_bytes()
    evaluate = ["eval", "perplexity", str(corpus), "--checkpoint", str(out), "--errors",
                "surrogateescape", "--html", str(tmp_path / "p.html")]  # fmt: skip
    result = CliRunner().invoke(main, evaluate)
    assert result.exit_code == 0, result.output
    assert b"\xff" in (tmp_path / "p.html").read_bytes()
