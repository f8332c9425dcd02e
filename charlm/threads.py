"""CPU threads: how many torch uses, and how its idle OpenMP threads wait.

torch runs its CPU kernels on an OpenMP team (GNU libgomp). Between two parallel regions an idle
team thread spins, by default for a long while, before it sleeps. That is fast on an idle
machine and ruinous on a busy one: when another process holds one of the cores, the team's
threads burn their time slices spinning while the thread with work waits for a core. On 2 cores
next to one busy process, 2 threads trained 10x slower than 1 (benchmarks/RESULTS.md).

With OMP_WAIT_POLICY=PASSIVE idle threads sleep at once, and 2 threads under load cost about
what 1 does. libgomp reads the variable once, when torch is first imported, so charlm sets it
on import (before torch, unless the user has set it, or imported torch first).
"""

from __future__ import annotations

import os
import sys

from charlm.errors import CharLMError

MAX_THREADS = 1024


def wait_passively() -> None:
    """Let idle OpenMP threads sleep instead of spin; only has an effect before torch loads."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def check_threads(n: int) -> None:
    if not 0 <= n <= MAX_THREADS:
        raise CharLMError(f"--threads must be between 0 (auto) and {MAX_THREADS}, got {n}")


def use_threads(n: int) -> int:
    """Run torch's CPU work on `n` threads (0: torch's default, one per core); the count used."""
    import torch

    check_threads(n)
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
