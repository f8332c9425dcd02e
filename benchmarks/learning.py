"""What a run learns, through charlm's public API: the validation loss that each time budget
buys (--learning), and the bits/char that dynamic evaluation gains (--dynamic)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import charlm
from benchmarks.harness import grid
from charlm import Dynamic, TrainConfig, load_corpus, load_model
from charlm.builtin import builtin_text
from charlm.config import AUTO_FIELDS
from charlm.dynamic import rms_dynamic

# validation loss (nats/char) each budget must reach on tiny Shakespeare (issue 20)
TARGETS = {30.0: 1.65, 60.0: 1.55, 180.0: 1.45}


class Curve(charlm.Callback):
    """The run's validation loss after each epoch (and at a stop), as the loop writes it."""

    KEYS = ("epoch", "step", "elapsed_s", "train_loss", "val_loss", "partial")

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_epoch_end(self, trainer: object, row: dict) -> None:
        self.rows.append({k: row.get(k) for k in self.KEYS})


def model_specs(models: str) -> list[tuple[str, dict]]:
    """--models "lstm,mingru:2": (name, settings) for each, NAME[:LAYERS]; auto values left to
    each cell's auto (charlm.settle: the LSTM's defaults, a min cell's CELL_AUTO)."""
    specs = []
    for spec in filter(None, models.split(",")):
        name, _, layers = spec.partition(":")
        settings = {"model": name, **({"num_layers": int(layers)} if layers else {})}
        specs.append((spec, settings))
    return specs


def learning(args: argparse.Namespace, work: Path) -> list[dict]:
    """`charlm train CORPUS --time-budget B` for each budget and each of --models (default: the
    LSTM), every other setting at its default, side by side in one run: the validation loss
    that each budget buys (the plan, validation included)."""
    runs = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for spec, model in model_specs(args.models):
            runs.append(learning_run(args, work, budget, spec, model))
    return runs


def learning_run(
    args: argparse.Namespace, work: Path, budget: float, spec: str, model: dict, **settings
) -> dict:
    """One `charlm train CORPUS --time-budget B` run with `model`'s and `settings`' values:
    its validation loss, steps, load average and curve."""
    amp = {} if args.amp == "auto" else {"amp": args.amp}
    out = work / f"learn{budget:g}-{spec.replace(':', 'x')}-{len(list(work.iterdir()))}"
    cfg = TrainConfig(
        corpus=str(args.corpus), out=str(out), time_budget=budget, **amp, **model, **settings
    )
    load, seen = os.getloadavg()[0], Curve()
    result = charlm.train(cfg, progress_bar=False, callbacks=[seen])
    val = result.last_row["val_loss"]
    target = TARGETS.get(budget) if spec == "lstm" and not settings else None
    settled = json.loads((out / "config.json").read_text())
    run = {
        "model": spec,
        "settings": {k: settled[k] for k in ("model", "num_layers", *AUTO_FIELDS)},
        "budget_s": budget,
        "val_loss": val,
        "elapsed_s": result.progress.elapsed_s,
        "steps": result.progress.step,
        "planned_steps": result.progress.planned_steps,
        "stopped_by": result.stopped_by,
        "amp": settled["amp"],  # as resolved
        "target": target,
        "pass": None if target is None else val <= target,
        "loadavg_start": load,
        "loadavg_end": os.getloadavg()[0],
        "curve": seen.rows,
    }
    print(json.dumps(run), flush=True)
    return run


def table(runs: list[dict], markdown: bool = False) -> str:
    """The runs as a table, a row per budget and model: its settings, validation loss (nats a
    character), steps and seconds, and the target where it has one."""
    head = ["budget", "model", "settings", "validation loss", "steps (planned)", "seconds",
            "validations", "target", "pass"]  # fmt: skip
    lines = []
    for r in runs:
        s = r["settings"]
        lines.append([
            f"{r['budget_s']:g} s", r["model"],
            f"{s['num_layers']} x {s['hidden_size']}, T={s['seq_len']}, lr {s['lr']:g}, "
            f"dropout {s['dropout']:g}",
            f"{r['val_loss']:.4f}", f"{r['steps']:,} ({r['planned_steps']:,})",
            f"{r['elapsed_s']:.1f}", str(len(r["curve"])),
            "-" if r["target"] is None else f"<= {r['target']:g}",
            "-" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL"),
        ])  # fmt: skip
    return grid(head, lines, markdown)


def dynamic_gain(args: argparse.Namespace) -> list[dict]:
    """bits/char of tiny Shakespeare's validation split and of another domain (the built-in
    corpus's last 100,000 characters) under the model in args.dynamic: static, dynamic, and
    dynamic with the RMS-normalised update (statistics from the start of the training split;
    their seconds are counted in each text's row)."""
    model, vocab, _ = load_model(args.dynamic, "cpu")
    train, val = load_corpus(args.corpus).split(0.1)
    other = vocab.encode(builtin_text()[-100_000:], skip_unknown=True)
    updates = {
        "static": lambda: None,
        "dynamic": Dynamic,
        "dynamic-rms": lambda: rms_dynamic(model, train, seq_len=256),
    }
    rows = []
    for name, ids in (
        ("tiny Shakespeare validation", val),
        ("built-in corpus (Python docs)", other),
    ):
        for kind, settings in updates.items():
            t0 = time.perf_counter()
            dyn = settings()  # the RMS statistics are part of its time
            result = charlm.score(model, ids, seq_len=256, dynamic=dyn)
            row = {"text": name, "chars": result.chars, "dynamic": kind,
                   "bpc": result.bits_per_char, "seconds": time.perf_counter() - t0}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows
