"""Tissue detection on a low-resolution thumbnail, in integer arithmetic: bright-field and dark-field slides.

Bright-field (H&E, IHC): tissue is coloured (chroma = max - min channel) or darker than the glass. Marker-pen
ink is rejected by colour: green ink leaves green the brightest channel, which no stain does; blue ink is far
bluer and darker than haematoxylin (even IHC's pale blue counterstain); black ink is near-black and colourless.
Dark-field (fluorescence): tissue is brighter than the black background in any channel; the gaps between
stained nuclei are closed, so the section is covered, not just its nuclei.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from skimage import filters

from ..slide import Slide

__all__ = ["TissueMask", "TissueMaskWarning", "tissue_mask"]

_MIN_CHROMA = 12  # a chroma threshold below this means there is no stained tissue to separate
_GLASS = 235  # bright-field pixels with every channel at least this bright are glass
_BLUE_INK = 90  # blue above red by more than this (with red dark): blue marker
_GREEN_INK = 25  # green above red by more than this, and above blue: green marker
_BLACK = 90  # black marker: every channel below this, with little colour (85% ink over glass is about 65)
_MIN_INK_UM2 = 100.0**2  # a pen stroke is wider than 0.1 mm; smaller dark or blue pieces are stain


class TissueMaskWarning(UserWarning):
    """The tissue mask covers suspiciously little of a slide that has signal."""


@dataclass(frozen=True)
class TissueMask:
    """A boolean (rows, cols) mask; each mask pixel covers ``downsample`` x ``downsample`` level-0 pixels."""

    mask: np.ndarray
    downsample: float
    threshold: float
    kind: str = "bright-field"  # or "dark-field"
    ink_fraction: float = 0.0  # of the thumbnail rejected as pen ink
    origin_xy_l0: tuple[int, int] = (0, 0)  # the level-0 pixel of mask pixel (0, 0) (a box's corner)

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def _otsu(values: np.ndarray, fallback: float) -> float:
    if values.size <= 16 or values.min() == values.max():
        return fallback
    try:
        return float(filters.threshold_otsu(values))
    except ValueError:  # a constant image has no threshold
        return fallback


def _bright_field(rgb: np.ndarray, min_ink_px: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """(tissue, ink, chroma threshold, signal) of a bright-field thumbnail (uint8 RGB).

    Ink is a pen stroke: pieces smaller than ``min_ink_px`` are stain (dark DAB nuclei look like black ink).
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # uint8 throughout: no wider copies of the thumbnail
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    chroma = mx - mn  # never negative
    glass = mn >= _GLASS
    # a - b > t for uint8 a, b: (a > b) guards the wrapped differences of a < b
    blue_ink = (b > r) & (b - r > _BLUE_INK) & (r < 110)  # IHC haematoxylin is blue too, but paler: b - r ~60-75
    green_ink = (g > r) & (g - r > _GREEN_INK) & (g > b)  # no stain leaves green the brightest channel
    black_ink = (mx < _BLACK) & (chroma < 30)
    ink = _drop_small(blue_ink | green_ink | black_ink, min_ink_px)
    candidates = ~glass & ~ink
    # Otsu splits stained tissue from what is left; a pale section sits below that split but well above the
    # glass's own colour noise, so the threshold never exceeds the glass's 99th percentile plus a margin
    glass_chroma = _percentile_u8(chroma[glass], 99) if glass.sum() > 100 else 255.0
    thr = max(min(_otsu(chroma[candidates], 255.0), glass_chroma + _MIN_CHROMA), _MIN_CHROMA)
    dark = mn < _otsu(mn[candidates].astype(np.uint8), 0.0)
    tissue = ((chroma > thr) | dark) & candidates
    signal = ~glass
    return tissue, ink, thr, signal


