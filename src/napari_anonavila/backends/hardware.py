"""Which precision the hardware can run fast: the CPU's ISA (AVX512-BF16, AMX, VNNI) read from the kernel, and the
choice ``--precision auto`` makes from it, with the reason in words."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

__all__ = ["BF16_FLAGS", "INT8_FLAGS", "choose_precision", "cpu_flags"]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # bfloat16 matrix hardware: oneDNN's bf16 kernels run fast only with one
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")  # int8 dot-product hardware (VNNI, AMX): int8 GEMMs pay there
# int8 (the image tower's linear layers and the attention's input projection, dynamic): the encoder with the linear
# layers only 1.33x float32 on a VNNI CPU without bfloat16 (Ice Lake); 1.60x end to end on an AMX one; against
# float32 on three real slides Spearman 0.998-0.999, top-10 10/10, slide scores within 1.3% (docs/benchmarks.md),
# inside the bound auto requires of a mode (Spearman >= 0.995, top-10 >= 9/10, slide scores within 2%). auto takes it
# only without bfloat16 hardware, with VNNI or AMX.
INT8_AGREEMENT = "patch-score Spearman 0.998-0.999 and top-10 10/10 against float32 on three real slides"


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
    else int8 where it has int8 dot products (VNNI or AMX: 1.33x, agreement ``INT8_AGREEMENT``), else float32; on a
    GPU float32 (no GPU run has measured the others yet). bfloat16 asked of a CPU without that hardware is kept, with
    a warning: it runs about 3.7x slower than float32 there; int8 without VNNI likewise."""
    if requested == "int8" and device_type != "cpu":
        raise ValueError(f"int8 runs on a CPU only (dynamic quantisation of the image tower's linear layers); on "
                         f"{device_type} use float16, bfloat16 or float32")
    flags = cpu_flags()
    has_bf16 = any(f in flags for f in BF16_FLAGS)
    int8 = any(f in flags for f in INT8_FLAGS)
    if requested == "auto" and int8:
        from .quantise import int8_available

        int8 = int8_available()
    if requested == "auto":
        if device_type != "cpu":
            return "float32", f"auto on {device_type}: float32, the authors' precision (the others unmeasured there)"
        if has_bf16:
            return "bfloat16", ("auto: bfloat16 weights, this CPU has bfloat16 matrix hardware "
                                f"({', '.join(f for f in BF16_FLAGS if f in flags)}); rank agreement with float32 "
                                "0.999 on real slides")
        if int8:
            return "int8", ("auto: int8 image tower, this CPU has int8 dot-product hardware "
                            f"({', '.join(f for f in INT8_FLAGS if f in flags)}) but no bfloat16 matrix hardware "
                            f"(bfloat16 measured 3.7x slower there, the int8 encoder 1.33x faster); {INT8_AGREEMENT}")
        return "float32", ("auto: float32, this CPU has neither bfloat16 matrix hardware (AMX or AVX512-BF16), where "
                           "bfloat16 measured 3.7x slower, nor int8 dot products (VNNI)")
    if requested == "bfloat16" and device_type == "cpu" and flags and not has_bf16:
        warnings.warn("bfloat16 on this CPU: it has no bfloat16 matrix hardware (AMX or AVX512-BF16), and bfloat16 "
                      "measured about 3.7x slower than float32 on such a CPU; use float32 (or --precision auto)",
                      UserWarning, stacklevel=3)
    if requested == "int8" and device_type == "cpu" and flags and not int8:
        warnings.warn("int8 on this CPU: it has no int8 dot-product hardware (VNNI or AMX), where int8 is unmeasured "
                      "and may be no faster than float32", UserWarning, stacklevel=3)
    return requested, f"{requested}, as asked"
