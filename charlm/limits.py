"""The limits a process lives under, as the bytes each still leaves: every one of them, since
the first one reached ends the process (an allocator traceback, `std::bad_alloc`, a
`MemoryError` in the middle of an import, or the kernel's OOM killer).

    memory available    MemAvailable of /proc/meminfo: what the system can give without
                        swapping
    the container's     cgroup v2 memory.max - memory.current (or v1's limit - usage)
    address space       RLIMIT_AS (`ulimit -v`) less what the process has mapped (VmSize): a
                        limit on reservations, not on use (each thread's stack counts whole)

Plain numbers and no charlm imports: threads.py, low in the stack, checks its threads here,
and resources.py its estimates (which name the limit that binds).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

try:
    import resource
except ImportError:  # Windows: no rlimits
    resource = None  # type: ignore[assignment]

MEMORY, CONTAINER, ADDRESS_SPACE = (
    "memory available",
    "the container's memory limit",
    "the address-space limit, ulimit -v",
)
ARENA_BYTES = 64 << 20  # address space glibc reserves for each malloc arena (64-bit)
ARENAS_PER_CORE = 8  # glibc's cap on arenas: 8 per core


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _memory_available() -> int | None:
    found = re.search(r"^MemAvailable:\s+(\d+) kB", _read("/proc/meminfo") or "", re.M)
    return int(found[1]) * 1024 if found else None


def _container_left() -> int | None:
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            return int(_read(limit) or "") - int(_read(usage) or "")
        except ValueError:  # absent, or "max": no limit there
            continue
    return None


def address_space_left() -> int | None:
    """What RLIMIT_AS still leaves this process to map (None: no such limit)."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped = re.search(r"^VmSize:\s+(\d+) kB", _read("/proc/self/status") or "", re.M)
    return soft - (int(mapped[1]) * 1024 if mapped else 0)


def memory_left() -> dict[str, int]:
    """The bytes each limit known here still leaves, by its name (absent: no such limit)."""
    found = {
        MEMORY: _memory_available(),
        CONTAINER: _container_left(),
        ADDRESS_SPACE: address_space_left(),
    }
    return {name: max(0, left) for name, left in found.items() if left is not None}


def thread_bytes(threads: int) -> int:
    """The address space `threads` threads reserve: a stack each (RLIMIT_STACK, as glibc
    sizes a new thread's), and a malloc arena each, up to glibc's cap of 8 per core."""
    stack = resource.getrlimit(resource.RLIMIT_STACK)[0] if resource is not None else -1
    if resource is None or stack == resource.RLIM_INFINITY or stack <= 0:
        stack = 8 << 20  # glibc's default then
    arenas = min(threads, ARENAS_PER_CORE * (os.cpu_count() or 1))
    return threads * stack + arenas * ARENA_BYTES
