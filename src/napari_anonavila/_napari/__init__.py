"""The napari plugin: the only module tree that imports napari, Qt or magicgui.

On machines without CUDA, Triton is kept from loading in the napari process. Triton is useless there, and
its bundled LLVM clashes with the LLVM of Mesa's software OpenGL (llvmpipe, as under Xvfb or on remote
desktops): importing it after the canvas exists crashes the process. torch then runs without Triton.
"""

import glob
import os
import sys


def _cuda_present() -> bool:
    """An NVIDIA driver on this machine, told without importing torch (which takes seconds: the plugin's menus and
    readers must not wait for it)."""
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*")) or (
        sys.platform == "win32" and bool(os.environ.get("CUDA_PATH")))


def _block_triton_without_cuda() -> None:
    if "triton" in sys.modules:
        return
    if not _cuda_present():
        sys.modules["triton"] = None  # `import triton` now raises ImportError; torch checks for that


_block_triton_without_cuda()
