"""charlm against plain PyTorch, side by side in one run: training, generation, big corpora.

Run from the repository root, so that it measures this checkout's charlm:

    python -m benchmarks.bench                 # every row (the 1 GB corpus row takes minutes)
    python -m benchmarks.bench --quick         # small sizes, well under a minute (CI)
    python -m benchmarks.bench --json out.json --corpus tinyshakespeare.txt
    python -m benchmarks.bench --learning      # validation loss of --time-budget 30, 60, 180
    python -m benchmarks.bench --load          # budgets of 120 and 600 s, slowed half-way
    python -m benchmarks.bench --learning --models lstm,mingru:2,minlstm:2   # cells side by side
    python -m benchmarks.bench --only parallel,amp   # min cells vs the LSTM: training chars/s
    python -m benchmarks.bench --dynamic runs/charlm   # bits/char with and without --dynamic

How a row is measured: harness.py. The reference loops: references.py. The rows: rows.py. The
learning curve and dynamic evaluation: learning.py. Budgets under load: load.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchmarks.harness import (
    CPU_CEILINGS,
    Row,
    json_default,
    machine,
    measure_ceilings,
    rates_line,
    set_pct_peak,
    table,
)
from benchmarks.learning import dynamic_gain, learning
from benchmarks.learning import table as learning_table
from benchmarks.load import table as load_table
from benchmarks.load import under_load
from benchmarks.rows import (
    corpus_rows,
    cuda_rows,
    generation_rows,
    parallel_rows,
    training_rows,
)
from charlm.builtin import builtin_text
from charlm.config import MODELS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = (
    Path(os.environ.get("CHARLM_DATA", ROOT.parent / "shared" / "corpora")) / "tinyshakespeare.txt"
)
JOBS = ("train", "generate", "corpus", "cuda", "amp", "parallel")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; --rounds defaults to 3 (1 with --quick)."""
    ap = argparse.ArgumentParser("python -m benchmarks.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for CI (< 1 minute)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--corpus",
        type=Path,
        help="an English text (default: tiny Shakespeare from $CHARLM_DATA if it is there, "
        "else Python's built-in help text, so that a plain clone runs offline)",
    )
    ap.add_argument("--rounds", type=int, default=0, help="alternations per row (default 3/1)")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated: train,generate,corpus,cuda,amp (CPU bfloat16),parallel (the min "
        "cells against the LSTM)",
    )
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    ap.add_argument("--sizes", default="", help="corpus rows in MB (default 10,100,1000; quick 10)")
    ap.add_argument("--learning", action="store_true", help="run the learning curve instead")
    ap.add_argument(
        "--load", action="store_true", help="budgets slowed half-way by competing processes"
    )
    ap.add_argument(
        "--budgets",
        default="",
        help="--learning, --load: seconds, comma-separated (default 30,60,180; --load: 120,600, "
        "with --quick 20)",
    )
    ap.add_argument("--competitors", type=int, default=1, help="--load: CPU-bound processes")
    ap.add_argument("--amp", default="auto", choices=("auto", "on", "off"), help="--learning")
    ap.add_argument(
        "--models",
        default="lstm",
        help="--learning: comma-separated NAME[:LAYERS], side by side at each budget, e.g. "
        "lstm,mingru:2,minlstm:2",
    )
    ap.add_argument(
        "--dynamic", type=Path, help="score with and without dynamic evaluation under this model"
    )
    args = ap.parse_args(argv)
    problem = check_args(args)
    if problem:
        ap.error(problem)
    args.rounds = args.rounds or (1 if args.quick else 3)
    load = "20" if args.quick else "120,600"
    args.budgets = args.budgets or (load if args.load else "30,60,180")
    return args


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, in one line, before minutes of measuring."""
    if args.corpus is not None and not args.corpus.exists():
        return f"no corpus at {args.corpus}"
    if args.rounds < 0:
        return f"--rounds must be >= 1 (0: the default), got {args.rounds}"
    if args.load and (args.learning or args.dynamic):
        return "--load runs alone: not with --learning or --dynamic"
    if args.competitors < 1:
        return f"--competitors must be >= 1, got {args.competitors}"
    unknown = set(filter(None, args.only.split(","))) - set(JOBS)
    if unknown:
        return f"--only: unknown {', '.join(sorted(unknown))} (choose from {', '.join(JOBS)})"
    for flag, value in (("--sizes", args.sizes), ("--budgets", args.budgets)):
        try:
            numbers = [float(x) for x in value.split(",")] if value else []
        except ValueError:
            return f"{flag} takes comma-separated numbers, got {value!r}"
        if not all(0 < x < math.inf for x in numbers):
            return f"{flag} takes positive numbers, got {value!r}"
    if args.sizes and not all(float(x).is_integer() for x in args.sizes.split(",")):
        return f"--sizes takes whole MB, got {args.sizes!r}"
    for spec in filter(None, args.models.split(",")):
        name, _, layers = spec.partition(":")
        if name not in MODELS or (layers and not (layers.isdigit() and int(layers) > 0)):
            return f"--models takes NAME[:LAYERS] with NAME in {', '.join(MODELS)}, got {spec!r}"
    return None


def default_corpus(work: Path) -> Path:
    """Tiny Shakespeare where CI keeps it, else the built-in corpus written to a file in `work`."""
    if DEFAULT_CORPUS.exists():
        return DEFAULT_CORPUS
    path = work / "builtin.txt"
    path.write_text(builtin_text(), encoding="utf-8")
    return path


def speed(args: argparse.Namespace, work: Path) -> tuple[list[Row], dict[str, float]]:
    """The table's rows for the jobs in --only, and the matmul ceilings they compare with."""
    only = set(filter(None, args.only.split(","))) or set(JOBS)
    rates: dict[str, float] = {}  # ceiling name -> best GFLOP/s measured
    seconds = 0.3 if args.quick else 1.0
    measure_ceilings(rates, CPU_CEILINGS, seconds)
    print(f"matmul rate: {rates_line(rates)}", flush=True)
    rows: list[Row] = []
    if "train" in only:
        rows += training_rows(args, work, "cpu", amp=False)
    if "train" in only and "amp" in only:
        rows += training_rows(args, work, "cpu", amp=True)
    if "parallel" in only:
        rows += parallel_rows(args, work, "cpu", amp=False)
    if "parallel" in only and "amp" in only:
        rows += parallel_rows(args, work, "cpu", amp=True)
    if "generate" in only:
        rows += generation_rows(args, "cpu", amp="amp" in only)
    if "corpus" in only:
        rows += corpus_rows(args, work)
    if "cuda" in only:
        rows += cuda_rows(args, work, rates)
    measure_ceilings(rates, CPU_CEILINGS, seconds)
    print(f"matmul rate, the better of before and after the rows: {rates_line(rates)}")
    set_pct_peak(rows, rates)
    return rows, rates


def main(argv: list[str] | None = None) -> int:
    """Run the chosen jobs, print the table, write --json and --markdown."""
    args = parse_args(argv)
    info = machine()
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as tmp:
        work = Path(tmp)
        args.corpus = args.corpus or default_corpus(work)
        print(f"corpus: {args.corpus}", flush=True)
        if args.learning:
            result = {"machine": info, "learning": learning(args, work)}
            print(learning_table(result["learning"]))
            if args.markdown:
                args.markdown.write_text(learning_table(result["learning"], markdown=True) + "\n")
        elif args.load:
            result = {"machine": info, "load": under_load(args, work)}
            print(load_table(result["load"]))
            if args.markdown:
                args.markdown.write_text(load_table(result["load"], markdown=True) + "\n")
        elif args.dynamic:
            result = {"machine": info, "dynamic": dynamic_gain(args)}
        else:
            rows, rates = speed(args, work)
            print(table(rows))
            result = {"machine": info, "matmul_gflops": rates, "rows": [asdict(r) for r in rows]}
            if args.markdown:
                args.markdown.write_text(table(rows, markdown=True) + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=json_default) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
