"""The run folder (charlm/run.py): its files, its policies, and one writer at a time."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from charlm.errors import CharLMError, command_line
from charlm.run import METRICS, SAMPLES, RunFolder
from tests.conftest import ROOT, run_cli, tiny


def row(step: int) -> dict:
    return {"epoch": step, "step": step, "train_loss": 1.0, "elapsed_s": 0.0}


def test_a_second_writer_is_refused_until_the_first_is_done(tmp_path: Path) -> None:
    first = RunFolder(tmp_path / "run")
    first.open(fresh=True, step=0)
    with pytest.raises(CharLMError, match=r"in use by another charlm process \(pid \d+\)"):
        RunFolder(tmp_path / "run").open(fresh=True, step=0)
    first.close()
    second = RunFolder(tmp_path / "run")
    second.open(fresh=True, step=0)
    second.close()


def test_two_trainings_into_one_folder(tiny_config, tmp_path: Path) -> None:
    """A process holds the folder; `charlm train --overwrite` into it is refused in one line
    and changes nothing there."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from charlm.run import RunFolder; "
         f"RunFolder({str(out)!r}).open(fresh=True, step=0); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        before = sorted(p.name for p in out.iterdir())
        result = run_cli(
            "train", tiny_config.corpus, "--out", str(out), "--overwrite", "--quiet",
            "--hidden-size", "8", "--max-steps", "1",
        )  # fmt: skip
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and "in use by another charlm" in result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert sorted(p.name for p in out.iterdir()) == before
    finally:
        holder.communicate("")
    assert holder.returncode == 0


def test_fresh_starts_metrics_and_samples_afresh(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    (tmp_path / METRICS).write_text(json.dumps(row(1)) + "\n")
    (tmp_path / SAMPLES).write_text("=== epoch 1\nold\n\n")
    folder.open(fresh=True, step=0)
    folder.close()
    assert (tmp_path / METRICS).read_text() == "" and not (tmp_path / SAMPLES).exists()


def test_resume_keeps_the_rows_up_to_its_checkpoint(tmp_path: Path) -> None:
    """Rows written after the checkpoint (a crash between the two) would repeat; a torn last
    line is dropped too."""
    lines = [json.dumps(row(s)) for s in (10, 20, 30)] + ['{"epoch": 4, "st']
    (tmp_path / METRICS).write_text("\n".join(lines))
    folder = RunFolder(tmp_path)
    folder.open(fresh=False, step=20)
    folder.close()
    assert [r["step"] for r in folder.rows()] == [10, 20]


def test_a_rank_other_than_0_writes_nothing(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", writes=False)
    folder.open(fresh=True, step=0)
    folder.append_row(row(1))
    folder.write_config({"a": 1})
    folder.close()
    assert not (tmp_path / "run").exists()


def test_a_full_disk_while_appending_is_one_line(tmp_path: Path, monkeypatch) -> None:
    folder = RunFolder(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(CharLMError, match="the disk is full"):
        folder.append_row(row(1))


def test_strict_rows_name_the_bad_line(tmp_path: Path) -> None:
    (tmp_path / METRICS).write_text(json.dumps(row(1)) + "\nnot json\n")
    with pytest.raises(CharLMError, match=r"line 2: not a charlm metrics row"):
        RunFolder(tmp_path).rows()


def test_a_new_run_refuses_a_folder_holding_one(tiny_config, tmp_path: Path) -> None:
    from charlm.train import train

    train(tiny(tiny_config, max_steps=1), progress_bar=False)
    with pytest.raises(CharLMError, match="already holds a run"):
        RunFolder(tiny_config.out).check_new(overwrite=False)
    RunFolder(tiny_config.out).check_new(overwrite=True)


def test_temporaries_of_a_killed_process_are_removed_by_the_next_run(tmp_path: Path) -> None:
    (tmp_path / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".checkpoint-probe.tmp").write_bytes(b"half a probe")
    (tmp_path / "notes.tmp").write_text("the user's own file")
    folder = RunFolder(tmp_path)
    folder.open(fresh=False, step=0)
    folder.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", METRICS, "notes.tmp"]


def test_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CharLMError, match="cannot write to out='"):
        RunFolder(blocker / "run").open(fresh=True, step=0)
    with command_line(), pytest.raises(CharLMError, match="cannot write to --out"):
        RunFolder(blocker / "run").open(fresh=True, step=0)


def test_sigkill_at_random_moments_never_leaves_a_torn_checkpoint(corpus, tmp_path: Path) -> None:
    """Kill -9 a run that checkpoints every step, at random moments; each time the folder holds
    a readable checkpoint (or none yet), no temporaries once the next run starts, and
    --resume goes on."""
    import random
    import signal
    import time

    from charlm import checkpoint

    out = tmp_path / "run"
    args = [
        sys.executable, "-m", "charlm", "train", str(corpus), "--out", str(out), "--quiet",
        "--hidden-size", "8", "--seq-len", "8", "--batch-size", "2", "--save-every", "1",
        "--epochs", "50", "--sample-every", "0", "--threads", "1",
    ]  # fmt: skip
    rng = random.Random(0)
    for attempt in range(5):
        run = args + (["--resume"] if (out / "checkpoint.pt").exists() else [])
        proc = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        start = out / "metrics.jsonl"  # written when the run starts; then a checkpoint a step
        deadline = time.monotonic() + 120
        while not start.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.random() * 1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "checkpoint.pt").exists():
            ckpt = checkpoint.load(out / "checkpoint.pt")
            assert ckpt["progress"]["step"] >= 0, attempt
    assert (out / "checkpoint.pt").exists(), "no checkpoint in 5 runs"
    folder = RunFolder(out)
    folder.open(fresh=False, step=checkpoint.load(out / "checkpoint.pt")["progress"]["step"])
    folder.close()
    assert not list(out.glob(".*.tmp"))
