"""Which precision the hardware can run fast: the CPU's ISA (AVX512-BF16, AMX, VNNI) read from the kernel, and the
choice ``--precision auto`` makes from it, with the reason in words."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

__all__ = ["BF16_FLAGS", "choose_precision", "cpu_flags"]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # bfloat16 matrix hardware: oneDNN's bf16 kernels run fast only with one


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def choose_precision(requested: str, device_type: str) -> tuple[str, str]:
    """(precision, why). ``auto`` on a CPU takes bfloat16 where the CPU has bfloat16 matrix hardware (AMX or
    AVX512-BF16: measured 1.3-4.2x float32 with patch-score rank agreement 0.999 on real slides, docs/benchmarks.md),
    else float32; on a GPU float32 (no GPU run has measured the others yet). bfloat16 asked of a CPU without that
    hardware is kept, with a warning: it runs about 3.7x slower than float32 there."""
    flags = cpu_flags()
    has_bf16 = any(f in flags for f in BF16_FLAGS)
    if requested == "auto":
        if device_type != "cpu":
            return "float32", f"auto on {device_type}: float32, the authors' precision (the others unmeasured there)"
        if has_bf16:
            return "bfloat16", ("auto: bfloat16 weights, this CPU has bfloat16 matrix hardware "
                                f"({', '.join(f for f in BF16_FLAGS if f in flags)}); rank agreement with float32 "
                                "0.999 on real slides")
        return "float32", ("auto: float32, this CPU has no bfloat16 matrix hardware (AMX or AVX512-BF16), where "
                           "bfloat16 measured 3.7x slower")
    if requested == "bfloat16" and device_type == "cpu" and flags and not has_bf16:
        warnings.warn("bfloat16 on this CPU: it has no bfloat16 matrix hardware (AMX or AVX512-BF16), and bfloat16 "
                      "measured about 3.7x slower than float32 on such a CPU; use float32 (or --precision auto)",
                      UserWarning, stacklevel=3)
    return requested, f"{requested}, as asked"
