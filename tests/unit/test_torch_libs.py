"""torch's libraries loaded with the GIL released before ``import torch`` (the Score panel's worker does this, so
the window keeps drawing): in a fresh process, the files are mapped, torch is not yet imported, and the import
that follows works and uses them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_CHILD = r"""
import json, sys
from napari_anonavila._torch_libs import preload_torch_libraries
loaded = preload_torch_libraries()
maps = open("/proc/self/maps").read()
mapped = sorted({line.rsplit("/", 1)[-1] for line in maps.splitlines() if "/torch/lib/libtorch" in line})
before = "torch" in sys.modules
import torch
again = preload_torch_libraries()
print(json.dumps({"loaded": loaded, "mapped": mapped, "torch_before": before, "again": again,
                  "sum": float(torch.ones(3).sum()), "file": torch.__file__}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is for Linux (dlopen); elsewhere a no-op")
def test_preload_maps_the_libraries_and_import_torch_uses_them():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["loaded"] == ["libtorch_cpu.so", "libtorch.so", "libtorch_python.so"]
    assert {"libtorch_cpu.so", "libtorch.so", "libtorch_python.so"} <= set(got["mapped"])
    assert got["torch_before"] is False  # only the files: no Python module was imported
    assert got["again"] == []  # with torch imported there is nothing to do
    assert got["sum"] == 3.0
