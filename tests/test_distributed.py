"""Distributed training: 2 processes launched by torchrun on the CPU (gloo) against 1 process.

With the same seed, W processes with global --batch-size B take the steps one process takes
with --batch-size B, so their metrics and weights must agree to float tolerance.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from charlm import checkpoint, distributed
from charlm.checkpoint import load_model
from charlm.errors import CharLMError
from charlm.model import CharLM, ModelConfig
from charlm.train import TrainConfig, resume_config, train
from tests.conftest import char_nll, epoch_rows

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4


def cli_args(cfg: TrainConfig) -> list[str]:
    """The `charlm train` arguments that reproduce `cfg`."""
    args = [cfg.corpus]
    default = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name != "corpus" and value != getattr(default, f.name):
            args += ["--" + f.name.replace("_", "-"), str(value)]
    return args


def torchrun(*args: str, nproc: int = 2, tag: str = "", wait: bool = True):
    """`torchrun --standalone -m charlm train ARGS` with this checkout's package, 1 thread each."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "CHARLM_TEST_TAG": tag,  # lets a test find its worker processes
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "charlm", "train", *args, "--quiet"]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def rows(out: str | Path) -> list[dict]:
    return epoch_rows(out)


def weights(out: str | Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(Path(out) / checkpoint.LATEST)["model"]


def assert_same_run(got: str | Path, want: str | Path) -> None:
    """Same metrics rows (to TOL) and same final weights."""
    a, b = rows(got), rows(want)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm", "lr"):
            assert ra[key] == pytest.approx(rb[key], abs=TOL), (ra["epoch"], key)
    wa, wb = weights(got), weights(want)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=TOL, rtol=0, msg=name)


@pytest.fixture
def ddp_config(tiny_config: TrainConfig) -> TrainConfig:
    # no dropout: each process draws the masks of its own rows, one process draws them all
    return replace(tiny_config, sampler="consecutive", epochs=3, log_every=4, dropout=0.0)


# --- pieces, in one process --------------------------------------------------------------------


