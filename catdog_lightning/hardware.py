"""What this machine computes fast, so a recipe's ``auto`` precision is chosen before any work starts.

bf16 pays only where the hardware multiplies in it: x86 CPUs with AVX512-BF16 or AMX, Arm CPUs with BF16,
GPUs that report bf16 support. Elsewhere PyTorch emulates it, many times slower than fp32 (the figures are in
docs/performance.md), so ``auto`` means bf16 there and fp32 everywhere else, and an explicit bf16 on such a
machine is warned about before the work, not after.
"""

from __future__ import annotations

import os
from pathlib import Path

# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) below the first one with bf16 dot products: capped there, PyTorch's
# CPU kernels emulate bf16 whatever the processor has.
_ONEDNN_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX512-BF16, AMX) and Arm (Features: ... bf16)


def cpu_has_fast_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes in bf16 natively; None where it cannot be told (no /proc/cpuinfo)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_WITHOUT_BF16:
        return False
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags = {f for line in text.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}
    return bool(flags & _BF16_FLAGS)


def device_type(accelerator: object = "auto") -> str:
    """The device a Trainer with this ``accelerator`` setting trains on: cuda, mps or cpu."""
    import torch

    name = str(accelerator or "auto").lower()
    if name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available()):
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if name == "mps" or (name == "auto" and mps is not None and mps.is_available()):
        return "mps"
    return "cpu"


def fast_bf16(device: str, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether bf16 is faster than fp32 on ``device`` (cuda/mps/cpu); unknown counts as no."""
    if device == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        return bool(cpu_has_fast_bf16(cpuinfo))
    return False


def why(device: str, fast: bool) -> str:
    """Words for the reason behind a choice: what the device has or lacks."""
    if device == "cpu":
        return "this CPU has bf16 instructions (AVX512-BF16/AMX)" if fast else "this CPU has no bf16 instructions"
    return f"this {device.upper()} computes bf16 natively" if fast else f"this {device.upper()} has no fast bf16"


def resolve_trainer_precision(precision: object, accelerator: object = "auto", cpuinfo: str = "/proc/cpuinfo"):
    """``(precision for lightning.Trainer, the line to print or None)``: ``auto`` becomes ``bf16-mixed`` where
    bf16 is fast and ``32-true`` elsewhere; an explicit bf16 where it is emulated keeps its value, with a warning."""
    device = device_type(accelerator)
    fast = fast_bf16(device, cpuinfo)
    if str(precision) == "auto":
        chosen = "bf16-mixed" if fast else "32-true"
        other = "32-true" if fast else "bf16-mixed"
        return chosen, f"Precision: auto -> {chosen} ({why(device, fast)}; --trainer.precision {other} to force)."
    if str(precision).startswith("bf16") and device == "cpu" and cpu_has_fast_bf16(cpuinfo) is False:
        return precision, (
            f"Note: --trainer.precision {precision} on a CPU without bf16 instructions (AVX512-BF16/AMX) is "
            "emulated and many times slower than fp32 here: --trainer.precision auto (or 32-true) trains faster."
        )
    return precision, None


def resolve_feature_precision(precision: str, device: str = "cpu", cpuinfo: str = "/proc/cpuinfo"):
    """``("32" or "bf16", the line to print or None)`` for a frozen backbone's one pass over every photo."""
    fast = fast_bf16(device, cpuinfo)
    if precision == "auto":
        chosen = "bf16" if fast else "32"
        other = "32" if fast else "bf16"
        flag = "--model.net.init_args.feature_precision"
        line = f"Feature precision: auto -> {chosen} ({why(device, fast)}; {flag} {other} to force)."
        return chosen, line
    if precision == "bf16" and device == "cpu" and cpu_has_fast_bf16(cpuinfo) is False:
        return precision, (
            "Note: --model.net.init_args.feature_precision bf16 on a CPU without bf16 instructions (AVX512-BF16/AMX) "
            "is emulated and many times slower than fp32 here: --model.net.init_args.feature_precision auto (or 32) is "
            "faster."
        )
    return precision, None


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> str:
    """``Intel(R) Xeon(R) Processor (family 6 model 207), 2 cores, bf16: avx512_bf16`` (or ``bf16: none``): what a
    time was measured on, for the docs that quote it. Family and model tell apart CPUs that a virtual machine gives
    one generic name."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return f"{os.cpu_count() or '?'} cores"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    bf16 = " ".join(sorted(flags & _BF16_FLAGS)) or "none"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = f" (family {fields['cpu family']} model {fields['model']})" if "cpu family" in fields else ""
    return f"{fields.get('model name', 'unknown CPU')}{model}, {cores} cores, bf16: {bf16}"
