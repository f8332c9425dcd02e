"""Runs written by earlier charlm: charlm 0.1's (tests/fixtures/charlm-0.1) still usable and never
half-resumed; one from just before the restructuring (fixtures/format1-layout2) used as before."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import epoch_rows, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "charlm-0.1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "old")
    return tmp_path / "old"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the expected texts were made


def cli(*args: str):
    return run_cli(*args)


@pytest.mark.parametrize("key", [k for k in EXPECTED if k.startswith("generate")])
def test_generates_the_texts_charlm_0_1_generated(old_run, key):
    args = ["--prefix", "All:", "--length", "80", "--seed", "7"]
    if "--num-samples" in key:
        args += ["--num-samples", "3"]
    result = cli("generate", "--checkpoint", str(old_run / "run" / "checkpoint.pt"), *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED[key]


def test_scores_as_charlm_0_1_scored(old_run):
    ckpt = str(old_run / "run" / "checkpoint.pt")
    result = cli("eval", "perplexity", str(old_run / "corpus.txt"), "--checkpoint", ckpt, "--json")
    assert result.returncode == 0, result.stderr
    got, want = json.loads(result.stdout), EXPECTED["eval perplexity corpus.txt"]
    assert got["chars"] == want["chars"]
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-6)


def test_resume_is_refused_with_the_reason(old_run):
    before = (old_run / "run" / "checkpoint.pt").read_bytes()
    result = cli(
        "train", str(old_run / "corpus.txt"), "--out", str(old_run / "run"), "--resume", "--quiet"
    )
    assert result.returncode != 0
    assert result.stderr.startswith("error: cannot resume") and "charlm 0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert (old_run / "run" / "checkpoint.pt").read_bytes() == before


# --- a run written just before the restructuring (format 1, textbook samplers) ---------------

BEFORE = Path(__file__).parent / "fixtures" / "format1-layout2"
BEFORE_EXPECTED = json.loads((BEFORE / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def before_run(tmp_path: Path, monkeypatch) -> Path:
    """The fixture's run and corpus in tmp_path. The checkpoint records the corpus it read by
    absolute path (it was made in /tmp/fx): that one entry is pointed at the copy."""
    import torch

    shutil.copytree(BEFORE / "run", tmp_path / "run")
    corpus = tmp_path / "corpus.txt"
    shutil.copy(FIXTURE / "corpus.txt", corpus)
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    (_, size, mtime_ns), *_ = ckpt["inputs"]
    os.utime(corpus, ns=(mtime_ns, mtime_ns))
    ckpt["inputs"] = [[str(corpus), size, mtime_ns]]
    torch.save(ckpt, path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("samples", [1, 3])
def test_a_run_from_before_the_restructuring_generates_the_same_texts(before_run, samples):
    key = "generate --seed 7" + (" --num-samples 3" if samples == 3 else "")
    args = ["--prefix", "All:", "--length", "80", "--seed", "7", "--num-samples", str(samples)]
    result = cli("generate", "--checkpoint", "run/checkpoint.pt", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == BEFORE_EXPECTED[key]


def test_a_run_from_before_the_restructuring_scores_the_same(before_run):
    result = cli("eval", "perplexity", "corpus.txt", "--checkpoint", "run/checkpoint.pt", "--json")
    assert result.returncode == 0, result.stderr
    got, want = json.loads(result.stdout), BEFORE_EXPECTED["eval perplexity corpus.txt"]
    assert got["chars"] == want["chars"]
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-6)


def test_a_run_from_before_the_restructuring_resumes_as_it_would_have(before_run):
    result = cli("train", "corpus.txt", "--out", "run", "--resume", "--epochs", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    rows = epoch_rows(before_run / "run")
    want = BEFORE_EXPECTED["resume --epochs 2: row 2"]
    assert [r["step"] for r in rows] == [34, want["step"]]
    for key in ("train_loss", "val_loss", "grad_norm", "lr"):
        assert rows[1][key] == pytest.approx(want[key], rel=1e-6), key
    # it goes on in the batch order it began with (layout 2), and says so
    ckpt = __import__("torch").load(before_run / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["sampler_layout"] == 2
    assert json.loads((before_run / "run" / "config.json").read_text())["sampler_layout"] == 2
