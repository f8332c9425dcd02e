"""How far training is, for a person watching a terminal or reading a log.

On a terminal: a tqdm bar, redrawn in place. Anywhere else (stderr sent to a file or a pipe) a
bar's carriage-return redraws would fill the log with thousands of updates, so one plain line is
written every PLAIN_EVERY_S seconds instead. With --time-budget, the time shown is what is left
of the budget, which is when the run will stop, not the epoch's ETA.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

PLAIN_EVERY_S = 30.0  # off a terminal: seconds between two progress lines
# tqdm's default right side without the epoch's ETA (`<{remaining}`): a budget's time left is
# shown in the postfix instead
BUDGET_BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class EpochProgress:
    """The progress of one epoch: `step()` after every batch, `report()` when numbers are new."""

    def __init__(
        self,
        epoch: int,
        epochs: int,
        total: int,
        done: int,
        *,
        enabled: bool = True,
        budget_s: float = 0.0,
        stream: TextIO | None = None,
        every_s: float | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        terminal = self.stream.isatty()
        self.plain = enabled and not terminal
        self.desc, self.n, self.total, self.budget_s = (
            f"epoch {epoch}/{epochs}",
            done,
            total,
            budget_s,
        )
        self.every_s = PLAIN_EVERY_S if every_s is None else every_s
        self.last_line = time.monotonic()
        self.bar = tqdm(
            total=total,
            initial=done,
            unit="batch",
            desc=self.desc,
            leave=False,
            disable=not (enabled and terminal),
            dynamic_ncols=True,
            file=self.stream,
            bar_format=BUDGET_BAR if budget_s else None,
        )

    def step(self) -> None:
        self.n += 1
        self.bar.update()

    def report(self, loss: float, ppl: float, chars_per_s: float, left_s: float) -> None:
        """New numbers; `left_s` is the time left in the budget if there is one, else the epoch."""
        stats = {"loss": f"{loss:.3f}", "ppl": f"{ppl:.2f}", "chars_s": f"{chars_per_s:,.0f}"}
        if self.budget_s:
            stats["budget_left"] = tqdm.format_interval(max(0.0, left_s))
        self.bar.set_postfix(stats, refresh=False)
        now = time.monotonic()
        if self.plain and now - self.last_line >= self.every_s:
            self.last_line = now
            where = f"of the {self.budget_s:g} s budget" if self.budget_s else "in the epoch"
            self.stream.write(
                f"{self.desc}: batch {self.n}/{self.total}, loss {loss:.3f}, ppl {ppl:.2f}, "
                f"{chars_per_s:,.0f} chars/s, {tqdm.format_interval(max(0.0, left_s))} left "
                f"{where}\n"
            )
            self.stream.flush()

    def close(self) -> None:
        self.bar.close()


def epoch_summary(row: dict[str, Any]) -> str:
    """One line per epoch for the terminal."""
    val = (
        ""
        if row["val_loss"] is None
        else (f", val ppl {row['val_ppl']:.3f}, val bpc {row['val_bpc']:.3f}")
    )
    return (
        f"epoch {row['epoch']}{' (partial)' if row['partial'] else ''}: step {row['step']}, "
        f"train ppl {row['train_ppl']:.3f}{val}, {row['chars_per_sec']:,.0f} chars/s, "
        f"{row['elapsed_s']:.0f} s"
    )


def eval_summary(row: dict[str, Any]) -> str:
    """One line per evaluation (on a fixed part of the validation text) for the terminal."""
    return (
        f"step {row['step']}: {row['epochs']:.2f} epochs, val ppl {row['val_ppl']:.3f}, val bpc "
        f"{row['val_bpc']:.3f} (its first {row['chars']:,} characters), {row['elapsed_s']:.0f} s"
    )
