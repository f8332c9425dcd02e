"""Time budgets under load: does a budgeted run still end on time, with its learning rate at
the schedule's end, when the machine slows half-way through?

    python -m benchmarks.bench --load                 # 120 s and 600 s budgets (~13 minutes)
    python -m benchmarks.bench --load --quick         # one 20 s budget
    python -m benchmarks.bench --load --budgets 300 --competitors 2

Each budget trains the corpus with every other setting at its default. Half-way through the
budget (by the run's own clock) --competitors CPU-bound processes start, and spin until the run
ends; on a small machine one of them slows a training step several times over (torch's threads
wait for one another). A row records where the run ended against its budget (the target: within
max(5%, 10 s) of it; and how far past it, if at all, which charlm aims never to be), the
learning rate it ended with against the schedule's final value (lr/20 for cosine), the planned
and trained steps, and the plan's revisions; the rows are printed as a table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import charlm
from benchmarks.harness import grid
from charlm import TrainConfig

# a run must end within this of its budget: the larger of the fraction and the seconds
END_FRACTION, END_SECONDS = 0.05, 10.0
SPIN = "while True: pass"  # a competitor: one core kept busy


class Competition(charlm.Callback):
    """Starts `n` CPU-bound processes once the run has spent `at_s` seconds of its budget."""

    def __init__(self, n: int, at_s: float) -> None:
        self.n, self.at_s = n, at_s
        self.procs: list[subprocess.Popen] = []
        self.started_s: float | None = None

    def on_step(self, trainer: Any) -> None:
        if self.started_s is None and trainer.p.elapsed_s >= self.at_s:
            self.started_s = trainer.p.elapsed_s
            self.procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(self.n)]

    def stop(self) -> None:
        """End the competitors this started (each by its own process id)."""
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []


def row(budget_s: float, result: Any, cfg: TrainConfig, started_s: float | None) -> dict:
    """What a budget's run did against its budget, read from its result and config.json."""
    recorded = json.loads((result.out / "config.json").read_text())
    plan = recorded.get("plan") or {}
    elapsed = result.progress.elapsed_s
    final_lr = result.last_row["lr"] if result.last_row else None
    want_lr = recorded["lr"] * 0.05 if recorded["lr_schedule"] == "cosine" else None
    lr_at_end = (
        final_lr is not None and want_lr is not None and abs(final_lr - want_lr) <= (1e-9 * want_lr)
    )
    return {
        "budget_s": budget_s,
        "elapsed_s": elapsed,
        "end_s_early": budget_s - elapsed,
        "within": abs(budget_s - elapsed) <= max(END_FRACTION * budget_s, END_SECONDS),
        "past_s": max(0.0, elapsed - budget_s),
        "final_lr": final_lr,
        "schedule_final_lr": want_lr,
        "lr_at_end": lr_at_end,
        "steps": result.progress.step,
        "planned_steps": result.progress.planned_steps,
        "first_plan": plan.get("steps"),
        "revisions": plan.get("revisions", []),
        "stopped_by": str(result.stopped_by),
        "competition_started_s": started_s,
    }


def under_load(args: argparse.Namespace, work: Path) -> list[dict]:
    """`charlm train CORPUS --time-budget B` for each budget, with competitors from B/2."""
    rows = []
    for budget in (float(b) for b in args.budgets.split(",")):
        cfg = TrainConfig(corpus=str(args.corpus), out=str(work / f"load{budget:g}"),
                          time_budget=budget)  # fmt: skip
        rival = Competition(args.competitors, budget / 2)
        start = time.perf_counter()
        try:
            result = charlm.train(cfg, progress_bar=False, callbacks=[rival])
        finally:
            rival.stop()
        report = row(budget, result, cfg, rival.started_s)
        report.update(wall_s=time.perf_counter() - start, competitors=args.competitors,
                      loadavg_end=os.getloadavg()[0])  # fmt: skip
        print(json.dumps(report), flush=True)
        rows.append(report)
    return rows


def table(rows: list[dict], markdown: bool = False) -> str:
    """The rows as a table: where each run ended, its steps, its final learning rate."""
    head = ["budget", "ended at", "target", "past the budget", "steps (first plan)",
            "revisions", "final lr (schedule's)", "pass"]  # fmt: skip
    lines = []
    for r in rows:
        tol = max(END_FRACTION * r["budget_s"], END_SECONDS)
        ok = r["within"] and r["lr_at_end"]
        lines.append([
            f"{r['budget_s']:g} s", f"{r['elapsed_s']:.1f} s", f"within {tol:g} s",
            f"{r['past_s']:.1f} s", f"{r['steps']:,} ({r['first_plan'] or 0:,})",
            str(len(r["revisions"])), f"{r['final_lr']:.3g} ({r['schedule_final_lr'] or 0:.3g})",
            "PASS" if ok else "FAIL",
        ])  # fmt: skip
    return grid(head, lines, markdown)
