"""npe2 sample data contribution: the synthetic slide with planted anomalies (written once to the cache)."""

from __future__ import annotations

from ..sample import write_sample_slides
from ..slide import open_slide
from ..userfiles import cache_dir
from .layers import slide_layer_data

__all__ = ["sample_folder", "sample_slide"]


def sample_folder():
    folder = cache_dir() / "sample-slides"
    if not (folder / "anomalous.tif").is_file() or not (folder / "normal.tif").is_file():
        write_sample_slides(folder, size=4096)
    return folder


def sample_slide() -> list[tuple]:
    """The planted-anomaly slide (4096 px at 0.5 um/px); its normal twin lies beside it for fitting."""
    folder = sample_folder()
    data, kwargs, kind = slide_layer_data(open_slide(folder / "anomalous.tif"))
    kwargs["name"] = "planted anomalies (synthetic)"
    return [(data, kwargs, kind)]
