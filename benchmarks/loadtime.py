"""Time one corpus load in a fresh process and report its peak memory, as one JSON line.

    python -m benchmarks.loadtime corpus FILE     # charlm.load_corpus(FILE)
    python -m benchmarks.loadtime inputs FOLDER   # charlm.inputs.load_inputs([FOLDER])

A fresh process, so that the peak RSS is the load's own (torch's import included, reported
apart as rss_before_mb) and the cache named by $CHARLM_CACHE is the only one it can find.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout whose charlm the child imports


def peak_mb() -> float:
    """This process's own peak RSS in MB."""
    # VmHWM: this process's own peak RSS. ru_maxrss would also count the parent's RSS at fork
    # time, which Linux carries across exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(kind: str, path: Path, cache: Path) -> dict:
    """This module run on `path` in a fresh process with `cache` as $CHARLM_CACHE: its report,
    or infinite time and memory with the child's last error line (e.g. killed for memory)."""
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadtime", kind, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "CHARLM_CACHE": str(cache), "PYTHONPATH": pythonpath},
    )
    if out.returncode != 0:  # a failed row, not a failed benchmark
        tail = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        return {"seconds": math.inf, "peak_rss_mb": math.inf, "error": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(kind: str, path: str) -> None:
    """Load `path` as a corpus file or a folder of inputs and print the report."""
    if kind == "corpus":
        from charlm.inputs import load_corpus

        before, t = peak_mb(), time.perf_counter()
        corpus = load_corpus(path)
        report = {"vocab": len(corpus.vocab)}
    else:
        from charlm.inputs import load_inputs

        before, t = peak_mb(), time.perf_counter()
        corpus = load_inputs([path])
        report = {"documents": len(corpus.inputs), "memmap": type(corpus.ids).__name__ == "memmap"}
    seconds = time.perf_counter() - t
    report |= {"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak_mb(),
               "chars": len(corpus.ids)}  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=("corpus", "inputs"))
    ap.add_argument("path")
    args = ap.parse_args()
    main(args.kind, args.path)
