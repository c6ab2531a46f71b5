"""Thread workers around the core generators: they yield once per batch, so cancel acts within one batch."""

from __future__ import annotations

import os

from napari.qt.threading import thread_worker

from ..grid import make_grid
from ..pipeline import iter_score_slide, iter_slide_embeddings
from ..training import TrainConfig

__all__ = ["fit_worker", "score_worker"]


def _spare_a_core() -> tuple[int, int]:
    """Reader threads and torch threads that leave one core to the UI thread."""
    cores = os.cpu_count() or 2
    return max(1, min(8, cores - 1)), max(1, cores - 1)


@thread_worker(ignore_errors=True)  # the widgets show errors in the notification area
def score_worker(slide, detector, *, cache, patch_um, roi, batch_size, mode, top_k=3, grid=None):
    """Yield ('grid', grid) then Progress per batch; return the SlideResult. Runs off the UI thread.

    It leaves one CPU core to the UI thread (reader and torch threads), so the viewer stays responsive.
    """
    import torch

    readers, threads = _spare_a_core()
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, threads))
    try:
        if grid is None:
            grid = make_grid(slide, patch_um=patch_um if slide.mpp else None, roi_polygons_xy_l0=roi)
        yield ("grid", grid)
        result = yield from iter_score_slide(slide, grid, detector, batch_size=batch_size, cache=cache, mode=mode,
                                             top_k=top_k, workers=readers)
    finally:
        torch.set_num_threads(before)
    return result


@thread_worker(ignore_errors=True)  # the widgets show errors in the notification area
def fit_worker(detector, *, slide=None, roi=None, patch_um=None, folder=None, config: TrainConfig, cache=None):
    """Embed the normal reference (slide regions or a folder), train, fit centroids; yield Progress throughout."""
    import torch

    parts = []
    if slide is not None:
        grid = make_grid(slide, patch_um=patch_um if slide.mpp else None, roi_polygons_xy_l0=roi, min_tissue=0.25)
        if len(grid) < 2:
            raise ValueError("the normal reference regions hold fewer than 2 tissue patches; draw larger regions")
        embs = yield from iter_slide_embeddings(slide, grid, detector.backend, detector.backend_id, cache=None)
        parts.append(torch.as_tensor(embs))
    if folder is not None:
        parts.append((yield from detector.iter_embed(folder)))
    if not parts:
        raise ValueError("choose a normal reference: a Shapes layer of normal regions or a folder of patches")
    losses = yield from detector.iter_fit(torch.cat(parts), config=config)
    return losses
