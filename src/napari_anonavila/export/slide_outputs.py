"""Per-slide outputs: patch table, heatmap grid, summary JSON with provenance, and the overlay PNG.

The four files are written into a hidden folder beside the result folder and take the place of the old ones in one
step (the folders are exchanged, the caches moved across first), so a reader finds either the old set or the new
one, never a mix; a failed, cancelled or killed run leaves the earlier result as it was. ``summary.json`` marks a
complete result.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .._atomic import check_writable, commit_dir, partial_prefix
from ..maps.overlay import Z_RANGE, render_overlay
from .records import from_result, write_patch_table

__all__ = ["OUTPUT_FILES", "write_slide_outputs"]

OUTPUT_FILES = ("patches.csv", "heatmap.npy", "overlay.png", "summary.json")


def write_slide_outputs(out_dir: str | os.PathLike, result, detector, slide, *, thumbnail=None, overwrite: bool = False,
                        checkpoint: dict | None = None, top_k: int = 10, extra: dict | None = None) -> dict:
    """Write the four outputs to ``out_dir``; return the summary. Refuses a complete result unless ``overwrite``."""
    out = Path(out_dir)
    check_writable(out / "summary.json", overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    heat = result.heatmap()
    table = from_result(result, detector, fingerprint=slide.fingerprint(), checkpoint=checkpoint)
    summary = {
        "slide_scores": result.slide_scores(),
        "calibrated": result.calibrated_summary(),
        "n_patches": len(table),
        "heatmap": {"file": "heatmap.npy", "shape_rc": list(heat.shape), "cell_size_l0": table.size_l0,
                    "origin_xy_l0": list(result.grid.origin_xy_l0),
                    "napari_scale": list(result.geometry.napari_scale),
                    "napari_translate": list(result.geometry.napari_translate)},
        "top_k": [{"rank": r + 1, "x_l0": int(table.x_l0[i]), "y_l0": int(table.y_l0[i]),
                   "score": float(table.score[i]), "top_normal": table.top_normal[i],
                   "top_abnormal": table.top_abnormal[i],
                   **({"z": float(table.z[i]), "p_normal": float(table.p_normal[i])} if table.calibrated else {})}
                  for r, i in enumerate(table.top_k(top_k))],
        "timings_s": result.timings,
        "from_embedding_cache": result.from_cache,
        "n_from_embedding_cache": result.n_from_cache,
        "provenance": table.provenance,
        **(extra or {}),
    }
    picture = overlay_png(result, slide, thumbnail, top_k)
    staged = Path(tempfile.mkdtemp(prefix=partial_prefix(out), suffix=".partial", dir=out.parent))
    try:
        write_patch_table(staged / "patches.csv", table, overwrite=True)
        with open(staged / "heatmap.npy", "wb") as fh:
            np.save(fh, heat.astype(np.float32))
        (staged / "overlay.png").write_bytes(picture)
        with open(staged / "summary.json", "w", encoding="utf-8") as fh:
            json.dump(_finite_or_none(summary), fh, indent=1, default=_json_default, allow_nan=False)
        for name in OUTPUT_FILES:
            _fsync(staged / name)
        commit_dir(out, staged, OUTPUT_FILES)  # all four at once: the old set or the new, never a mix
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return summary


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def overlay_png(result, slide, thumbnail=None, top_k: int = 10) -> bytes:
    """The overlay picture of a result as PNG bytes (for reports). A slide without a cheap whole-slide thumbnail
    (a huge single level) is drawn over the box of its scored cells only."""
    import io

    p = result.grid.patch_size_l0
    cells = result.grid.cells_rc[: len(result.scores)]
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

    scores = result.slide_scores()
    buf = io.BytesIO()
    points = result.grid.xy_l0()[result.top_k(top_k)] - np.array([c0 * p, r0 * p])
    cal = result.calibrated_summary()
    if cal["calibrated"] and cal["max_z"] is not None:  # z on the fixed scale every slide shares, outlines
        render_overlay(buf, thumb, tds, heat_of("z"), p,
                       title=f"{slide.path.name}: {cal['n_significant']} patches significant at FDR 5%, max z "
                             f"{cal['max_z']:.3g} ({result.mode})", label="z: robust SD above normal tissue",
                       points_xy_l0=points, limits=Z_RANGE, outline_cells=cells[result.significant()] - [r0, c0])
    else:
        render_overlay(buf, thumb, tds, heat_of("score"), p,
                       title=f"{slide.path.name}: max {scores['max']:.3g}, top-1% {scores['top1']:.3g} "
                             f"({result.mode}; uncalibrated, stretched per slide)", points_xy_l0=points)
    return buf.getvalue()


def _finite_or_none(obj):
    """NaN and infinities become null, so the summary is strict JSON (an empty slide has NaN scores)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)

