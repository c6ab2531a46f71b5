"""npe2 reader contribution: whole-slide files as lazy multiscale RGB image layers."""

from __future__ import annotations

import os

from ..errors import SlideReadError
from ..slide import SLIDE_SUFFIXES, open_slide
from .layers import slide_layer_data

__all__ = ["get_reader"]


def get_reader(path: str | os.PathLike | list):
    """Return a reader for one slide file we can open, else None (napari then tries other readers)."""
    if isinstance(path, list) or not str(path).lower().endswith(SLIDE_SUFFIXES):
        return None
    return read_slide


def read_slide(path: str | os.PathLike) -> list[tuple]:
    """Open the slide lazily; the layer metadata carries the path, mpp, vendor and the open slide."""
    try:
        slide = open_slide(path)
    except SlideReadError as err:
        from napari.utils.notifications import show_error

        show_error(str(err))
        raise
    return [slide_layer_data(slide)]
