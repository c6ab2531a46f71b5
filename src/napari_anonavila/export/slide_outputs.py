"""Per-slide outputs: patch table, heatmap grid, summary JSON with provenance, and the overlay PNG.

All files are written to temporary names and renamed only when every one of them is complete, so a
failed or cancelled run leaves earlier outputs untouched. ``summary.json`` is renamed last: its presence
marks a complete result.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, check_writable
from ..maps.overlay import render_overlay
from .provenance import provenance
from .tables import explain_columns, write_csv

__all__ = ["OUTPUT_FILES", "write_slide_outputs"]

OUTPUT_FILES = ("patches.csv", "heatmap.npy", "overlay.png", "summary.json")


def _patch_rows(result, detector):
    s, xy = result.scores, result.grid.xy_l0()[: len(result.scores)]
    names_n, names_a = detector.term_names("normal"), detector.term_names("abnormal")
    rank = np.empty(len(s), np.int64)
    rank[np.argsort(-s.score, kind="stable")] = np.arange(1, len(s) + 1)
    for i in range(len(s)):
        yield [int(xy[i, 0]), int(xy[i, 1]), result.grid.patch_size_l0, int(result.grid.cells_rc[i, 0]),
               int(result.grid.cells_rc[i, 1]), f"{s.d_normal[i]:.8g}", f"{s.d_abnormal[i]:.8g}", f"{s.score[i]:.8g}",
               int(rank[i]), *explain_columns(s, i, names_n, names_a)]


PATCH_COLUMNS = ["x_l0", "y_l0", "size_l0", "row", "col", "d_normal", "d_abnormal", "score", "rank", "top_normal",
                 "top_abnormal"]


def write_slide_outputs(out_dir: str | os.PathLike, result, detector, slide, *, thumbnail=None, overwrite: bool = False,
                        checkpoint: dict | None = None, top_k: int = 10, extra: dict | None = None) -> dict:
    """Write the four outputs to ``out_dir``; return the summary. Refuses a complete result unless ``overwrite``."""
    out = Path(out_dir)
    check_writable(out / "summary.json", overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    heat = result.heatmap()
    scores = result.slide_scores()
    top = result.top_k(top_k)
    xy = result.grid.xy_l0()
    names_n, names_a = detector.term_names("normal"), detector.term_names("abnormal")
    summary = {
        "slide_scores": scores,
        "n_patches": len(result.scores),
        "heatmap": {"file": "heatmap.npy", "shape_rc": list(heat.shape), "cell_size_l0": result.grid.patch_size_l0,
                    "origin_xy_l0": list(result.grid.origin_xy_l0),
                    "napari_scale": list(result.geometry.napari_scale),
                    "napari_translate": list(result.geometry.napari_translate)},
        "top_k": [{"rank": r + 1, "x_l0": int(xy[i, 0]), "y_l0": int(xy[i, 1]), "score": float(result.scores.score[i]),
                   **dict(zip(("top_normal", "top_abnormal"), explain_columns(result.scores, i, names_n, names_a),
                              strict=True))}
                  for r, i in enumerate(top)],
        "timings_s": result.timings,
        "from_embedding_cache": result.from_cache,
        "provenance": provenance(result, detector, slide_fingerprint=slide.fingerprint(), checkpoint=checkpoint),
        **(extra or {}),
    }
    picture = overlay_png(result, slide, thumbnail, top_k)
    with contextlib.ExitStack() as stack:
        # entered in reverse, so summary.json is renamed into place last
        tmp = {name: stack.enter_context(atomic_path(out / name)) for name in reversed(OUTPUT_FILES)}
        write_csv(tmp["patches.csv"], PATCH_COLUMNS, _patch_rows(result, detector), overwrite=True)
        with open(tmp["heatmap.npy"], "wb") as fh:
            np.save(fh, heat.astype(np.float32))
        tmp["overlay.png"].write_bytes(picture)
        with open(tmp["summary.json"], "w", encoding="utf-8") as fh:
            json.dump(_finite_or_none(summary), fh, indent=1, default=_json_default, allow_nan=False)
    return summary


def overlay_png(result, slide, thumbnail=None, top_k: int = 10) -> bytes:
    """The overlay picture of a result as PNG bytes (for reports)."""
    import io

    thumb, tds = thumbnail if thumbnail is not None else slide.thumbnail(1024)
    scores = result.slide_scores()
    buf = io.BytesIO()
    render_overlay(buf, thumb, tds, result.heatmap(), result.grid.patch_size_l0,
                   title=f"{slide.path.name}: max {scores['max']:.3g}, top-1% {scores['top1']:.3g} ({result.mode})",
                   points_xy_l0=result.grid.xy_l0()[result.top_k(top_k)])
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

