"""Runs written by charlm 0.1 (tests/fixtures/charlm-0.1): still usable, and never half-resumed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli

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
