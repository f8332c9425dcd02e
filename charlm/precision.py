"""Where a model runs (`--device`), and in what precision (`--amp`).

`--device` takes any device torch knows: `cpu`, `cuda`, `cuda:1`, `mps` (Apple silicon), `xpu`
(Intel GPUs), or another accelerator torch was built for; `auto` is the first CUDA device when
there is a GPU, else the CPU. A device that is not there is refused with the list of those that
are. (Under torchrun each process takes its local rank's device: distributed.init.)

`--amp auto` decides whether bfloat16 autocast pays on the device: bfloat16 halves the bytes of
every matmul operand, but only hardware that multiplies it natively turns that into speed: CUDA
GPUs that support it, and x86 CPUs with AVX512-BF16 or AMX. Elsewhere (and on devices where
charlm has measured nothing: mps, xpu, ...) autocast is left off, so `auto` turns it on only
where the hardware has it (the speed-up and the unchanged loss are measured in
benchmarks/RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from charlm.errors import CharLMError, flag

AMP_CHOICES = ("auto", "on", "off")
# /proc/cpuinfo flags of x86 CPUs that compute bfloat16 dot products natively
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# the device types a message spells out
DEVICE_NAMES = {"cuda": "CUDA", "mps": "MPS (Apple silicon)", "xpu": "XPU (Intel GPU)"}


def resolve_device(name: str) -> torch.device:
    """--device: auto picks CUDA when there is a GPU; a device that is not here is an error
    that names those that are."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CharLMError(
            f"{flag('device', name)} is not a device torch knows (available here: {here})"
        ) from None
    count = _device_count(device.type)
    if (device.index is None and count) or (device.index is not None and device.index < count):
        return device
    kind = DEVICE_NAMES.get(device.type, device.type)
    has = f"{count} {kind} device{'s' if count != 1 else ''}" if count else f"no {kind} device"
    raise CharLMError(f"{flag('device', name)} is not available: this machine has {has} "
                      f"(available here: {here})")  # fmt: skip


def available_devices() -> list[str]:
    """The devices this machine has, as --device names them: cpu, then each accelerator's."""
    names = ["cpu"]
    for kind in ("cuda", "mps", "xpu", _other_accelerator()):
        count = _device_count(kind) if kind else 0
        names += [kind] if kind == "mps" and count else [f"{kind}:{i}" for i in range(count)]
    return names


def _device_count(kind: str) -> int:
    """How many devices of a type torch can use here (0: none, or a type torch lacks)."""
    if kind == "cpu":
        return 1
    if kind == "cuda":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "mps":
        return int(torch.backends.mps.is_available())
    if kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        return xpu.device_count() if xpu is not None and xpu.is_available() else 0
    if kind and kind == _other_accelerator():
        return torch.accelerator.device_count()
    return 0


def _other_accelerator() -> str:
    """An accelerator of another type torch was built for (torch.accelerator), else ''."""
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is None or not accelerator.is_available():
        return ""
    kind = accelerator.current_accelerator().type
    return "" if kind in ("cpu", "cuda", "mps", "xpu") else kind


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
        with torch.cuda.device(device):  # cuda:1 asks about that GPU, not the current one
            native = torch.cuda.is_bf16_supported()
        if native:
            return True, f"--amp auto: {torch.cuda.get_device_name(device)} has bfloat16"
        return False, "--amp auto: no bfloat16 on this GPU"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            return True, f"--amp auto: CPU has {', '.join(flags)}"
        return False, "--amp auto: CPU lacks AVX512-BF16 and AMX"
    return False, f"--amp auto: no bfloat16 speed-up known on {device.type}"
