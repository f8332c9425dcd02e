"""The exported page's size and speed in headless Chromium, float32 and int8 weights, as JSON.

    python -m benchmarks.export_page                    # the default model (448-unit LSTM,
                                                        # embedding 64), random weights
    python -m benchmarks.export_page runs/charlm --held test.txt   # a trained run; its bits per
                                                        # character on a held text, both pages

Speed is characters per second of `charlm.generate` in the page (temperature 1, all characters
kept), the median of a few rounds after a warm-up; it depends on the machine and its load. Needs
Debian's chromium and chromium-driver (tests/browser.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
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


def chars_per_second(driver) -> float:
    """The median speed of ROUNDS generations of CHARS characters, after one to warm up."""
    script = (
        "const t = performance.now(); charlm.generate({length: arguments[0], seed: 1});"
        "return performance.now() - t"
    )
    driver.execute_script(script, 200)
    return statistics.median(
        CHARS / driver.execute_script(script, CHARS) * 1000 for _ in range(ROUNDS)
    )


def measure(run: Path, work: Path, held: str | None) -> dict[str, dict[str, float]]:
    """Per kind of weights: the page's size in bytes, its speed, and its bits on `held`."""
    rows = {}
    with browser(work / "chromium") as driver:
        for kind, quantize in (("float32", None), ("int8", "int8")):
            page = export(run, "html", work / f"{kind}.html", quantize)
            driver.get(page.as_uri())
            row = {"bytes": page.stat().st_size, "chars_per_s": round(chars_per_second(driver))}
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
