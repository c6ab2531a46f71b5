"""Tissue detection on a low-resolution thumbnail, in integer arithmetic: bright-field and dark-field slides.

Bright-field (H&E, IHC): tissue is coloured (chroma = max - min channel) or darker than the glass. Marker-pen
ink is rejected by colour: green ink leaves green the brightest channel, which no stain does; blue ink is far
bluer and darker than haematoxylin (even IHC's pale blue counterstain); black ink is near-black and colourless.
Dark-field (fluorescence): tissue is brighter than the black background in any channel; the gaps between
stained nuclei are closed, so the section is covered, not just its nuclei.
"""

from __future__ import annotations

import os
import threading
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
# Thumbnails of this many pixels or more are tested, counted and labelled in two halves at once. At about 10^6 pixels
# (a 1250 x 938 thumbnail) two threads saved 5-12 ms of wall time and cost 0.5-5 ms of CPU (12% on an OME-TIFF): a
# mask is made once per slide, and in a cohort every core already has a slide, so only the largest thumbnails split.
_SPLIT_PX = 1 << 21


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
        return _share(self.mask)


def _otsu(counts: np.ndarray, fallback: float) -> float:
    """skimage's Otsu threshold of the uint8 values counted in ``counts`` (as it computes it from the values)."""
    seen = np.flatnonzero(counts)
    if counts.sum() <= 16 or seen.size < 2:  # too few values, or a single one: no split
        return fallback
    lo, hi = int(seen[0]), int(seen[-1])
    return float(filters.threshold_otsu(hist=(counts[lo : hi + 1], np.arange(lo, hi + 1))))


def _bright_field(planes: np.ndarray, mx: np.ndarray, min_ink_px: int) -> tuple[np.ndarray, np.ndarray, float,
                                                                              np.ndarray]:
    """(tissue, ink, chroma threshold, signal) of a bright-field thumbnail: its (3, rows, cols) uint8 planes and
    their maximum ``mx``.

    Ink is a pen stroke: pieces smaller than ``min_ink_px`` are stain (dark DAB nuclei look like black ink).
    """
    mn, chroma = np.empty(mx.shape, np.uint8), np.empty(mx.shape, np.uint8)  # uint8 throughout
    glass, inkish = np.empty(mx.shape, bool), np.empty(mx.shape, bool)

    def pixels(rows: slice) -> None:  # each pixel on its own: the rows can be split
        r, g, b = planes[:, rows]
        hi, lo = mx[rows], mn[rows]
        np.minimum(np.minimum(r, g), b, out=lo)
        np.subtract(hi, lo, out=chroma[rows])  # never negative
        np.greater_equal(lo, np.uint8(_GLASS), out=glass[rows])
        # b - r > t without wrapping: r + t cannot wrap where r < 110 (elsewhere the pixel is not blue ink); IHC
        # haematoxylin is blue too, but paler: b - r ~60-75
        blue = (r < np.uint8(110)) & (b > r + np.uint8(_BLUE_INK))
        # a - b > t for uint8 a, b: (a > b) guards the wrapped differences of a < b; no stain leaves green the
        # brightest channel
        green = (g > r) & (g - r > np.uint8(_GREEN_INK)) & (g > b)
        black = (hi < np.uint8(_BLACK)) & (chroma[rows] < np.uint8(30))
        np.bitwise_or(blue | green, black, out=inkish[rows])

    _by_rows(pixels, mx.shape)
    ink = _drop_small(inkish, min_ink_px)
    candidates = ~glass & ~ink
    # Otsu splits stained tissue from what is left; a pale section sits below that split but well above the
    # glass's own colour noise, so the threshold never exceeds the glass's 99th percentile plus a margin
    jobs = (lambda: (_hist_u8(chroma, glass), _hist_u8(chroma, candidates)), lambda: _hist_u8(mn, candidates))
    (on_glass, chroma_counts), dark_counts = _on_two_threads(lambda job: job(), *jobs) if _split(mx.shape) else \
        [job() for job in jobs]
    glass_chroma = _percentile_u8(on_glass, 99) if on_glass.sum() > 100 else 255.0
    thr = max(min(_otsu(chroma_counts, 255.0), glass_chroma + _MIN_CHROMA), _MIN_CHROMA)
    dark = mn < _otsu(dark_counts, 0.0)
    tissue = ((chroma > thr) | dark) & candidates
    signal = ~glass
    return tissue, ink, thr, signal


