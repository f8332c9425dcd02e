"""Training progress: a bar on a terminal, plain lines in a log, and the time left in a budget."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from charlm import progress
from charlm.progress import EpochProgress
from charlm.train import train
from tests.conftest import ROOT, tiny

# `charlm train` with a progress line at every --log-every step (instead of every 30 s)
EVERY_LOG_STEP = (
    "import charlm.progress as p; p.PLAIN_EVERY_S = 0.0; "
    "from charlm.cli import main; main(prog_name='charlm')"
)
LINE = re.compile(
    r"epoch (\d)/2: batch (\d+)/(\d+), loss \d+\.\d{3}, ppl \d+\.\d{2}, [\d,]+ chars/s, "
    r"(\d\d):(\d\d) left in the epoch"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_plain_lines_and_no_carriage_returns(corpus: Path, tmp_path: Path):
    args = ["train", str(corpus), "--out", str(tmp_path / "run"), "--hidden-size", "16",
            "--embedding-dim", "8", "--seq-len", "16", "--batch-size", "8", "--epochs", "2",
            "--log-every", "5", "--device", "cpu", "--sample-every", "0",
            "--amp", "off"]  # fmt: skip
    with open(tmp_path / "err.log", "w") as err, open(tmp_path / "out.log", "w") as out:
        proc = subprocess.run(
            [sys.executable, "-c", EVERY_LOG_STEP, *args],
            stdout=out,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=300,
        )
    log = (tmp_path / "err.log").read_text()
    assert proc.returncode == 0, log
    assert "\r" not in log and "\r" not in (tmp_path / "out.log").read_text()
    lines = log.splitlines()
    assert lines, "no progress lines"
    batches = []
    for line in lines:
        found = LINE.fullmatch(line)
        assert found, line
        epoch, batch, total = (int(found[i]) for i in (1, 2, 3))
        batches.append((epoch, batch))
        assert 0 < batch <= total
    # one line per --log-every step (every step of 5, counted over both epochs)
    per_epoch = int(LINE.fullmatch(lines[0])[3])
    steps = [(e - 1) * per_epoch + b for e, b in batches]
    assert steps == list(range(5, 2 * per_epoch + 1, 5))
    out_lines = (tmp_path / "out.log").read_text().splitlines()
    assert re.fullmatch(
        rf"corpus: {corpus}, [\d.]+ KB, [\d,]+ characters, \d+ distinct", out_lines[0]
    )
    assert re.search(
        r"\| cpu float32 \(--amp off\), \d+ threads?, seed 1337$", out_lines[1]
    )  # the start lines: what the run reads, then how
    assert [line.split(":")[0] for line in out_lines[2:4]] == ["epoch 1", "epoch 2"]
    done = out_lines.index(f"done (epochs); saved in {tmp_path / 'run'}")
    assert out_lines[done + 1 :][0] == "next:" and len(out_lines) == done + 5  # then what next


def test_plain_lines_wait_their_interval() -> None:
    log = io.StringIO()
    bar = EpochProgress(1, 3, 100, 0, stream=log, every_s=3600)
    for _ in range(50):
        bar.step()
        bar.report(2.0, 7.39, 1000.0, 12.0)
    bar.close()
    assert log.getvalue() == ""  # nothing before the interval has passed, and no bar


def test_a_budget_shows_its_time_left_not_the_epochs() -> None:
    log = io.StringIO()
    bar = EpochProgress(1, 7, 245, 0, stream=log, budget_s=180, every_s=0)
    bar.step()
    bar.report(1.5, 4.48, 51234.0, 161.4)
    assert log.getvalue() == (
        "epoch 1/7: batch 1/245, loss 1.500, ppl 4.48, 51,234 chars/s, "
        "02:41 left of the 180 s budget\n"
    )
    screen = Terminal()
    bar = EpochProgress(1, 7, 245, 0, stream=screen, budget_s=180)
    bar.step()
    bar.report(1.5, 4.48, 51234.0, 161.4)
    bar.bar.refresh()
    shown = screen.getvalue().split("\r")[-1]
    assert "budget_left=02:41" in shown and "<" not in shown  # no epoch ETA
    screen = Terminal()
    bar = EpochProgress(1, 7, 245, 0, stream=screen)
    bar.step()
    bar.report(1.5, 4.48, 51234.0, 161.4)
    bar.bar.refresh()
    shown = screen.getvalue().split("\r")[-1]
    assert "<" in shown and "budget" not in shown  # without a budget: tqdm's epoch ETA


def test_the_trainer_reports_the_budget_left(tiny_config, monkeypatch) -> None:
    seen: list[float] = []
    real = progress.EpochProgress.report

    def record(self, loss, ppl, chars_per_s, left_s):
        seen.append(left_s)
        real(self, loss, ppl, chars_per_s, left_s)

    monkeypatch.setattr(progress.EpochProgress, "report", record)
    result = train(tiny(tiny_config, time_budget=1000.0, epochs=1), progress_bar=False)
    assert len(seen) >= 2
    assert seen == sorted(seen, reverse=True)
    assert 1000.0 - result.progress.elapsed_s <= seen[-1] < 1000.0
    seen.clear()
    result = train(tiny(tiny_config, out=tiny_config.out + "2", epochs=1), progress_bar=False)
    assert len(seen) >= 2 and all(left >= 0 for left in seen)
    assert seen[-1] < seen[0]  # the epoch's ETA shrinks as batches are done


@pytest.mark.parametrize("budget", [0.0, 30.0])
def test_disabled_progress_writes_nothing(budget: float) -> None:
    log = io.StringIO()
    bar = EpochProgress(1, 1, 10, 0, enabled=False, stream=log, budget_s=budget, every_s=0)
    bar.step()
    bar.report(1.0, 2.72, 10.0, 5.0)
    bar.close()
    assert log.getvalue() == ""
