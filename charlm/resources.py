"""What a request needs in memory, estimated and checked before anything is allocated.

A model a thousand times too large, or a million samples at once, would otherwise grow until
the machine runs out (or die in an allocator traceback after creating files). Estimates are
rough upper bounds of the big buffers; available memory is what the system reports (on CPU:
MemAvailable, or the container's limit if lower; on CUDA: free device memory).
"""

from __future__ import annotations

from pathlib import Path

import torch

from charlm.errors import CharLMError

FLOAT = 4  # bytes of a float32
TEXT_BYTES = 16  # memory per generated character held by `generate`: its id, then its text
LONG = 8  # bytes of an int64 or a float64


def available_bytes(device: torch.device) -> int | None:
    """Memory a request may take on `device` (None: unknown, no check)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            found.append(int(Path(limit).read_text()) - int(Path(usage).read_text()))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def _size(n: float) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.0f} MB"


def check_fits(need: float, what: str, device: torch.device, hint: str = "") -> None:
    """Refuse a request of `need` bytes that cannot fit, saying what asked for it."""
    free = available_bytes(device)
    if free is not None and need > free:
        raise CharLMError(
            f"{what} needs about {_size(need)} of memory, and {_size(free)} is available "
            f"on this {device.type}" + (f"; {hint}" if hint else "")
        )


def training_bytes(params: int, optimizer: str, seq_len: int, batch: int, width: int) -> float:
    """Weights, gradients and optimizer state, plus activations of one batch (`width`: the
    floats a step keeps per character: every layer's gates and states, and the logits)."""
    states = 0 if optimizer == "sgd" else 2  # Adam's two moments
    return FLOAT * (params * (2 + states) + 3 * seq_len * batch * width)


def sampling_bytes(samples: int, vocab: int, width: int, noise_steps: int) -> float:
    """The sampler's buffers for `samples` streams: pre-drawn noise, logits, states."""
    return FLOAT * samples * (vocab * (noise_steps + 3) + 3 * width)


def beam_bytes(width: int, vocab: int, state: int, length: int) -> float:
    """A beam search's buffers: the stepper's for `width` streams, a step's float64 candidates
    and their sort, and the kept ids of every step (traced back at the end)."""
    return FLOAT * width * (3 * vocab + 3 * state) + LONG * width * (5 * vocab + length)


def parameters(cfg: object) -> int:
    """Parameters of a model config, counted on the meta device (no memory)."""
    from charlm.model import CharLM

    with torch.device("meta"):
        return sum(p.numel() for p in CharLM(cfg).parameters())
