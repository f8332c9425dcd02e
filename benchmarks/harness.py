"""How the benchmark measures and reports: matmul ceilings, side-by-side rounds, the table.

Every speed target is a ratio of two loops measured in the same process, alternating charlm and
its reference round by round (the median round counts), so a busy or slow machine moves both
sides together. FLOP/s columns compare a row's useful matmul work with the machine's own matmul
rate, measured before and after the rows (the better of the two counts: one busy second must
not make a row look faster than the machine).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class Row:
    """One line of the table. Ratio rows compare charlm with a reference; others a value."""

    name: str
    target: str  # e.g. ">= 3x", ">= 100 MB/s"
    charlm: float | None = None  # chars/s (or the row's unit)
    reference: float | None = None
    unit: str = "chars/s"
    ratio: float | None = None
    passed: bool | None = None
    gflops: float | None = None  # charlm's achieved GFLOP/s
    ref_gflops: float | None = None
    pct_peak: float | None = None  # charlm's GFLOP/s as % of its ceiling's matmul rate
    ceiling: str | None = None  # which matmul rate pct_peak compares with: a key of CEILINGS
    extra: dict = field(default_factory=dict)
    skipped: str | None = None


# --- measuring -------------------------------------------------------------------------------


CEILINGS = {  # name: (device, dtype, n) of the square matmul that measures it
    "cpu float32": ("cpu", torch.float32, 1024),
    "cpu bfloat16": ("cpu", torch.bfloat16, 1024),
    "cpu int8": ("cpu", torch.int8, 1024),  # torch._int_mm: int8 x int8 -> int32 (GOP/s)
    "cuda float32": ("cuda", torch.float32, 4096),
}
CPU_CEILINGS = ["cpu float32", "cpu bfloat16", "cpu int8"]


def matmul_rate(
    seconds: float = 1.0, n: int = 1024, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """GFLOP/s of a large square matmul: the ceiling the FLOP/s columns compare to."""
    if dtype == torch.int8:
        a, b = (torch.randint(-127, 128, (n, n), device=device, dtype=dtype) for _ in range(2))
        mm = torch._int_mm
    else:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        mm = torch.mm
    for _ in range(3):
        mm(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sync(device)
        t = time.perf_counter()
        for _ in range(5):
            mm(a, b)
        sync(device)
        best = max(best, 5 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def measure_ceilings(rates: dict[str, float], names: list[str], seconds: float) -> None:
    """Raise each named ceiling in `rates` to the best matmul rate measured so far."""
    for name in names:
        device, dtype, n = CEILINGS[name]
        rates[name] = max(rates.get(name, 0.0), matmul_rate(seconds, n, device, dtype))


def sync(device: str) -> None:
    """Wait for the GPU's queued work, so that a timer reads the work and not its launch."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def side_by_side(
    ours: Callable[[], float], ref: Callable[[], float], rounds: int
) -> tuple[float, float, float]:
    """Median charlm rate, median reference rate, median of the per-round ratios.

    With several rounds, one more goes first untimed, so that neither side pays the warm-up.
    """
    if rounds > 1:
        ours(), ref()
    a, b = [], []
    for _ in range(rounds):
        a.append(ours())
        b.append(ref())
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def ratio_row(
    name: str,
    ours: Callable[[], float],
    ref: Callable[[], float],
    target: float,
    flops_per_char: float,
    ceiling: str,
    rounds: int,
) -> Row:
    """A row that passes when charlm's rate is at least `target` times the reference's."""
    a, b, ratio = side_by_side(ours, ref, rounds)
    print(f"  {name}: {a:,.0f} vs {b:,.0f} chars/s = {ratio:.2f}x", flush=True)
    gf = a * flops_per_char / 1e9
    return Row(
        name=name,
        target=f">= {target:g}x",
        charlm=a,
        reference=b,
        ratio=ratio,
        passed=ratio >= target,
        gflops=gf,
        ref_gflops=b * flops_per_char / 1e9,
        ceiling=ceiling,
    )


def set_pct_peak(rows: list[Row], rates: dict[str, float]) -> None:
    """Each row's GFLOP/s as a share of its ceiling's best measured matmul rate."""
    for r in rows:
        if r.gflops is not None and r.ceiling is not None:
            r.pct_peak = 100 * r.gflops / rates[r.ceiling]


# --- output ----------------------------------------------------------------------------------


def fmt(x: float | None, unit: str = "") -> str:
    """A cell of the table in its row's unit."""
    if x is None:
        return "-"
    if unit == "s":
        return f"{x:.2f} s"
    if unit == "MB/s":
        return f"{x:.0f} MB/s"
    return f"{x:,.0f}"


def _cells(r: Row) -> tuple[str, ...]:
    if r.skipped:
        return (r.name, "-", "-", "-", r.target, "skip", "-", r.skipped)
    gf = "-" if r.gflops is None else f"{r.gflops:.1f}"
    if r.ref_gflops is not None:
        gf += f" ({r.ref_gflops:.1f})"
    return (
        r.name,
        fmt(r.charlm, r.unit),
        fmt(r.reference, r.unit),
        "-" if r.ratio is None else f"{r.ratio:.2f}x",
        r.target,
        "PASS" if r.passed else "FAIL",
        gf,
        "-" if r.pct_peak is None else f"{r.pct_peak:.0f}%",
    )


def grid(head: Sequence[str], lines: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Rows of cells as aligned text for the terminal, or as a Markdown table for RESULTS.md."""
    if markdown:
        return "\n".join(
            ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(line) + " |" for line in lines]
        )
    every = [head, *lines]
    widths = [max(len(line[i]) for line in every) for i in range(len(head))]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in every]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


def table(rows: list[Row], markdown: bool = False) -> str:
    """The speed rows as a table (`grid`)."""
    head = ("row", "charlm", "reference", "ratio", "target", "pass", "GFLOP/s (ref)", "% peak")
    return grid(head, [_cells(r) for r in rows], markdown)


def machine() -> dict:
    """What the numbers were measured on, and how busy it was at the start."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "loadavg": os.getloadavg(),
    }


def rates_line(rates: dict[str, float]) -> str:
    """The measured matmul ceilings on one line."""
    return ", ".join(f"{name} {gflops:.1f} GFLOP/s" for name, gflops in rates.items())


def json_default(x: object) -> str:
    """json.dumps's fallback: paths (the corpus) and anything else not JSON, as strings."""
    return str(x)
