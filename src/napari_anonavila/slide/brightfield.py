"""Is this a bright-field colour slide (H&E, IHC), as the pathology models expect? A look at its thumbnail."""

from __future__ import annotations

import numpy as np

__all__ = ["brightfield_warning"]

_DARK = 50  # luminance below which a pixel is dark background (fluorescence is dark where there is no signal)
_GREY = 2.0  # mean channel spread below which the slide has no colour (one channel, or grey)


def brightfield_warning(slide, thumbnail: np.ndarray | None = None) -> str | None:
    """A sentence when ``slide`` does not look like bright-field RGB (a fluorescence scan: mostly dark background;
    one channel or grey: no colour), else None. Read from ``thumbnail`` (one the caller has: nothing is read), else
    a small thumbnail; a huge single-level slide is not read for it (None)."""
    if thumbnail is None and not slide.cheap_thumbnail:
        return None
    thumb = thumbnail if thumbnail is not None else slide.thumbnail(256)[0]
    rgb = np.asarray(thumb, np.float32)[..., :3]
    dark = float((rgb.mean(axis=-1) < _DARK).mean())
    spread = float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean())
    name = slide.path.name
    if dark > 0.5:
        return (f"{name}: {dark:.0%} of it is dark background, as in a fluorescence scan; the model expects "
                "bright-field stains (H&E, IHC) on a light background, so its scores here are not meaningful")
    if spread < _GREY:
        return (f"{name}: it has no colour (one channel or grey); the model expects bright-field colour stains (H&E, "
                "IHC), so its scores here are not meaningful")
    return None
