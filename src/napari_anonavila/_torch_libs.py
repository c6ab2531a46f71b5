"""Load torch's shared libraries without holding Python's GIL, so a window stays responsive while a worker thread
imports torch.

``import torch`` maps several hundred MB of libraries (``libtorch_cpu`` alone takes 0.3 s); the import machinery
does this with the GIL held, so every other Python thread, the UI thread included, stops for that long. A call
through ctypes to the C library's ``dlopen`` releases the GIL. Loading the same files first that way leaves the
import only a reference to take. Nothing changes in how torch links: the libraries are loaded local (torch itself
promotes the ones it wants global), and any failure just leaves the work to the import.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path

# in dependency order: the largest first, each pulling its own dependencies through its RPATH
_LIBRARIES = ("libtorch_cpu.so", "libtorch.so", "libtorch_python.so")


def preload_torch_libraries() -> list[str]:
    """Load torch's main shared libraries with the GIL released (Linux; elsewhere, or when torch is imported
    already, nothing). Returns the names loaded; on any failure it stops and ``import torch`` does the rest."""
    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return []
    try:
        spec = importlib.util.find_spec("torch")  # finds the package without importing it
        libc = ctypes.CDLL(None)
        dlopen = libc.dlopen  # a foreign call: ctypes releases the GIL for its duration
    except (ImportError, OSError, AttributeError, ValueError):
        return []
    if spec is None or spec.origin is None:
        return []
    dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    folder, loaded = Path(spec.origin).parent / "lib", []
    for name in _LIBRARIES:
        path = folder / name
        if not path.is_file() or not dlopen(str(path).encode(), os.RTLD_LOCAL | os.RTLD_NOW):
            break
        loaded.append(name)
    return loaded

