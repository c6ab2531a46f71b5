"""Shared helpers for the benchmarks: machine description, medians, JSON results and docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def drop_caches() -> bool:
    """Drop the page cache (for cold rounds); False where this process may not (not root, not Linux)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def machine() -> dict:
    import torch

    from napari_anonavila.provenance import package_versions

    return {"date": dt.date.today().isoformat(), **cpu_identity(), "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_threads": torch.get_num_threads(), "torch_cpu_capability": _torch_capability(),
            "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "versions": package_versions()}


def host_line(m: dict) -> str:
    """The date and the machine as every section of docs/benchmarks.md names it: the CPU's model string, its
    family/model/stepping and ISA flags (hosts with one model string differ in these), and the cores."""
    ident = f"{m['cpu_family_model']}; {', '.join(m['isa_flags']) or 'no listed ISA flags'}"
    return f"{m['date']}, {m['cpu']} ({ident}), {m['cores']} cores"


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8")


def cpu_identity() -> dict:
    """The CPU by model string, family/model/stepping and the ISA flags that decide the precisions' speed: hosts
    with one model string differ in these (Ice Lake has VNNI but no AVX512-BF16 or AMX)."""
    out = {"cpu": platform.processor() or platform.machine(), "cpu_family_model": None, "isa_flags": []}
    try:
        info: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = (t.strip() for t in line.split(":", 1))
                info.setdefault(k, v)
            elif info:
                break  # the first processor's block
        out["cpu"] = info.get("model name", out["cpu"])
        out["cpu_family_model"] = f"{info.get('cpu family')}/{info.get('model')}/{info.get('stepping')}"
        flags = set(info.get("flags", "").split())
        out["isa_flags"] = [f for f in ISA_FLAGS if f in flags]
    except OSError:
        pass
    return out


def _torch_capability() -> str | None:
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def peak_rss_mib() -> float:
    """This process's high-water RSS in MiB (VmHWM: its own; ru_maxrss carries the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def save(name: str, result: dict, summary_md: str) -> None:
    """Write bench/results/NAME.json and replace this benchmark's section of docs/benchmarks.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{begin}\n{summary_md.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda m: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(summary_md)
