"""`charlm info`: what a run is, read from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.train import train
from tests.conftest import epoch_rows, tiny


@pytest.fixture
def run(tiny_config) -> Path:
    cfg = tiny(tiny_config, model="gru", epochs=2, val_fraction=0.2)
    train(cfg, progress_bar=False)
    return Path(cfg.out)


def test_json_facts_match_the_run(run: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(run), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    model, vocab, _ = load_model(run / "checkpoint.pt", "cpu")
    assert facts["model"] == "gru"
    assert facts["parameters"] == sum(p.numel() for p in model.parameters()) > 0
    assert facts["vocab_size"] == len(vocab)
    assert facts["checkpoint"] == str(run / "checkpoint.pt")
    assert facts["corpus"].endswith("corpus.txt")
    rows = epoch_rows(run)
    assert facts["epochs_done"] == facts["epochs_planned"] == len(rows) == 2
    assert facts["steps"] == rows[-1]["step"]
    assert facts["best_val_ppl"] == pytest.approx(min(r["val_ppl"] for r in rows))
    assert facts["best_val_bpc"] == pytest.approx(min(r["val_bpc"] for r in rows))
    assert facts["settings"]["hidden_size"] == 32
    assert facts["settings"]["val_fraction"] == 0.2


def test_text_report(run: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(run)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1] == "model          gru, 1 layer of 32 units, embedding 16"
    assert lines[4].startswith("corpus") and "corpus.txt" in lines[4]
    assert lines[5].startswith("trained        2 of 2 epochs, ")
    assert lines[6].startswith("best val       perplexity ")
    assert "  seq_len" in result.output and "settings" in lines


def test_a_checkpoint_file_works_too(run: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(run / "best.pt"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["checkpoint"] == str(run / "best.pt")


def test_missing_or_bad_run_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["info", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.output == f"error: no such run folder or checkpoint file: {tmp_path / 'nope'}\n"
    (tmp_path / "empty").mkdir()
    result = runner.invoke(main, ["info", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert result.output.startswith("error: no checkpoint in ") and "train first" in result.output
    assert "--checkpoint" not in result.output  # an option info does not have
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    result = runner.invoke(main, ["info", str(tmp_path / "junk.pt")])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "junk.pt" in result.output
    assert len(result.output.splitlines()) == 1
