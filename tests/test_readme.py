"""The README's tour runs as shown: every command in order, in one empty folder, as a newcomer
types them after the Quickstart, and each prints what the page shows.

The tour is the part of README.md between `<!-- tour -->` and `<!-- /tour -->`; in its
```console blocks a line starting with `$ ` is a command and the lines after it are what it
printed. The comparison is of shapes, since a run on another machine differs in its numbers:

- numbers are masked, and a shown line `...` stands for any number of lines;
- what a model wrote (a sample's lines, `charlm generate`'s output) is one line, once the
  output is checked to begin with the prefix asked for;
- how the plan went is left out (its revisions, or the clock cutting its last steps): that
  follows the machine's load, not the command; a duration (`20.0s`, `2m 54s`) is one word;
- the corpus's folder is the page's (`~/.cache/charlm` of a user called `me`).

The one long command is shortened as the page says it is (SHORTER). Tiny Shakespeare comes
from $CHARLM_DATA, put where `charlm train tinyshakespeare` would have downloaded it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_SHAKESPEARE

TOUR = re.compile(r"<!-- tour -->\n(.*?)<!-- /tour -->", re.DOTALL)
CONSOLE = re.compile(r"^```console\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SHORTER = {"--time-budget 180": "--time-budget 20 --eval-every 50"}
ELIDED = "..."
MODEL_TEXT = "<what the model wrote>"
PAGE_CACHE = "/home/me/.cache/charlm"
NUMBER = re.compile(r"\d[\d,.]*\d|\d")
DURATION = re.compile(r"\b(?:\d+h )?(?:\d+m )?\d+(?:\.\d+)?s\b")
REVISED = re.compile(r"; the plan was revised .*|, revised (once|\d+ times)")
CUT = re.compile(r"^stopped at ([\d,]+ of [\d,]+ planned steps) \(the clock ran out first\)")


def tour(readme: str) -> list[tuple[str, list[str]]]:
    """(command, the lines the page shows it printing), in the page's order."""
    found = TOUR.search(readme)
    assert found, "README.md has no <!-- tour --> ... <!-- /tour --> part"
    steps: list[tuple[str, list[str]]] = []
    for block in CONSOLE.findall(found[1]):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                assert steps, f"output before any command: {line!r}"
                steps[-1][1].append(line)
    return steps


def shape(command: str, lines: list[str]) -> list[str]:
    """The lines as compared: numbers masked, a model's text one line, revisions dropped."""
    words = shlex.split(command)
    if words[:2] == ["charlm", "generate"]:
        prefix = words[words.index("--prefix") + 1]
        assert "\n".join(lines).startswith(prefix), f"{command}: {lines[:2]}"
        return [MODEL_TEXT]
    shaped, in_sample = [], False
    for line in lines:
        if in_sample and line != "---":
            continue
        in_sample = line.startswith("--- sample")
        line = CUT.sub(r"trained \1", REVISED.sub("", line))
        shaped.append(NUMBER.sub("#", DURATION.sub("<time>", line)))
        if in_sample:
            shaped.append(MODEL_TEXT)
    return shaped


def agrees(shown: list[str], got: list[str]) -> bool:
    """`got` is `shown`, where a shown `...` line may stand for any lines."""
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line == ELIDED else re.escape(line) + r"\n" for line in shown
    )
    return re.fullmatch(pattern, "".join(line + "\n" for line in got)) is not None


def test_the_tour_runs_as_the_readme_shows(tmp_path: Path) -> None:
    if not TINY_SHAKESPEARE.is_file():
        pytest.skip(f"the tour trains on tiny Shakespeare: set $CHARLM_DATA ({TINY_SHAKESPEARE})")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for long, short in SHORTER.items():
        assert long in readme and short in readme, "the page says how the tests shorten it"
    cache, here = tmp_path / "cache", tmp_path / "clone"
    (cache / "corpora").mkdir(parents=True)
    here.mkdir()
    shutil.copy(TINY_SHAKESPEARE, cache / "corpora" / "tinyshakespeare.txt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARLM_")}
    # what a terminal shows: stdout and stderr in the order written
    env |= {"CHARLM_CACHE": str(cache), "COLUMNS": "100", "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    steps = tour(readme)
    assert len(steps) >= 5
    for command, shown in steps:
        run = command
        for long, short in SHORTER.items():
            run = run.replace(long, short)
        proc = subprocess.run(
            ["bash", "-c", run], cwd=here, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, f"$ {run}\n{proc.stdout}"
        got = proc.stdout.replace(str(cache), PAGE_CACHE).splitlines()
        want, have = shape(command, shown), shape(command, got)
        assert agrees(want, have), (
            f"$ {run}\nshown:\n" + "\n".join(want) + "\ngot:\n" + "\n".join(have)
        )


def test_the_comparison_can_fail() -> None:
    shown = ["plan: 2,041 steps", "...", "done (time_budget); saved in runs/charlm"]
    ran = ["plan: 310 steps", "step 50: 0.10 epochs", "done (time_budget); saved in runs/charlm"]
    assert agrees(shape("charlm train", shown), shape("charlm train", ran))
    assert not agrees(shape("charlm train", shown), shape("charlm train", ran[:2]))
    sample = ["--- sample after epoch 1 ---", "ROMEO: what", "light", "---"]
    other = ["--- sample after epoch 2 ---", "KING: no", "---"]
    assert shape("charlm train", sample) == shape("charlm train", other)
    assert shape("charlm generate --prefix ROMEO:", ["ROMEO:", "x"]) == [MODEL_TEXT]
    with pytest.raises(AssertionError):
        shape("charlm generate --prefix ROMEO:", ["KING:", "x"])
    revised = "trained 275 of 275 planned steps; the plan was revised once: 250 -> 275 at step 9"
    assert shape("", [revised + "; replay ..."]) == shape("", ["trained 3 of 3 planned steps"])
    cut = "stopped at 270 of 275 planned steps (the clock ran out first)"
    assert shape("", [cut]) == shape("", ["trained 3 of 3 planned steps"])
    assert shape("", ["stopped at 3 of 9 planned steps (max_steps)"]) != shape("", [cut])
    took = "trained        1 of 2 epochs (+103 batches), 593 steps, {}"
    assert shape("", [took.format("20.0s")]) == shape("", [took.format("2m 54s")])
    assert shape("", ["epoch 1: 21 s"]) != shape("", ["epoch 1: 21s"])
    plan = "plan           2,041 steps (set by time_budget)"
    assert shape("", [plan + ", revised once"]) == shape("", [plan + ", revised 12 times"])
    assert shape("", [plan]) == shape("", [plan + ", revised once"])
