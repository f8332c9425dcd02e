"""--threads: the count torch uses in train, generate and eval, shown and recorded; idle OpenMP
threads sleep instead of spinning while other work holds a core (set before torch loads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm import threads
from charlm.cli import main
from charlm.train import train
from tests.conftest import ROOT, tiny

SMALL = ["--hidden-size", "16", "--embedding-dim", "8", "--seq-len", "16", "--batch-size", "8",
         "--epochs", "1", "--device", "cpu", "--sample-every", "0"]  # fmt: skip


@pytest.fixture(autouse=True)
def keep_thread_count():
    """torch's thread count is global to the process: put it back for the other tests."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_train_prints_and_records_the_thread_count(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["train", str(corpus), "--out", str(out), "--threads", "1", "--amp", "off", *SMALL]
    )
    assert result.exit_code == 0, result.output
    corpus_line, settings = result.output.splitlines()[:2]  # what it reads, then how
    assert corpus_line.startswith(f"corpus: {corpus}, ")
    assert settings.endswith("| cpu float32 (--amp off), 1 thread, seed 1337")
    config = json.loads((out / "config.json").read_text())
    assert config["threads"] == 1 and config["torch_threads"] == 1
    assert torch.get_num_threads() == 1
    # a run's config.json is a valid --config file, its record of the threads included
    again = CliRunner().invoke(
        main, ["train", "--config", str(out / "config.json"), "--out", str(tmp_path / "b")]
    )
    assert again.exit_code == 0, again.output


def test_auto_is_torchs_own_count(tiny_config) -> None:
    torch.set_num_threads(2)
    result = train(tiny(tiny_config, threads=0, epochs=1), progress_bar=False)
    config = json.loads((result.out / "config.json").read_text())
    assert config["threads"] == 0 and config["torch_threads"] == 2 == torch.get_num_threads()


def test_generate_and_eval_take_threads(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    trained = CliRunner().invoke(main, ["train", str(corpus), "--out", str(out), *SMALL])
    assert trained.exit_code == 0, trained.output
    torch.set_num_threads(2)
    gen = CliRunner().invoke(
        main, ["generate", "--checkpoint", str(out), "--length", "20", "--threads", "1"]
    )
    assert gen.exit_code == 0, gen.output
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    ev = CliRunner().invoke(
        main, ["eval", "perplexity", str(corpus), "--checkpoint", str(out), "--threads", "1"]
    )
    assert ev.exit_code == 0, ev.output
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("value", ["-1", "5000"])
@pytest.mark.parametrize("command", [["train"], ["generate"], ["eval", "perplexity", "x.txt"]])
def test_bad_thread_counts_are_one_line(
    value: str, command: list[str], corpus: Path, tmp_path: Path
) -> None:
    args = [*command, "--threads", value]
    if command == ["train"]:
        args += [str(corpus), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output == (f"error: --threads must be between 0 (auto) and 1024, got {value}\n")


def _wait_policy(code: str, env: dict[str, str]) -> str:
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    env = {**{k: v for k, v in os.environ.items() if k not in drop}, **env}
    proc = subprocess.run(
        [sys.executable, "-c", code + "; import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_idle_threads_sleep_while_other_work_holds_a_core() -> None:
    """libgomp reads OMP_WAIT_POLICY when torch loads: the command sets it before that."""
    loaded = "import sys, charlm.cli; assert 'torch' not in sys.modules"
    cores = os.cpu_count() or 1
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.5)  # running: /proc/loadavg counts them
        assert _wait_policy(loaded, {}) == "PASSIVE"
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert _wait_policy("import charlm", {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert _wait_policy("import charlm", {"GOMP_SPINCOUNT": "1000"}) == "None"
    # torch already loaded: too late for libgomp to read it, so charlm leaves it alone
    assert _wait_policy("import torch, charlm", {}) == "None"


def test_threads_spin_only_when_every_core_is_free_for_them() -> None:
    assert threads.wait_policy(0, cores=2, threads=2) is None
    assert threads.wait_policy(1, cores=2, threads=2) == "PASSIVE"
    assert threads.wait_policy(1, cores=2, threads=1) is None
    assert threads.wait_policy(6, cores=16, threads=8) is None
    assert threads.wait_policy(None, cores=2, threads=1) == "PASSIVE"  # cannot tell: sleep


def test_others_running_counts_a_busy_process() -> None:
    idle = threads.others_running()
    assert idle is not None and idle >= 0
    busy = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    try:
        time.sleep(0.5)
        assert threads.others_running() >= 1
    finally:
        busy.kill()
        busy.wait()
