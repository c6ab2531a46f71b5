"""npe2 sample data contribution: the synthetic slide with planted anomalies, written once to the user cache.

Writing it takes seconds (15 s on 2 cores), so in a window it is written in a worker, with progress in napari's
activity dock: *File > Open Sample* returns at once with an empty placeholder layer, which the slide replaces when
it is written. Later calls open the cached slide directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..sample import iter_write_sample_slides, write_sample_slides
from ..slide import open_slide
from ..userfiles import cache_dir
from .layers import slide_layer_data

__all__ = ["PLACEHOLDER", "SAMPLE_SIZE", "sample_folder", "sample_slide"]

SAMPLE_SIZE = 4096  # pixels a side, at 0.5 um/px
SAMPLE_NAME = "planted anomalies (synthetic)"
PLACEHOLDER = "synthetic slide: being written (progress in the activity dock)"
_writing: dict = {}  # folder -> the worker writing it (one writer per folder, however many clicks)


def _written(folder: Path) -> bool:
    return (folder / "anomalous.tif").is_file() and (folder / "normal.tif").is_file()


def sample_folder() -> Path:
    """The folder of the sample slides, written here (blocking) when missing."""
    folder = cache_dir() / "sample-slides"
    if not _written(folder):
        write_sample_slides(folder, size=SAMPLE_SIZE)
    return folder


def _slide_layer(folder: Path) -> tuple:
    data, kwargs, kind = slide_layer_data(open_slide(folder / "anomalous.tif"))
    kwargs["name"] = SAMPLE_NAME
    return data, kwargs, kind


def sample_slide() -> list[tuple]:
    """The planted-anomaly slide (4096 px at 0.5 um/px); its normal twin lies beside it for fitting."""
    import napari

    folder = cache_dir() / "sample-slides"
    viewer = napari.current_viewer()
    if _written(folder) or viewer is None:
        return [_slide_layer(sample_folder())]
    _write_in_worker(viewer, folder)
    return [(np.zeros((0, 2)), {"name": PLACEHOLDER, "metadata": {"anonavila_placeholder": str(folder)}}, "points")]


def _write_in_worker(viewer, folder: Path) -> None:
    from napari.qt.threading import thread_worker
    from napari.utils.notifications import show_error

    def done(_value) -> None:
        for layer in [ly for ly in viewer.layers if ly.metadata.get("anonavila_placeholder") == str(folder)]:
            viewer.layers.remove(layer)
        data, kwargs, _kind = _slide_layer(folder)
        viewer.add_image(data, **kwargs)

    worker = _writing.get(str(folder))
    if worker is None:
        @thread_worker(progress={"total": 2, "desc": "writing the synthetic sample slides"})
        def write():
            steps = iter_write_sample_slides(folder, size=SAMPLE_SIZE)
            next(steps)  # starts the first slide
            for _event in steps:  # one yield per slide written
                yield

        worker = _writing[str(folder)] = write()
        worker.errored.connect(lambda err: show_error(f"the sample slides could not be written to {folder}: {err}"))
        worker.finished.connect(lambda: _writing.pop(str(folder), None))
        worker.start()
    worker.returned.connect(done)
