"""Where a model runs (`--device`), and in what precision (`--amp`).

`--device auto` is CUDA when there is a GPU, else the CPU. `--amp auto` decides whether
bfloat16 autocast pays on this machine.

bfloat16 halves the bytes of every matmul operand, but only hardware that multiplies it
natively turns that into speed: CUDA GPUs that support it, and x86 CPUs with AVX512-BF16 or
AMX. Elsewhere autocast emulates it and training gets slower, so `auto` turns it on only where
the hardware has it (the speed-up and the unchanged loss are measured in benchmarks/RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from charlm.errors import CharLMError

AMP_CHOICES = ("auto", "on", "off")
# /proc/cpuinfo flags of x86 CPUs that compute bfloat16 dot products natively
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_device(name: str) -> torch.device:
    """--device: auto picks CUDA when there is a GPU; cuda without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharLMError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The bfloat16 flags of the CPU (read from /proc/cpuinfo unless given); [] if unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:  # not Linux: no way to tell without private torch calls, so "no"
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return [f for f in BF16_CPU_FLAGS if f in flags]


def resolve_amp(setting: str | bool, device: torch.device) -> tuple[bool, str]:
    """(autocast on?, why) for an --amp setting; `auto` decides from the hardware."""
    if isinstance(setting, bool):  # configs and checkpoints written before auto existed
        setting = "on" if setting else "off"
    if setting != "auto":
        return setting == "on", f"--amp {setting}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return True, f"--amp auto: {torch.cuda.get_device_name(device)} has bfloat16"
        return False, "--amp auto: no bfloat16 on this GPU"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            return True, f"--amp auto: CPU has {', '.join(flags)}"
        return False, "--amp auto: CPU lacks AVX512-BF16 and AMX"
    return False, f"--amp auto: no bfloat16 speed-up known on {device.type}"
