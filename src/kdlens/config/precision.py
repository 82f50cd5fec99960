"""``precision: auto | fp32 | bf16`` — bfloat16 only where the hardware computes it natively.

bf16 autocast is fast only on CPUs with native bf16 (AVX-512-BF16 or AMX) and on GPUs that
support it.  Measured on an AVX2-only CPU (issue 14, one thread, same process): thesis
student fp32 1,236 img/s vs channels-last + bf16 266 (0.22×), resnet20 140 vs 15 (0.11×).
So ``auto`` (the default) means bf16 on such hardware and fp32 everywhere else, and the run
log says which and why.  torch is imported only when a precision is resolved.
"""

from __future__ import annotations

from functools import lru_cache

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags of this CPU (``/proc/cpuinfo``; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ()
    return tuple(flag for flag in NATIVE_CPU_FLAGS if flag in flags)


def resolve_precision(precision: str, device: str = "auto") -> tuple[bool, str]:
    """``(use_bf16, reason)`` for ``precision`` on ``device`` (``auto`` | ``cpu`` | ``cuda[:N]``)."""
    if precision == "bf16":
        return True, "bf16 (as configured)"
    if precision == "fp32":
        return False, "fp32 (as configured)"
    import torch

    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_gpu:
        native = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return native, f"{'bf16' if native else 'fp32'} (auto: the GPU {'computes' if native else 'lacks'} bf16 natively)"
    flags = cpu_bf16_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    if flags:
        return True, f"bf16 (auto: CPU {capability} with {', '.join(flags)})"
    return False, f"fp32 (auto: CPU {capability} has no native bf16, where bf16 autocast ran 0.1–0.2× fp32)"
