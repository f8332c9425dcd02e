"""The exported page's size and speed in headless Chromium, float32 and int8 weights, as JSON.

    python -m benchmarks.export_page                    # the default model (448-unit LSTM,
                                                        # embedding 64), random weights
    python -m benchmarks.export_page runs/charlm --held test.txt   # a trained run; its bits per
                                                        # character on a held text, both pages

Speed is characters per second of `charlm.generate` in the page (temperature 1, all characters
kept), the median of a few rounds after a warm-up: per second of wall time (which a busy machine
lowers) and per second of the browser's CPU time (what one idle core would do; Linux only). Needs
Debian's chromium and chromium-driver (tests/browser.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from charlm import checkpoint
from charlm.export import export
from charlm.model import CharLM, ModelConfig
from tests.browser import browser

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
CHARS, ROUNDS = 2000, 3


def default_run(folder: Path) -> Path:
    """A run folder holding the default model with random weights (tiny Shakespeare's 65
    characters where the corpus is found, else 65 printable ones)."""
    text = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.exists() else None
    vocab = sorted(set(text)) if text else [chr(c) for c in range(32, 97)]
    torch.manual_seed(0)
    cfg = ModelConfig(len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"model_config": asdict(cfg), "vocab": vocab, "model": CharLM(cfg).state_dict()}
    checkpoint.save(payload, folder / "best.pt")
    return folder


def cpu_seconds(root: int) -> float:
    """CPU time used so far by the processes under `root` (the browser the driver started:
    its page runs in one of them), from Linux's /proc; NaN elsewhere."""
    if not Path("/proc/self/stat").exists():
        return math.nan
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a process that ended while being looked at
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


def speeds(driver) -> tuple[float, float]:
    """Characters per second of wall time, and per second of the browser's CPU time (what it
    would do on an idle core: a busy machine shares its cores out), medians of ROUNDS
    generations of CHARS characters after one to warm up."""
    script = "charlm.generate({length: arguments[0], seed: 1})"
    driver.execute_script(script, 200)
    wall, cpu = [], []
    for _ in range(ROUNDS):
        cpu_0, start = cpu_seconds(driver.service.process.pid), time.perf_counter()
        driver.execute_script(script, CHARS)
        wall.append(CHARS / (time.perf_counter() - start))
        cpu.append(CHARS / (cpu_seconds(driver.service.process.pid) - cpu_0))
    return statistics.median(wall), statistics.median(cpu)


def measure(run: Path, work: Path, held: str | None) -> dict[str, dict[str, float]]:
    """Per kind of weights: the page's size in bytes, its speed, and its bits on `held`."""
    rows = {}
    with browser(work / "chromium") as driver:
        for kind, quantize in (("float32", None), ("int8", "int8")):
            page = export(run, "html", work / f"{kind}.html", quantize)
            driver.get(page.as_uri())
            wall, cpu = speeds(driver)
            row = {"bytes": page.stat().st_size, "chars_per_s": round(wall)}
            row["chars_per_cpu_s"] = round(cpu) if math.isfinite(cpu) else None
            if held is not None:
                row["bits_per_char"] = driver.execute_script(
                    "return charlm.bits(arguments[0])", held
                )
            rows[kind] = row
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run", nargs="?", help="a run folder or checkpoint (default: the default model, random)"
    )
    parser.add_argument("--held", type=Path, help="a text to score in both pages")
    args = parser.parse_args(argv)
    held = args.held.read_text(encoding="utf-8") if args.held else None
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else default_run(Path(tmp) / "run")
        json.dump(measure(run, Path(tmp), held), sys.stdout)
        print()


if __name__ == "__main__":
    main()