def _dark_field(rgb: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(tissue, threshold, signal) of a dark-field thumbnail: brighter than the background in any channel."""
    sig = _channel_max(rgb)
    background = float(np.percentile(sig, 10))
    thr = max(filters.threshold_triangle(sig) if sig.min() < sig.max() else 255.0, background + 4.0)
    return sig > thr, thr, sig > background + 4.0


def tissue_mask(slide: Slide, *, mask_um: float = 8.0, min_object_um2: float = 5000.0,
                box_xy_l0: tuple[int, int, int, int] | None = None) -> TissueMask:
    """Tissue on a thumbnail of ``mask_um`` microns per pixel or finer (at most 2048 a side, at least 1024 without
    mpp), made of whole blocks of a low pyramid level, never resampled. With ``box_xy_l0`` (x0, y0, x1, y1), of
    that box only: only its tiles are read (a region of a huge single-level slide costs the region, not the slide).

    Bright-field or dark-field is told from the thumbnail (median brightness). Specks below
    ``min_object_um2`` (64 mask pixels without mpp) are removed and small holes filled. Warns
    (:class:`TissueMaskWarning`) when the mask covers far less than the part of the slide that has signal.
    """
    w0, h0 = slide.dimensions_xy
    if box_xy_l0 is None and not slide.cheap_thumbnail:  # a huge single level: read it in bands, bounded
        box_xy_l0 = (0, 0, w0, h0)
    bw, bh = (box_xy_l0[2] - box_xy_l0[0], box_xy_l0[3] - box_xy_l0[1]) if box_xy_l0 else (w0, h0)
    side = max(bw, bh) * slide.mpp / mask_um if slide.mpp else 1024  # the long side at mask_um per pixel
    max_side = int(np.clip(2 * side, 128, 2048))
    if box_xy_l0 is not None:
        thumb, ds = slide.region_thumbnail(box_xy_l0, max_side)
    else:
        thumb, ds = slide.thumbnail(max_side, exact=False)  # between side and 2 side
    px_um = ds * slide.mpp if slide.mpp else None
    min_px = max(4, int(min_object_um2 / px_um**2)) if px_um else 64
    ink = np.zeros(thumb.shape[:2], bool)
    if _median_u8(_channel_max(thumb)) < 60:
        kind = "dark-field"
        mask, thr, signal = _dark_field(thumb)
        gap = max(2, round(24 / px_um)) if px_um else 4  # close the gaps between nuclei (about 24 um)
    else:
        kind = "bright-field"
        mask, ink, thr, signal = _bright_field(thumb, max(4, int(_MIN_INK_UM2 / px_um**2)) if px_um else 16)
        gap = max(1, round(32 / px_um)) if px_um else 4  # close gaps of about 32 um
    mask = _close(mask, gap)
    if kind == "bright-field":
        mask &= ~ink  # closing must not bridge back over a pen stroke
    mask = ~_drop_small(~_drop_small(mask, min_px), min_px)  # specks out, then small holes filled
    origin = (int(box_xy_l0[0]), int(box_xy_l0[1])) if box_xy_l0 is not None else (0, 0)
    tm = TissueMask(mask, ds, float(thr), kind, float(ink.mean()), origin)
    sig = float(signal.mean())
    if sig > 0.1 and tm.fraction < 0.3 * sig:
        warnings.warn(f"{slide.path.name}: the tissue mask covers {tm.fraction:.0%} of the slide, but {sig:.0%} of it "
                      f"has signal ({kind}); most patches may be skipped. Check the heatmap's coverage; pass "
                      "--min-tissue 0 (or draw a region) to score everything", TissueMaskWarning, stacklevel=2)
    return tm


def _channel_max(rgb: np.ndarray) -> np.ndarray:
    """The brightest channel of each pixel (several times faster than ``max(axis=-1)`` on 3 channels)."""
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _median_u8(values: np.ndarray) -> int:
    """The median of uint8 values from their histogram (no sort)."""
    counts = np.cumsum(np.bincount(values.ravel(), minlength=256))
    return int(np.searchsorted(counts, (counts[-1] + 1) // 2))


def _percentile_u8(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear) of uint8 values, from their histogram (no sort); the same number."""
    counts = np.cumsum(np.bincount(values.ravel(), minlength=256))
    h = (int(counts[-1]) - 1) * (q / 100.0)  # numpy's virtual index for the linear method, as it computes it
    lo = int(np.searchsorted(counts, np.floor(h), side="right"))
    hi = int(np.searchsorted(counts, np.ceil(h), side="right"))
    t, d = h - np.floor(h), float(hi - lo)
    return float(hi - d * (1 - t)) if t >= 0.5 else float(lo + d * t)  # numpy's own lerp


def _close(mask: np.ndarray, gap: int) -> np.ndarray:
    """Morphological closing with a (2 gap + 1)-pixel square; the slide's edge neither grows nor erodes the mask
    (edge pixels repeated, as ``mode="nearest"``). Dilation is a sliding OR along each axis, built by doubling the
    window (log2 of its size passes); erosion is the dilation of the complement."""
    return ~_grow(~_grow(mask, gap), gap)


def _grow(mask: np.ndarray, gap: int) -> np.ndarray:
    for axis in (0, 1):
        mask = _or_window(mask, gap, axis)
    return mask


def _or_window(mask: np.ndarray, gap: int, axis: int) -> np.ndarray:
    """OR over the window of ``2 gap + 1`` pixels centred on each pixel along ``axis`` (edges repeated)."""
    k = 2 * gap + 1
    pad = [(0, 0), (0, 0)]
    pad[axis] = (gap, gap)
    acc = np.pad(mask, pad, mode="edge")

    def cut(a, start, stop):
        return a[start:stop] if axis == 0 else a[:, start:stop]

    w = 1
    while 2 * w <= k:  # acc[i] = OR of w pixels from i; doubled each pass
        n = acc.shape[axis]
        acc = cut(acc, 0, n - w) | cut(acc, w, n)
        w *= 2
    if w < k:  # the rest: two overlapping windows of w cover k
        n = acc.shape[axis]
        acc = cut(acc, 0, n - (k - w)) | cut(acc, k - w, n)
    return acc


def _drop_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without its connected components smaller than ``min_px`` pixels."""
    from scipy import ndimage  # imported when used: the napari menus and readers do not wait for scipy

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    keep = np.bincount(labels.ravel()) >= min_px
    if keep[1:].all():  # nothing small: the mask as it is
        return mask
    keep[0] = False
    return np.take(keep, labels)
