"""Tissue detection on a low-resolution image: Otsu on saturation, then morphological clean-up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import filters, morphology

from ..slide import Slide

__all__ = ["TissueMask", "tissue_mask"]

_MIN_SATURATION = 0.04  # a threshold below this means there is no stained tissue to separate


@dataclass(frozen=True)
class TissueMask:
    """A boolean (rows, cols) mask; each mask pixel covers ``downsample`` x ``downsample`` level-0 pixels."""

    mask: np.ndarray
    downsample: float
    threshold: float

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of an RGB uint8 image; black and white are 0."""
    rgb = rgb.astype(np.float32)
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)


def _otsu(values: np.ndarray, fallback: float) -> float:
    try:
        return float(filters.threshold_otsu(values)) if values.size > 16 and np.ptp(values) > 0 else fallback
    except ValueError:  # a constant image has no threshold
        return fallback


def tissue_mask(slide: Slide, *, mask_um: float = 4.0, min_object_um2: float = 5000.0) -> TissueMask:
    """Tissue by Otsu thresholds on a thumbnail, then morphological clean-up.

    Bright-field slides (light background): darker than Otsu's grey level or more saturated than Otsu's
    saturation (at least 0.04), and never near-white. Dark-field slides (fluorescence; median grey below 60):
    brighter than Otsu's grey level. Specks below ``min_object_um2`` (64 mask pixels without mpp) are
    removed and small holes filled; gaps up to about 4 mask pixels close. The mask has ``mask_um`` microns
    per pixel (at most 4096 pixels a side), or 1024 pixels a side without mpp. A slide without tissue gives
    an empty mask.
    """
    w0, h0 = slide.dimensions_xy
    max_side = int(np.clip(max(w0, h0) * slide.mpp / mask_um, 64, 4096)) if slide.mpp else 1024
    thumb, ds = slide.thumbnail(max_side)
    gray = thumb.mean(axis=-1)
    if np.median(gray) < 60:
        thr = _otsu(gray, 255.0)
        mask = gray > max(thr, 20.0)
    else:
        sat = saturation(thumb)
        thr = max(_otsu(sat, 1.0), _MIN_SATURATION)
        not_bright = thumb.min(axis=-1) < 235
        mask = ((gray < _otsu(gray[not_bright], 0.0)) | (sat > thr)) & not_bright
    px_area_um2 = (ds * slide.mpp) ** 2 if slide.mpp else None
    min_px = max(4, int(min_object_um2 / px_area_um2)) if px_area_um2 else 64
    mask = ndimage.binary_closing(np.pad(mask, 4), structure=morphology.disk(4))[4:-4, 4:-4]
    mask = ~_drop_small(~_drop_small(mask, min_px), min_px)  # specks out, then small holes filled
    return TissueMask(mask, ds, thr)


def _drop_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without its connected components smaller than ``min_px`` pixels."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    keep = np.bincount(labels.ravel()) >= min_px
    keep[0] = False
    return keep[labels]
