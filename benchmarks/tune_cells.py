"""A bounded search for the min cells' recipes per time budget, beside the LSTM defaults.

For each cell: about a dozen recipes (layers and hidden size, learning rate, window, dropout)
trained once each at the search budget (60 s), then the best two again at each final budget
(30 and 180 s); the LSTM defaults train at every budget in the same run, so that every number
in the table was measured on the same machine in the same hour. Each run is `charlm train
CORPUS --time-budget B` with the recipe's flags (benchmarks.learning.learning_run). The
expansion factor and the feed-forward width are the cells' constants (charlm.cells.EXPANSION,
FF_MULT), not searched.

Run it on a quiet machine (about 50 minutes with the defaults: 2 cells x 12 x 60 s, then
2 x 2 x (30 + 180) s, and the LSTM's 30 + 60 + 180 s), from the repository root:

    CHARLM_DATA=../shared/corpora python -m benchmarks.tune_cells --json t.json --markdown t.md

The Markdown table goes into docs/models.md; a cell that beats the LSTM at a budget goes into
charlm.settle.CELL_AUTO (its recipe) and AUTO_CELL (the auto choice).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.bench import DEFAULT_CORPUS
from benchmarks.harness import json_default, machine
from benchmarks.learning import learning_run

# the search's centre, and one change from it per recipe (a few changes of layers and size
# together: at about the LSTM default's parameter count, and larger)
BASE = {"num_layers": 2, "hidden_size": 192, "seq_len": 128, "lr": 3e-3, "dropout": 0.1}
CHANGES = [
    {},
    {"num_layers": 1, "hidden_size": 272},
    {"num_layers": 3, "hidden_size": 160},
    {"num_layers": 4, "hidden_size": 136},
    {"num_layers": 2, "hidden_size": 256},
    {"lr": 2e-3},
    {"lr": 5e-3},
    {"lr": 1e-2},
    {"seq_len": 64},
    {"seq_len": 256},
    {"dropout": 0.0},
    {"dropout": 0.25},
]
CELLS = ("mingru", "minlstm")


def recipes() -> list[dict]:
    """The search's recipes, each complete (BASE with one change)."""
    return [{**BASE, **change} for change in CHANGES]


def flags(recipe: dict) -> str:
    """A recipe as the command line names it."""
    return " ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in recipe.items())


def tune(args: argparse.Namespace, work: Path) -> list[dict]:
    """Every run of the search, the finals and the LSTM's, in the order they ran."""
    runs = [learning_run(args, work, args.budget, "lstm", {"model": "lstm"})]
    for cell in args.cells.split(","):
        searched = [
            learning_run(args, work, args.budget, cell, {"model": cell}, **recipe)
            for recipe in recipes()[: args.recipes]
        ]
        runs += searched
        best = sorted(searched, key=lambda run: run["val_loss"])[:2]
        for budget in args.finals:
            for run in best:
                recipe = {k: v for k, v in run["settings"].items() if k != "model"}
                runs.append(learning_run(args, work, budget, cell, {"model": cell}, **recipe))
    runs += [learning_run(args, work, b, "lstm", {"model": "lstm"}) for b in args.finals]
    return runs


def markdown(runs: list[dict]) -> str:
    """One row per run, grouped by budget, best first; the LSTM defaults' row marked."""
    head = "| budget | model | recipe | validation loss | steps (planned) | vs LSTM |"
    lines = [head, "|---|---|---|---|---|---|"]
    for budget in sorted({run["budget_s"] for run in runs}):
        at = sorted((r for r in runs if r["budget_s"] == budget), key=lambda r: r["val_loss"])
        lstm = next((r["val_loss"] for r in at if r["model"] == "lstm"), None)
        for r in at:
            recipe = {k: v for k, v in r["settings"].items() if k != "model"}
            gap = "-" if lstm is None or r["model"] == "lstm" else f"{r['val_loss'] - lstm:+.3f}"
            name = "lstm (defaults)" if r["model"] == "lstm" else r["model"]
            lines.append(
                f"| {budget:g} s | {name} | {flags(recipe)} | {r['val_loss']:.3f} | "
                f"{r['steps']:,} ({r['planned_steps']:,}) | {gap} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        "python -m benchmarks.tune_cells", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated min cells")
    ap.add_argument("--budget", type=float, default=60.0, help="the search's budget, seconds")
    ap.add_argument("--finals", default="30,180", help="budgets for each cell's best two")
    ap.add_argument("--recipes", type=int, default=len(CHANGES), help="the first N recipes only")
    ap.add_argument("--amp", default="auto", choices=("auto", "on", "off"))
    ap.add_argument("--json", type=Path, help="write every run here")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    args = ap.parse_args(argv)
    if not args.corpus.exists():
        ap.error(f"no corpus at {args.corpus} (set CHARLM_DATA or --corpus)")
    args.finals = [float(b) for b in args.finals.split(",") if b]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="charlm-tune-") as tmp:
        runs = tune(args, Path(tmp))
    table = markdown(runs)
    print(table)
    if args.json:
        result = {"machine": info, "runs": runs}
        args.json.write_text(json.dumps(result, indent=1, default=json_default) + "\n")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
