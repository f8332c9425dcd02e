"""Prepare a folder of many files: throughput and peak memory of `load_inputs(folder)`.

    python -m benchmarks.folder_prepare                      # 1,000 files, ~1 GB in all
    python -m benchmarks.folder_prepare --files 200 --total-mb 100

Writes nested text files (10 folders; sizes from 0.2x to 1.8x the mean, so the largest file
sets the read buffer, not the total) under a temporary folder in /tmp, prepares them in a fresh
process with an empty encoded cache (the first call: walk, sniff, two passes, write the
memmap), then again (the second call: the cache is found), prints a table, and deletes it all.
Target: >= 100 MB/s and peak RSS < 1.5 GB for the first call.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.loadtime import in_child


def seed_text() -> bytes:
    """Tiny Shakespeare when $CHARLM_DATA has it, else Python's help topics (always there)."""
    data = os.environ.get("CHARLM_DATA")
    path = Path(data) / "tinyshakespeare.txt" if data else None
    if path is not None and path.is_file():
        return path.read_bytes()
    from charlm.builtin import builtin_text

    return builtin_text().encode("utf-8")


def make_folder(folder: Path, files: int, total: int, seed: bytes) -> tuple[int, int]:
    """`files` files in 10 sub-folders adding up to `total` bytes; (bytes, largest file)."""
    mean = total // files
    written = largest = 0
    for k in range(files):
        size = mean + mean * 9 * (k % 19 - 9) // 100 if k < files - 1 else total - written
        sub = folder / f"part{k % 10:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        with open(sub / f"doc{k:05d}.txt", "wb") as f:
            left = size
            while left:
                piece = seed[: min(left, len(seed))]
                f.write(piece)
                left -= len(piece)
        written += size
        largest = max(largest, size)
    return written, largest


def prepare_in_child(folder: Path, cache: Path) -> dict:
    """load_inputs([folder]) in a fresh process with `cache` as $CHARLM_CACHE: its report."""
    report = in_child("inputs", folder, cache)
    if "error" in report:
        sys.exit(f"the child failed: {report['error']}")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--total-mb", type=int, default=1000)
    ap.add_argument("--work", default="/tmp", help="where the temporary folder is made")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="charlm-folder-bench-", dir=args.work))
    try:
        total, largest = make_folder(work / "data", args.files, args.total_mb * 10**6, seed_text())
        first = prepare_in_child(work / "data", work / "cache")
        second = prepare_in_child(work / "data", work / "cache")
    finally:
        shutil.rmtree(work)
    mb = total / 1e6
    rows = [
        ("first call (encode, write cache)", first, ">= 100 MB/s, peak RSS < 1.5 GB"),
        ("second call (cache found)", second, "-"),
    ]
    print(f"{args.files:,} files, {mb:,.0f} MB in all, largest {largest / 1e6:.2f} MB\n")
    print("| call | documents | seconds | MB/s | peak RSS (RSS after imports) | target | result |")
    print("|---|---|---|---|---|---|---|")
    for name, r, target in rows:
        rate = mb / r["seconds"]
        ok = rate >= 100 and r["peak_rss_mb"] < 1536 if target != "-" else None
        verdict = "-" if ok is None else "PASS" if ok else "FAIL"
        print(
            f"| {name} | {r['documents']:,} | {r['seconds']:.2f} | {rate:,.0f} | "
            f"{r['peak_rss_mb']:,.0f} MB ({r['rss_before_mb']:,.0f} MB) | {target} | {verdict} |"
        )
    assert first["chars"] >= total and first["memmap"], first


if __name__ == "__main__":
    main()
