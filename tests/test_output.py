"""Standard output that goes away: a closed pipe ends quietly, a full disk in one line, and
training, which only reports progress, trains on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, epoch_rows

FIXTURE = Path(__file__).parent / "fixtures" / "charlm-0.1"
CKPT = str(FIXTURE / "run" / "checkpoint.pt")


def charlm(*args: str, stdout) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "charlm", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


COMMANDS = {
    "generate": ["generate", "--checkpoint", CKPT, "--length", "20000", "--num-samples", "2"],
    "stream": ["generate", "--checkpoint", CKPT, "--length", "20000", "--stream"],
    "eval": ["eval", "perplexity", str(FIXTURE / "corpus.txt"), "--checkpoint", CKPT],
    "version": ["--version"],
    "info": ["info", str(FIXTURE / "run")],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_full_disk_is_one_line(name):
    with open("/dev/full", "w") as full:
        proc = charlm(*COMMANDS[name], stdout=full)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err == "error: cannot write the output: No space left on device\n"


@pytest.mark.parametrize("name", ["generate", "stream"])
def test_a_closed_pipe_ends_quietly(name):
    proc = charlm(*COMMANDS[name], stdout=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone, as with `| true`
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141
    assert err == ""


def test_training_outlives_its_output(corpus, tmp_path):
    out = tmp_path / "run"
    args = ["train", str(corpus), "--out", str(out), "--hidden-size", "16", "--seq-len", "16"]
    args += ["--batch-size", "4", "--epochs", "3", "--sample-every", "1", "--device", "cpu"]
    proc = charlm(*args, stdout=subprocess.PIPE)
    proc.stdout.close()  # nobody reads the progress
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err
    rows = epoch_rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
