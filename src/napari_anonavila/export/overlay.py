"""A result's overlay picture (PNG bytes): the heatmap over the slide's thumbnail, for ``overlay.png`` and reports."""

from __future__ import annotations

import io

import numpy as np

from ..maps.overlay import Z_RANGE, render_overlay

__all__ = ["overlay_png"]


def overlay_png(result, slide, thumbnail=None, top_k: int = 10) -> bytes:
    """The overlay picture of ``result`` (a :class:`~napari_anonavila.result.SlideResult`) over ``slide`` (open), or
    over ``thumbnail`` ((image, downsample)). A slide without a cheap whole-slide thumbnail (a huge single level) is
    drawn over the box of its scored cells only. Calibrated: z on the fixed scale every slide shares, significant
    patches outlined; else the raw score stretched per slide."""
    p = result.patch_size_l0
    cells = result.grid.cells_rc
    r0 = c0 = 0
    r1, c1 = result.grid.shape_rc
    if thumbnail is not None:
        thumb, tds = thumbnail
    elif slide.cheap_thumbnail or not len(cells):
        thumb, tds = slide.thumbnail(1024)
    else:
        (r0, c0), (r1, c1) = cells.min(axis=0), cells.max(axis=0) + 1
        thumb, tds = slide.region_thumbnail((int(c0) * p, int(r0) * p, int(c1) * p, int(r1) * p), 1024)

    def heat_of(values: str) -> np.ndarray:
        return result.heatmap(values=values)[r0:r1, c0:c1]

    name = str(result.slide.get("path", "slide")).replace("\\", "/").rsplit("/", 1)[-1]
    scores = result.slide_scores()
    buf = io.BytesIO()
    points = result.xy_l0[result.top_k(top_k)] - np.array([c0 * p, r0 * p])
    cal = result.calibrated_summary()
    if cal.get("calibrated") and cal.get("max_z") is not None:
        render_overlay(buf, thumb, tds, heat_of("z"), p,
                       title=f"{name}: {cal['n_significant']} patches significant at FDR {result.fdr:.0%}, max z "
                             f"{cal['max_z']:.3g} ({result.mode})", label="z: robust SD above normal tissue",
                       points_xy_l0=points, limits=Z_RANGE, outline_cells=cells[result.significant()] - [r0, c0])
    else:
        render_overlay(buf, thumb, tds, heat_of("score"), p,
                       title=f"{name}: max {scores['max']:.3g}, top-1% {scores['top1']:.3g} "
                             f"({result.mode}; uncalibrated, stretched per slide)", points_xy_l0=points)
    return buf.getvalue()
