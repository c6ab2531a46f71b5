"""Synthetic slides with ground truth: tissue-like texture with planted anomalous regions, as pyramidal TIFFs.

Deterministic for a given seed. Normal tissue is pink stroma with sparse small nuclei; planted anomalies
are dense clusters of large, dark, crowded nuclei (tumour-like). The TIFFs are tiled, deflate-compressed,
carry their resolution (mpp) and levels at downsamples 1, 4 and 16, so both OpenSlide and tifffile read them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._atomic import atomic_path

__all__ = ["PEN_INKS", "SampleSlides", "add_pen_marks", "make_tissue", "write_pyramid_tiff", "write_sample_slides"]

_STROMA = np.array([236, 178, 204], np.float32)
_NUCLEUS = np.array([88, 52, 140], np.float32)
_TUMOUR = np.array([52, 28, 96], np.float32)


@dataclass(frozen=True)
class SampleSlides:
    """Paths of the generated files; ``mask`` is the anomaly ground truth at 1/``mask_downsample`` scale."""

    normal: Path
    anomalous: Path
    mask: Path
    mask_downsample: int
    mpp: float
    reference: Path | None = None  # a second normal slide, for calibration


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy import ndimage  # (not at import: napari's Open Sample menu imports this module on the UI thread)

    small = (max(2, shape[0] // 16), max(2, shape[1] // 16))
    n = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma / 16)
    n = ndimage.zoom(n, (shape[0] / small[0], shape[1] / small[1]), order=1)
    return (n - n.mean()) / (n.std() + 1e-6)


def _nuclei(rng: np.random.Generator, shape: tuple[int, int], density: np.ndarray, radius: float) -> np.ndarray:
    """Blob image in [0, 1]: Poisson points with per-pixel ``density`` (per 10^4 px), blurred to ``radius``."""
    from scipy import ndimage

    pts = rng.random(shape, dtype=np.float32) < density * 1e-4
    blobs = ndimage.gaussian_filter(pts.astype(np.float32), radius)
    return np.clip(blobs * (2 * np.pi * radius**2) * 0.9, 0, 1)


def make_tissue(size: int, seed: int, *, n_anomalies: int = 0, variation: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """An (size, size, 3) uint8 RGB tissue image and its bool anomaly mask. ``variation`` (0: none) varies the slide
    as labs and cuts do: the stain's strength per channel (about ``variation`` x 10% each) and the tissue's outline
    (its pieces moved and resized by about ``variation`` x 10%)."""
    rng = np.random.default_rng(seed)
    vary = np.random.default_rng(seed + 7919)  # its own stream: variation 0 leaves the slide as it always was
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tissue = _smooth_noise(rng, (size, size), size / 6) * 0.12
    for cy, cx, ry, rx in ((0.5, 0.5, 0.38, 0.42), (0.3, 0.62, 0.2, 0.25), (0.7, 0.35, 0.22, 0.2)):
        if variation:
            cy, cx = cy + vary.normal(0, 0.05 * variation), cx + vary.normal(0, 0.05 * variation)
            ry, rx = ry * (1 + vary.normal(0, 0.1 * variation)), rx * (1 + vary.normal(0, 0.1 * variation))
        tissue = np.maximum(tissue, 1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2)
    tissue = tissue > 0.05
    anomaly = np.zeros((size, size), bool)
    inside = np.argwhere(tissue[::16, ::16]) * 16
    for _ in range(n_anomalies):
        cy, cx = inside[rng.integers(len(inside))]
        r = size * rng.uniform(0.05, 0.08)
        anomaly |= ((yy * size - cy) ** 2 + (xx * size - cx) ** 2) < r**2
    anomaly &= tissue
    shade = 1 + 0.06 * _smooth_noise(rng, (size, size), size / 20)[..., None]
    img = np.broadcast_to(_STROMA, (size, size, 3)) * shade
    nuc = _nuclei(rng, (size, size), np.where(anomaly, 0.0, 9.0), 2.5)
    img = img * (1 - nuc[..., None]) + _NUCLEUS * nuc[..., None]
    if anomaly.any():
        tum = _nuclei(rng, (size, size), np.where(anomaly, 60.0, 0.0), 4.5)
        img = img * (1 - tum[..., None]) + _TUMOUR * tum[..., None]
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    if variation:  # stain strength: optical density scaled per channel, the background untouched
        od = -np.log(np.clip(img, 1, 255) / 255)
        img = 255 * np.exp(-od * np.exp(vary.normal(0, 0.1 * variation, 3)).astype(np.float32))
    img = np.where(tissue[..., None], img, 244 + rng.normal(0, 2, img.shape).astype(np.float32))
    return np.clip(img, 0, 255).astype(np.uint8), anomaly


PEN_INKS = {"green": (40, 150, 80), "blue": (45, 75, 175), "black": (28, 28, 34)}


def add_pen_marks(img: np.ndarray, seed: int = 0, *, inks=("green", "blue", "black"), width_px: float | None = None
                  ) -> np.ndarray:
    """Draw marker-pen strokes (as pathologists do: a line, a circle, a scribble) over ``img`` in place.

    Returns the bool mask of inked pixels. The ink is blended at 85% over what lies below, as real ink is.
    """
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    width = width_px / 2 if width_px else max(3.0, w / 150)  # half the stroke width
    inked = np.zeros((h, w), bool)
    for i, name in enumerate(inks):
        if i % 3 == 0:  # a straight line across the slide
            y0, y1 = rng.uniform(0.2, 0.8, 2) * h
            d = np.abs((y1 - y0) * xx / w - (yy - y0)) / np.hypot((y1 - y0) / w, 1)
            stroke = d < width
        elif i % 3 == 1:  # a circle around a region
            cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.12, 0.2) * min(h, w)
            stroke = np.abs(np.hypot(yy - cy, xx - cx) - r) < width
        else:  # a short scribble
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            t = (xx - cx) / (0.15 * w)
            stroke = (np.abs(t) < 1) & (np.abs(yy - cy - 0.05 * h * np.sin(6 * t)) < width)
        img[stroke] = (img[stroke] * 0.15 + np.array(PEN_INKS[name], np.float32) * 0.85).astype(np.uint8)
        inked |= stroke
    return inked


def write_pyramid_tiff(path: str | os.PathLike, rgb: np.ndarray, mpp: float, *, downsamples=(1, 4, 16),
                       tile: int = 256) -> Path:
    """Write a tiled pyramidal RGB TIFF (one IFD per level, deflate) with its resolution, atomically."""
    import tifffile
    from PIL import Image

    path = Path(path)
    res = 1e4 / mpp  # pixels per centimetre
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=rgb.nbytes > 2**31) as tif:
        for ds in downsamples:
            level = rgb if ds == 1 else np.asarray(Image.fromarray(rgb).reduce(ds))
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="zlib", subfiletype=0 if ds == 1 else 1,
                      resolution=(res / ds, res / ds), resolutionunit="CENTIMETER",
                      description="napari-anonavila synthetic slide" if ds == 1 else None, metadata=None)
    return path


def write_sample_slides(folder: str | os.PathLike, *, size: int = 4096, mpp: float = 0.5, seed: int = 0,
                        n_anomalies: int = 4, reference: bool = False) -> SampleSlides:
    """Write ``normal.tif``, ``anomalous.tif`` and ``anomalous_mask.png`` (ground truth at 1/16 scale), and with
    ``reference`` a second normal slide ``reference.tif`` (other tissue of the same kind, for calibration)."""
    from .progress import drain

    return drain(iter_write_sample_slides(folder, size=size, mpp=mpp, seed=seed, n_anomalies=n_anomalies,
                                          reference=reference))


def iter_write_sample_slides(folder: str | os.PathLike, *, size: int = 4096, mpp: float = 0.5, seed: int = 0,
                             n_anomalies: int = 4, reference: bool = False):
    """:func:`write_sample_slides` as a generator: a Progress before each slide is made and after the last."""
    from PIL import Image

    from .progress import Progress

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total = 3 if reference else 2
    yield Progress("making the normal slide", 0, total)
    normal, _ = make_tissue(size, seed)
    write_pyramid_tiff(folder / "normal.tif", normal, mpp)
    del normal
    yield Progress("making the slide with planted anomalies", 1, total)
    anomalous, mask = make_tissue(size, seed + 1, n_anomalies=n_anomalies)
    write_pyramid_tiff(folder / "anomalous.tif", anomalous, mpp)
    ds = 16
    small = mask.reshape(size // ds, ds, size // ds, ds).mean(axis=(1, 3)) >= 0.5
    with atomic_path(folder / "anomalous_mask.png") as tmp:
        Image.fromarray((small * 255).astype(np.uint8)).save(tmp, format="PNG")
    ref = None
    if reference:
        yield Progress("making the reference slide", 2, total)
        ref_img, _ = make_tissue(size, seed + 2)
        ref = write_pyramid_tiff(folder / "reference.tif", ref_img, mpp)
    yield Progress("sample slides written", total, total)
    return SampleSlides(folder / "normal.tif", folder / "anomalous.tif", folder / "anomalous_mask.png", ds, mpp, ref)


def cell_labels(mask_path: str | os.PathLike, mask_downsample: int, cells_rc: np.ndarray, patch_size_l0: int
                ) -> np.ndarray:
    """1 where at least half of a grid cell lies in the planted anomaly, else 0."""
    from PIL import Image

    mask = np.asarray(Image.open(mask_path)) > 127
    k = patch_size_l0 / mask_downsample
    out = np.zeros(len(cells_rc), np.int64)
    for i, (r, c) in enumerate(cells_rc):
        block = mask[int(r * k) : int((r + 1) * k), int(c * k) : int((c + 1) * k)]
        out[i] = int(block.size > 0 and block.mean() >= 0.5)
    return out
