"""The napari plugin: the only module tree that imports napari, Qt or magicgui.

On machines without CUDA, Triton is kept from loading in the napari process. Triton is useless there, and
its bundled LLVM clashes with the LLVM of Mesa's software OpenGL (llvmpipe, as under Xvfb or on remote
desktops): importing it after the canvas exists crashes the process. torch then runs without Triton.
"""

import sys


def _block_triton_without_cuda() -> None:
    if "triton" in sys.modules:
        return
    import torch

    if not torch.cuda.is_available():
        sys.modules["triton"] = None  # `import triton` now raises ImportError; torch checks for that


_block_triton_without_cuda()
