"""Learning curves: perplexity and bits per character of one or more runs, from metrics.jsonl.

One figure, four panels, every run in its own colour (training dashed, validation solid):

    perplexity vs epoch  | perplexity vs wall time
    BPC vs epoch         | BPC vs wall time

matplotlib is an optional extra (from a clone: `pip install -e ".[plot]"`), imported only when
plotting.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charlm.errors import CharLMError
from charlm.metrics import bits, perplexity
from charlm.resources import check_figure
from charlm.run import METRICS, read_rows
from charlm.storage import atomic_write


def read_metrics(run: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (a run folder, or the file itself)."""
    path = Path(run)
    rows = read_rows(path / METRICS if path.is_dir() or not path.exists() else path)
    if not rows:
        raise CharLMError(f"{path} has no rows yet (train at least one epoch first)")
    return rows


def run_labels(runs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Folder names; where two runs share one, enough of the parent path to tell them apart."""
    parts = [Path(os.path.abspath(r)).parts for r in runs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def _time_axis(seconds: float) -> tuple[float, str]:
    if seconds >= 2 * 3600:
        return 3600.0, "hours"
    if seconds >= 2 * 60:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _import_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise CharLMError(
            "plotting needs matplotlib, which is not installed: pip install matplotlib "
            '(in a clone of charlm: pip install -e ".[plot]")'
        ) from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_runs(
    runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], dpi: int = 120
) -> Path:
    """Draw the learning curves of `runs` into the image file `out` (format from its suffix)."""
    if not runs:
        raise CharLMError("name at least one run folder to plot")
    check_figure(12, 8, dpi)  # the figure's size in inches, below: its pixels fit in memory
    data = [read_metrics(r) for r in runs]
    plt = _import_pyplot()
    data = [[r for r in rows if _shown(r["epoch"]) == r["epoch"]] for rows in data]
    scale, unit = _time_axis(
        max((_shown(r["elapsed_s"]) for rows in data for r in rows), default=0)
    )
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex="col", constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, rows) in enumerate(zip(run_labels(runs), data, strict=True)):
        colour = colours[i % len(colours)]
        x_by_col = ([r["epoch"] for r in rows], [_shown(r["elapsed_s"]) / scale for r in rows])
        train_nll = [r["train_loss"] for r in rows]
        val = [(j, r["val_loss"]) for j, r in enumerate(rows) if r.get("val_loss") is not None]
        for col, xs in enumerate(x_by_col):
            for row, to_y in enumerate((perplexity, bits)):
                ax = axes[row][col]
                style = {"color": colour, "marker": "o", "markersize": 3}
                ys = [_shown(to_y(v)) for v in train_nll]
                ax.plot(xs, ys, "--", label=f"{label} train", **style)
                if val:
                    ax.plot(
                        [xs[j] for j, _ in val],
                        [_shown(to_y(v)) for _, v in val],
                        "-",
                        label=f"{label} val",
                        **style,
                    )
    for col, xlabel in enumerate(("epoch", f"wall time ({unit})")):
        axes[1][col].set_xlabel(xlabel)
        for row, ylabel in enumerate(("perplexity", "bits per character")):
            axes[row][col].set_ylabel(ylabel)
            axes[row][col].grid(True, alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    axes[1][0].xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    axes[0][0].legend(fontsize="small")
    fig.suptitle("charlm learning curves (dashed: training, solid: validation)")
    kind = Path(out).suffix[1:].lower() or None  # the format, from the file name
    try:  # through the one writer: a failed plot never leaves a torn image behind
        atomic_write(out, lambda f: fig.savefig(f, dpi=dpi, format=kind), durable=False)
    except ValueError as e:
        raise CharLMError(f"cannot write {out}: {e}") from None
    finally:
        plt.close(fig)
    return Path(out)


def _shown(value: float) -> float:
    """A value matplotlib can place; NaN (a gap in the line) for a diverged run's inf or 1e308."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) and abs(value) < 1e30 else math.nan