def _dark_field(sig: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(tissue, threshold, signal) of a dark-field thumbnail from its brightest channel ``sig``: brighter than the
    background in any channel."""
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
    planes = np.moveaxis(thumb, -1, 0).copy()  # contiguous channels: every test on them runs several times faster
    mx = _channel_max(planes)
    if _median_u8(np.ascontiguousarray(mx[::2, ::2])) < 60:  # dark-field? (every 4th pixel decides as well)
        kind = "dark-field"
        mask, thr, signal = _dark_field(mx)
        gap = max(2, round(24 / px_um)) if px_um else 4  # close the gaps between nuclei (about 24 um)
    else:
        kind = "bright-field"
        mask, ink, thr, signal = _bright_field(planes, mx, max(4, int(_MIN_INK_UM2 / px_um**2)) if px_um else 16)
        gap = max(1, round(32 / px_um)) if px_um else 4  # close gaps of about 32 um
    mask = _close(mask, gap)
    if kind == "bright-field":
        mask &= ~ink  # closing must not bridge back over a pen stroke
    mask = ~_drop_small(~_drop_small(mask, min_px), min_px)  # specks out, then small holes filled
    origin = (int(box_xy_l0[0]), int(box_xy_l0[1])) if box_xy_l0 is not None else (0, 0)
    tm = TissueMask(mask, ds, float(thr), kind, _share(ink), origin)
    sig = _share(signal)
    if sig > 0.1 and tm.fraction < 0.3 * sig:
        warnings.warn(f"{slide.path.name}: the tissue mask covers {tm.fraction:.0%} of the slide, but {sig:.0%} of it "
                      f"has signal ({kind}); most patches may be skipped. Check the heatmap's coverage; pass "
                      "--min-tissue 0 (or draw a region) to score everything", TissueMaskWarning, stacklevel=2)
    return tm


def _channel_max(planes: np.ndarray) -> np.ndarray:
    """The brightest channel of each pixel of (3, rows, cols) planes."""
    return np.maximum(np.maximum(planes[0], planes[1]), planes[2])


def _share(mask: np.ndarray) -> float:
    """The fraction of ``mask`` that is true (``mask.mean()`` without its float64 copy)."""
    return np.count_nonzero(mask) / mask.size if mask.size else 0.0


def _hist_u8(values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """How many of the uint8 ``values`` (2-D; only where ``where`` is true) take each of the 256 values.

    PIL's histogram, in C over the bytes: several times ``np.bincount``, which widens every value to 64 bits.
    """
    from PIL import Image

    mask = None if where is None else Image.fromarray(np.ascontiguousarray(where).view(np.uint8))
    return np.asarray(Image.fromarray(np.ascontiguousarray(values)).histogram(mask=mask), dtype=np.int64)


def _median_u8(values: np.ndarray) -> int:
    """The median of uint8 values (2-D) from their histogram (no sort)."""
    counts = np.cumsum(_hist_u8(values))
    return int(np.searchsorted(counts, (counts[-1] + 1) // 2))


def _percentile_u8(counts: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear) of the uint8 values counted in ``counts``; the same number."""
    counts = np.cumsum(counts)
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
    """``mask`` without its connected components (4-connected) smaller than ``min_px`` pixels.

    A large mask is labelled in two halves at once (scipy's labelling and numpy's gathers release the GIL); pieces
    that touch across the seam are joined before their sizes are compared, so the result is the whole mask's.
    """
    from scipy import ndimage  # imported when used: the napari menus and readers do not wait for scipy

    def sizes(m):  # (labels, pixels per label, whether m is sparse)
        count = np.count_nonzero(m)
        labels, n = ndimage.label(m)
        sparse = count < m.size // 4
        if n <= 1:  # one piece (a section in one piece) or none: its size without a pass over the labels
            return labels, np.array([m.size - count, count][: n + 1], np.int64), sparse
        # a sparse mask: count its own pixels only; a dense one: every label, background included (no gather)
        return labels, np.bincount(labels[m] if sparse else labels.ravel(), minlength=n + 1), sparse

    if np.count_nonzero(mask) < min_px:  # fewer pixels than the smallest piece kept: nothing stays
        return np.zeros_like(mask)
    if not _split(mask.shape):
        labels, size, sparse = sizes(mask)
        keep = size >= min_px
        if keep[1:].all():  # nothing small (or nothing at all): the mask as it is
            return mask
        keep[0] = False
        if not sparse:
            return np.take(keep, labels)
        at = np.flatnonzero(mask)  # a sparse mask: look up its own pixels only, not the whole image
        out = np.zeros(mask.size, bool)
        out[at[keep[labels.ravel()[at]]]] = True
        return out.reshape(mask.shape)
    mid = mask.shape[0] // 2
    (la, sa, _), (lb, sb, _) = _on_two_threads(sizes, mask[:mid], mask[mid:])
    na = sa.size  # node i < na: label i of the top half; node na + j: label j of the bottom half
    seam = (la[-1] > 0) & (lb[0] > 0)
    root = _joined(na + sb.size, la[-1][seam], na + lb[0][seam])
    size = np.bincount(root, weights=np.concatenate([sa, sb]), minlength=root.size)[root]
    keep = size >= min_px
    keep[0] = keep[na] = False  # the background of each half
    if keep[1:na].all() and keep[na + 1 :].all():
        return mask
    top, bottom = _on_two_threads(lambda half: np.take(*half), (keep[:na], la), (keep[na:], lb))
    return np.concatenate([top, bottom])


def _joined(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """For each of ``n`` nodes, one node of its component once the pairs (``u``, ``v``) are joined: the smallest.

    Each pair takes the smaller of its two values until every pair agrees; values only fall and always name a node
    of the same component, so at that point each component carries one value, its own.
    """
    root = np.arange(n)
    while True:
        m = np.minimum(root[u], root[v])
        if (root[u] == m).all() and (root[v] == m).all():
            return root
        np.minimum.at(root, u, m)
        np.minimum.at(root, v, m)


def _split(shape: tuple[int, int]) -> bool:
    """Whether an image of ``shape`` is worth two threads (large, and this machine has a second core)."""
    return shape[0] * shape[1] >= _SPLIT_PX and shape[0] >= 2 and (os.cpu_count() or 1) >= 2


def _by_rows(fn, shape: tuple[int, int]) -> None:
    """``fn(rows)`` over all rows of an image of ``shape``: a large one in two halves at once."""
    if _split(shape):
        _on_two_threads(fn, slice(0, shape[0] // 2), slice(shape[0] // 2, None))
    else:
        fn(slice(None))


def _on_two_threads(fn, a, b):
    """``(fn(a), fn(b))``, ``fn(b)`` on a helper thread; an error on either side is raised here."""
    out: list = []

    def run() -> None:
        try:
            out.append((True, fn(b)))
        except BaseException as err:  # handed to the calling thread
            out.append((False, err))

    helper = threading.Thread(target=run, name="anonavila-tissue", daemon=True)
    helper.start()
    try:
        first = fn(a)
    finally:
        helper.join()
    ok, second = out[0]
    if not ok:
        raise second
    return first, second
