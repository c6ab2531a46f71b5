"""Encoder precisions, in a module that imports nothing heavy (the CLI's --help and napari's menus read it)."""

from __future__ import annotations

__all__ = ["PRECISIONS"]

PRECISIONS = ("float32", "tf32", "bfloat16", "float16")