def test_detect_reads_the_torchrun_environment():
    assert distributed.detect({}) == distributed.Context(0, 1, 0)
    ctx = distributed.detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == (
        3,
        4,
        1,
        True,
        False,
    )
    assert distributed.detect({"WORLD_SIZE": "1"}).enabled is False
    with pytest.raises(CharLMError, match="integers"):
        distributed.detect({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(CharLMError, match="inconsistent"):
        distributed.detect({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_single_process_collectives_are_identity():
    t = torch.tensor(3.0)
    assert distributed.all_reduce_sum(t) is t
    distributed.average_(t)
    assert float(t) == 3.0
    assert distributed.agree_stop(2, False) == (2, False)
    state = torch.randn(1, 4, 3)
    assert distributed.gather_rows(state) is state
    h, c = distributed.take_rows([state, state + 1], slice(2, 4))
    assert torch.equal(h, state[:, 2:4]) and torch.equal(c, state[:, 2:4] + 1)


@pytest.mark.parametrize("world_size", [2, 3, 8])
def test_validation_shares_add_up_to_the_whole(world_size: int):
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=11, model="gru", hidden_size=8, embedding_dim=4))
    ids = np.random.default_rng(0).integers(0, 11, size=203)
    whole = char_nll(model, ids, seq_len=7, streams=6)
    parts = [char_nll(model, ids, 7, 6, r, world_size) for r in range(world_size)]
    torch.testing.assert_close(torch.cat(parts), whole)  # same streams, same order


# --- 2 processes under torchrun ----------------------------------------------------------------


@pytest.mark.parametrize(("sampler", "model"), [("consecutive", "lstm"), ("random", "rnn")])
def test_two_processes_follow_one(ddp_config: TrainConfig, tmp_path: Path, sampler, model):
    one = replace(ddp_config, sampler=sampler, model=model, out=str(tmp_path / "one"))
    train(one, progress_bar=False)
    two = replace(one, out=str(tmp_path / "two"), sample_every=1, sample_length=20)
    proc = torchrun(*cli_args(two))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done (epochs)") == 1  # rank 0 reports, alone
    assert_same_run(two.out, one.out)
    files = sorted(p.name for p in Path(two.out).iterdir() if p.name != ".lock")
    assert files == ["best.pt", "checkpoint.pt", "config.json", "metrics.jsonl", "samples.txt"]
    assert [r["epoch"] for r in rows(two.out)] == [1, 2, 3]
    assert (Path(two.out) / "samples.txt").read_text().count("=== epoch") == 3
    assert not any(k.startswith("module.") for k in weights(two.out))
    load_model(two.out, device="cpu")  # a plain single-process model


def test_batch_size_must_divide_by_world_size(ddp_config: TrainConfig, tmp_path: Path):
    cfg = replace(ddp_config, batch_size=7, out=str(tmp_path / "odd"))
    proc = torchrun(*cli_args(cfg))
    assert proc.returncode != 0
    assert "error: --batch-size 7 must be divisible by the number of processes (2)" in proc.stderr
    assert "/charlm/" not in proc.stderr  # no traceback from charlm (torchrun prints its own)
    assert not (tmp_path / "odd" / "checkpoint.pt").exists()


def _worker_pids(tag: str, local_rank: int) -> list[int]:
    """Processes started by torchrun with CHARLM_TEST_TAG=tag and this LOCAL_RANK."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = environ.read_bytes().split(b"\0")
        except OSError:
            continue
        if f"CHARLM_TEST_TAG={tag}".encode() in env and f"LOCAL_RANK={local_rank}".encode() in env:
            found.append(int(environ.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_signal_to_one_rank_stops_all_then_resume_on_one(ddp_config, tmp_path: Path):
    cfg = replace(ddp_config, model="lstm", epochs=4, out=str(tmp_path / "two"))
    want = replace(cfg, out=str(tmp_path / "one"))
    train(want, progress_bar=False)  # the unbroken run, on one process
    total_steps = rows(want.out)[-1]["step"]
    tag = uuid.uuid4().hex
    proc = torchrun(*cli_args(cfg), tag=tag, wait=False)
    metrics = Path(cfg.out) / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.exists() and metrics.read_text()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    pids = _worker_pids(tag, local_rank=1)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGINT)  # rank 1 only: rank 0 must learn of it and stop too
    _, stderr = proc.communicate(timeout=180)
    assert stderr.count("SIGINT: stopped at step") == 1, stderr
    ckpt = checkpoint.load(Path(cfg.out) / checkpoint.LATEST)
    stopped = ckpt["progress"]["step"]
    assert f"SIGINT: stopped at step {stopped}," in stderr
    assert 0 < stopped < total_steps
    assert len(rows(cfg.out)) == ckpt["progress"]["epoch"]  # rows of finished epochs only
    assert ckpt["state"] is None or ckpt["state"][0].shape[1] == cfg.batch_size  # global (L, B, H)

    train(resume_config(cfg.out, {}), resume=True, progress_bar=False)  # now on one process
    assert_same_run(cfg.out, want.out)


def test_time_budget_stops_every_rank_at_the_same_step(ddp_config, tmp_path: Path):
    cfg = replace(ddp_config, epochs=40, time_budget=0.5, out=str(tmp_path / "two"))
    proc = torchrun(*cli_args(cfg))
    assert proc.returncode == 0, proc.stderr  # no rank left waiting for the other
    last = rows(cfg.out)[-1]
    assert "done (time_budget)" in proc.stdout
    assert last["partial"] is True and last["epoch"] < 40


def test_resume_one_process_run_on_two(ddp_config, tmp_path: Path):
    base = replace(ddp_config, model="gru", lr_schedule="constant")
    first = replace(base, max_steps=60, out=str(tmp_path / "run"))  # stops mid epoch 2
    train(first, progress_bar=False)
    assert checkpoint.load(Path(first.out) / checkpoint.LATEST)["state"] is not None
    proc = torchrun(*cli_args(first), "--resume", "--max-steps", "0")
    assert proc.returncode == 0, proc.stderr
    want = replace(base, out=str(tmp_path / "one"))
    train(want, progress_bar=False)
    got = rows(first.out)
    # the max-steps stop wrote a partial row for epoch 2; the rest follows the unbroken run
    assert got[1]["partial"] is True
    del got[1]
    (Path(first.out) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in got))
    assert_same_run(first.out, want.out)
