"""What a request needs in memory, estimated and checked before anything is allocated.

A model a thousand times too large, a million samples at once, an evaluation window of a
hundred million characters or a figure of a billion pixels would otherwise grow until the
process meets a limit (an allocator traceback, `std::bad_alloc`, a MemoryError, the OOM killer)
after creating files. Estimates are rough upper bounds of the big buffers, compared against
every limit the process lives under (limits.py: memory available, the container's limit, the
address space `ulimit -v` leaves; on CUDA, free device memory); the message names the one that
binds. torch is imported only to ask a GPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charlm.errors import CharLMError, flag
from charlm.limits import memory_left

if TYPE_CHECKING:
    import torch

FLOAT = 4  # bytes of a float32
LONG = 8  # bytes of an int64 or a float64
# memory per generated character `generate` holds: its id, twice while the blocks are joined
# (16), and its text, up to 4 bytes a character, twice while the prefix is joined (8); and per
# character of the one sample being turned into text: its code points, their bytes, the text
DECODE_BYTES = 16
TEXT_BYTES = 2 * LONG + 2 * 4
FIGURE_SIDE_MAX = 2**16 - 1  # pixels a side matplotlib's Agg renderer draws at most
PIXEL_BYTES = 3 * 4  # RGBA, in the renderer's buffer, the copy it saves, the encoder's rows


def available_bytes(device: torch.device | None) -> int | None:
    """Memory a request may take on `device` (None: the CPU; the answer None: unknown)."""
    if device is not None and device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    if device is not None and device.type != "cpu":
        return None
    left = memory_left()
    return min(left.values()) if left else None


def _binding(free: int) -> str:
    """The limit that leaves `free` bytes, as a message names it ('' on a GPU, or unknown)."""
    names = [name for name, left in memory_left().items() if left == free]
    return f" ({names[0]})" if names else ""


def _size(n: float) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.0f} MB"


def check_fits(need: float, what: str, device: torch.device | None, hint: str = "") -> None:
    """Refuse a request of `need` bytes that cannot fit, saying what asked for it and which
    limit it meets."""
    free = available_bytes(device)
    if free is not None and need > free:
        kind = "cpu" if device is None else device.type
        where = _binding(free) if kind == "cpu" else ""
        raise CharLMError(
            f"{what} needs about {_size(need)} of memory, and {_size(free)} is available "
            f"on this {kind}{where}" + (f"; {hint}" if hint else "")
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


def scoring_bytes(window_chars: int, width: int, params: int, learns: bool) -> float:
    """Scoring windows of `window_chars` characters in all (--seq-len x streams): their ids
    and positions, and per character `width` floats (the embedding, every layer's gates and
    states, the logits, their log-softmax); learning from them (--dynamic) keeps the
    activations for the backward pass and a copy of the weights with its gradients."""
    per_char = 4 * LONG + FLOAT * width
    if not learns:
        return window_chars * per_char
    return 3 * window_chars * per_char + 4 * FLOAT * params


def held_bytes(length: int, samples: int) -> float:
    """Several samples held until the end (see TEXT_BYTES and DECODE_BYTES)."""
    return TEXT_BYTES * length * samples + DECODE_BYTES * length


def check_figure(width_in: float, height_in: float, dpi: Any) -> None:
    """Refuse a figure of `width_in` x `height_in` inches at `dpi` that the renderer cannot
    draw (a side past FIGURE_SIDE_MAX pixels) or memory cannot hold, naming --dpi."""
    if isinstance(dpi, bool) or not isinstance(dpi, int | float) or not 0 < dpi < 1e6:
        raise CharLMError(f"{flag('dpi')} must be a number of dots per inch > 0, got {dpi!r}")
    wide, high = round(width_in * dpi), round(height_in * dpi)
    if max(wide, high) > FIGURE_SIDE_MAX:
        most = int(FIGURE_SIDE_MAX / max(width_in, height_in))
        raise CharLMError(
            f"{flag('dpi', f'{dpi:g}')} makes an image of {wide:,} x {high:,} pixels, and one "
            f"side can have at most {FIGURE_SIDE_MAX:,}: use {flag('dpi', most)} or less"
        )
    check_fits(PIXEL_BYTES * wide * high, f"a figure at {flag('dpi', f'{dpi:g}')}", None)


def parameters(cfg: object) -> int:
    """Parameters of a model config, counted on the meta device (no memory)."""
    import torch

    from charlm.model import CharLM

    with torch.device("meta"):
        return sum(p.numel() for p in CharLM(cfg).parameters())
