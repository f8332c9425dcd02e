"""Learning curves: perplexity and bits per character of one or more runs, from metrics.jsonl.

One figure, a column per x axis (fractional epochs, steps or wall time; by default epochs and
wall time), every run in its own colour:

    perplexity vs epochs   | perplexity vs wall time
    BPC vs epochs          | BPC vs wall time

    dashed   training: the training rows (every --log-every steps), else the epochs' means
    solid    validation: the whole validation text, at epoch ends (a partial epoch at its
             fraction)
    points   evaluations: the first --eval-chars characters of the validation text, every
             --eval-every steps, between the epoch ends

Old run folders (epoch rows only) draw as before. matplotlib is an optional extra (from a
clone: `pip install -e ".[plot]"`), imported only when plotting.
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
        raise CharLMError(f"{path} has no rows yet (train at least --log-every steps first)")
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


# what each x axis draws: the field of a row, and its label
AXES = {"epoch": ("epochs", "epochs"), "step": ("step", "step"), "time": ("elapsed_s", "")}
DEFAULT_AXES = ("epoch", "time")


def plot_runs(
    runs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    dpi: int = 120,
    axes: Sequence[str] = DEFAULT_AXES,
) -> Path:
    """Draw the learning curves of `runs` into the image file `out` (format from its suffix),
    a column for each of `axes` (AXES: epoch, step, time)."""
    if not runs:
        raise CharLMError("name at least one run folder to plot")
    unknown = [a for a in axes if a not in AXES]
    if unknown or not axes:
        raise CharLMError(f"--x-axis must be one of {', '.join(AXES)}, got {unknown or 'none'}")
    check_figure(6 * len(axes), 8, dpi)  # the figure's size in inches, below: its pixels fit
    data = [read_metrics(r) for r in runs]
    plt = _import_pyplot()
    seconds = max((r["elapsed_s"] for rows in data for r in rows), default=0)
    scale, unit = _time_axis(seconds)
    fig, grid = plt.subplots(
        2, len(axes), figsize=(6 * len(axes), 8), sharex="col", squeeze=False,
        constrained_layout=True,
    )  # fmt: skip
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, rows) in enumerate(zip(run_labels(runs), data, strict=True)):
        for col, axis in enumerate(axes):
            x = (AXES[axis][0], scale if axis == "time" else 1.0)
            _draw_run(grid[:, col], rows, x, label, colours[i % len(colours)])
    for col, axis in enumerate(axes):
        grid[1][col].set_xlabel(f"wall time ({unit})" if axis == "time" else AXES[axis][1])
        for row, ylabel in enumerate(("perplexity", "bits per character")):
            grid[row][col].set_ylabel(ylabel)
            grid[row][col].grid(True, alpha=0.3)
    grid[0][0].legend(fontsize="small")
    fig.suptitle(
        "charlm learning curves (dashed: training, solid: validation, points: evaluations on "
        "part of the validation text)"
    )
    kind = Path(out).suffix[1:].lower() or None  # the format, from the file name
    try:  # through the one writer: a failed plot never leaves a torn image behind
        atomic_write(out, lambda f: fig.savefig(f, dpi=dpi, format=kind), durable=False)
    except ValueError as e:
        raise CharLMError(f"cannot write {out}: {e}") from None
    finally:
        plt.close(fig)
    return Path(out)


def _draw_run(
    column: Any, rows: list[dict[str, Any]], x: tuple[str, float], label: str, colour: str
) -> None:
    """One run's curves in a column of panels (perplexity above, bits below), against the
    rows' field `x[0]` divided by `x[1]`."""
    field_x, scale = x
    kinds = {k: [r for r in rows if r["kind"] == k] for k in ("train", "eval", "epoch")}
    epochs = kinds["epoch"]
    trained = kinds["train"] or epochs  # the training rows, else the epochs' means
    validated = [r for r in epochs if r["val_loss"] is not None]
    curves = [
        (trained, "train_loss", "--", "" if kinds["train"] else "o", "train"),
        (validated, "val_loss", "-", "o", "val"),
        (kinds["eval"], "val_loss", "none", "x", "eval"),
    ]
    for ax, to_y in zip(column, (perplexity, bits), strict=True):
        for points, field, line, marker, what in curves:
            if not points:
                continue
            xs = [_shown(r[field_x] / scale) for r in points]
            ys = [_shown(to_y(r[field])) if r[field] is not None else math.nan for r in points]
            ax.plot(xs, ys, color=colour, linestyle=line, marker=marker, markersize=3,
                    label=f"{label} {what}")  # fmt: skip


def _shown(value: float) -> float:
    """A value matplotlib can place; NaN (a gap in the line) for a diverged run's inf or 1e308."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) and abs(value) < 1e30 else math.nan
