"""Shared fixtures: small synthetic corpora, a tiny fast training config, a CLI runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from charlm.evaluate import windows
from charlm.inputs import resolve as resolve_inputs
from charlm.model import CharLM
from charlm.train import Callback, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPORA = Path(os.environ.get("CHARLM_DATA", ROOT.parent / "shared" / "corpora"))
TINY_SHAKESPEARE = SHARED_CORPORA / "tinyshakespeare.txt"

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 40


class SignalAt(Callback):
    """Sends this process a real signal right after step `step` of a run."""

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        self.step, self.signum = step, signum

    def on_step(self, trainer) -> None:
        if trainer.p.step == self.step:
            signal.raise_signal(self.signum)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A ~7 KB English text file."""
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def tiny_config(corpus: Path, tmp_path: Path) -> TrainConfig:
    """A config that trains in about a second on the CPU."""
    return TrainConfig(
        corpus=str(corpus),
        out=str(tmp_path / "run"),
        hidden_size=32,
        embedding_dim=16,
        seq_len=16,
        batch_size=8,
        lr=1e-2,  # given: with a budget or without, the same (0 would let the budget choose)
        epochs=2,
        sample_every=0,
        log_every=5,
        device="cpu",
        amp="off",  # float32 everywhere: the tests mean the same on every CPU
    )


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """torch's thread count 1 for a test whose runs take torch's default (--threads 0): the
    machine that runs the tests is shared, and 2 spinning threads beside other work cost up
    to 10x (charlm/threads.py). Put back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def epoch_rows(out: str | os.PathLike[str]) -> list[dict]:
    """The epoch rows of a run's metrics.jsonl, read as plain JSON (a row without a `kind`, as
    charlm wrote them before the training and evaluation rows, is an epoch row)."""
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind", "epoch") == "epoch"]


def tiny(cfg: TrainConfig, **changes) -> TrainConfig:
    return replace(cfg, **changes)


def resolve(arg: str) -> str:
    """The file that the one input resolver reads for a single argument, as it names it."""
    (doc,) = resolve_inputs([arg]).documents
    return doc.name


@torch.no_grad()
def char_nll(
    model: CharLM,
    ids: np.ndarray,
    seq_len: int = 256,
    streams: int = 1,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """NLL (nats) of every character after the first of each stream, in text order: what
    `evaluate.nll_sum` adds up, one value per character, for the tests to look at."""
    pieces = list(windows(model, ids, seq_len, streams, rank, world_size))
    if not pieces:
        return torch.empty(0, device=model.W_hq.device)
    nll = torch.cat([p[1] for p in pieces])  # (L-1, S)
    valid = torch.cat([p[2] for p in pieces])
    return nll.T[valid.T]  # stream by stream = text order, the overhang dropped


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m charlm ARGS` in a real subprocess, using this checkout's package."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "charlm", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        **kwargs,
    )


def one_line_error(result, *fragments: str) -> None:
    """A CliRunner result that is one `error:` line with exit code 1, naming each fragment."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
