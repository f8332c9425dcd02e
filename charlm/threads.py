"""CPU threads: how many torch uses, and how its idle OpenMP threads wait.

torch runs its CPU kernels on an OpenMP team (GNU libgomp). Between two parallel regions an idle
team thread spins, by default for a long while, before it sleeps. That is fast on an idle
machine and ruinous on a busy one: when another process holds one of the cores, the team's
threads burn their time slices spinning while the thread with work waits for a core. On 2 cores
next to one busy process, 2 threads trained 10x slower than 1 (benchmarks/RESULTS.md).

With OMP_WAIT_POLICY=PASSIVE idle threads sleep at once, and 2 threads under load cost about
what 1 does; on an idle machine, though, sleeping costs a quarter of the speed (the default
model's step runs hundreds of short parallel pieces, and each wakes the team). So charlm looks,
on import, at what else is running right now: libgomp's spinning default when every core is
free for torch's threads, PASSIVE otherwise. libgomp reads the policy once, when torch is first
imported, so this happens before torch loads (unless the user has set OMP_WAIT_POLICY or
GOMP_SPINCOUNT, or imported torch first).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from charlm.errors import CharLMError, brief, flag
from charlm.limits import address_space_left, thread_bytes

MAX_THREADS = 1024


def others_running(reads: int = 5) -> int | None:
    """Other tasks running or waiting for a core now (Linux's /proc/loadavg counts them with
    this one): the median of a few reads 2 ms apart; None where it cannot be read."""
    seen = []
    try:
        for _ in range(reads):
            with open("/proc/loadavg") as f:
                seen.append(int(f.read().split()[3].split("/")[0]) - 1)
            time.sleep(0.002)
    except (OSError, ValueError, IndexError):
        return None
    return int(statistics.median(seen))


def wait_policy(others: int | None, cores: int, threads: int) -> str | None:
    """PASSIVE unless `threads` fit on the cores the `others` leave free (None: unknown)."""
    return None if others is not None and others + threads <= cores else "PASSIVE"


def choose_wait_policy() -> None:
    """Spin (libgomp's default) on a free machine, sleep on a busy one; before torch loads."""
    chosen = {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & os.environ.keys()
    if "torch" in sys.modules or chosen:
        return
    cores = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(omp) if omp.isdigit() and int(omp) > 0 else cores
    policy = wait_policy(others_running(), cores, threads)
    if policy:
        os.environ["OMP_WAIT_POLICY"] = policy


def check_threads(n: int) -> None:
    if not 0 <= n <= MAX_THREADS:
        raise CharLMError(
            f"{flag('threads')} must be between 0 (auto) and {MAX_THREADS}, got {brief(n)}"
        )


def use_threads(n: int) -> int:
    """Run torch's CPU work on `n` threads (0: torch's default, one per core); the count used."""
    import torch

    check_threads(n)
    if n:
        check_thread_space(n, torch.get_num_threads())
        torch.set_num_threads(n)
    return torch.get_num_threads()


def check_thread_space(n: int, running: int) -> None:
    """Refuse threads whose stacks and malloc arenas the address-space limit (`ulimit -v`)
    cannot hold: past it, thread creation aborts the process, or an import fails later with
    a MemoryError."""
    need, left = thread_bytes(n) - thread_bytes(running), address_space_left()
    if left is not None and need > left:
        raise CharLMError(
            f"{flag('threads', n)} would reserve about {need / 2**30:.1f} GB of address space for "
            f"its threads, and the address-space limit (ulimit -v) leaves {left / 2**30:.1f} GB: "
            f"use fewer threads (0: one per core)"
        )
