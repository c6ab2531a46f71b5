"""The tissue mask on pictures with known truth: pen ink (green, blue, black marker) is rejected, faint tissue is
kept, and the ink is reported; the same masks are drawn in docs/images/tissue-masks.png."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anonavila.grid.tissue import tissue_mask
from napari_anonavila.sample import add_pen_marks, make_tissue, write_pyramid_tiff
from napari_anonavila.slide import open_slide

from ..conftest import shared_path


def _mask_at_full_size(tm, shape) -> np.ndarray:
    f = round(tm.downsample)
    big = np.kron(tm.mask, np.ones((f, f), bool))
    out = np.zeros(shape, bool)
    h, w = min(shape[0], big.shape[0]), min(shape[1], big.shape[1])
    out[:h, :w] = big[:h, :w]
    return out


@pytest.fixture(scope="module")
def inked(tmp_path_factory):
    rgb, _ = make_tissue(2048, seed=21)
    tissue = rgb.min(axis=-1) < 225
    ink = add_pen_marks(rgb, seed=4, width_px=24)
    path = write_pyramid_tiff(tmp_path_factory.mktemp("ink") / "inked.tif", rgb, mpp=2.0)
    return path, tissue, ink


def test_pen_ink_is_rejected_and_tissue_kept(inked):
    path, tissue, ink = inked
    with open_slide(path) as s:
        tm = tissue_mask(s)
    mask = _mask_at_full_size(tm, tissue.shape)
    on_glass = ink & ~tissue
    assert on_glass.sum() > 5000
    assert mask[on_glass].mean() < 0.05  # ink on the glass is not tissue
    clean = tissue & ~ink
    assert mask[clean].mean() > 0.9  # the tissue is kept
    assert tm.ink_fraction > 0.01  # and the ink is reported


@pytest.mark.parametrize("ink_name", ["green", "blue", "black"])
def test_each_marker_colour_alone_is_rejected(tmp_path, ink_name):
    rgb, _ = make_tissue(1024, seed=5)
    tissue = rgb.min(axis=-1) < 225
    ink = add_pen_marks(rgb, seed=1, inks=(ink_name,), width_px=16)
    path = write_pyramid_tiff(tmp_path / "s.tif", rgb, mpp=4.0)
    with open_slide(path) as s:
        mask = _mask_at_full_size(tissue_mask(s), tissue.shape)
    assert mask[ink & ~tissue].mean() < 0.05, ink_name
    assert mask[tissue & ~ink].mean() > 0.9


@pytest.mark.parametrize("stain", [0.5, 0.35])
def test_faint_tissue_is_kept(tmp_path, stain):
    rgb, _ = make_tissue(2048, seed=8)
    tissue = rgb.min(axis=-1) < 225
    faint = rgb.astype(np.float32)
    faint[:, :1024] = 244 * (1 - stain) + faint[:, :1024] * stain  # the left half: a pale section
    path = write_pyramid_tiff(tmp_path / "faint.tif", faint.astype(np.uint8), mpp=2.0)
    with open_slide(path) as s:
        mask = _mask_at_full_size(tissue_mask(s), tissue.shape)
    left, right = tissue.copy(), tissue.copy()
    left[:, 1024:] = right[:, :1024] = False
    assert mask[left].mean() > 0.85
    assert mask[right].mean() > 0.9
    assert mask[~tissue].mean() < 0.1


def test_dark_ihc_nuclei_are_stain_not_ink():
    """Ki-67 (DAB) nuclei are near-black and colourless in a thumbnail, like black marker, but small: the
    all-tissue IHC crop stays tissue and no ink is reported."""
    with open_slide(shared_path("slides", "os-2-ki67-crop.ome.tif")) as s:
        tm = tissue_mask(s)
    assert tm.ink_fraction < 0.002
    assert tm.fraction > 0.85


def test_mask_reads_a_low_level_without_resampling(tmp_path):
    """The mask's thumbnail is one low pyramid level as it is (here 128 px at 8 um), not level 0 shrunk."""
    rgb, _ = make_tissue(2048, seed=3)
    path = write_pyramid_tiff(tmp_path / "p.tif", rgb, mpp=0.5)  # 1024 um wide: 128 px at 8 um
    with open_slide(path) as s:
        assert s.level_downsamples == [1.0, 4.0, 16.0]
        levels_read = []
        read_level = s.read_level
        s.read_level = lambda level, *a: levels_read.append(level) or read_level(level, *a)
        tm = tissue_mask(s)
        low = s.read_region((0, 0), 2, (128, 128))
    assert set(levels_read) == {2}
    assert tm.mask.shape == (128, 128) and tm.downsample == 16.0
    assert tm.mask.mean() == pytest.approx((low.min(axis=-1) < 225).mean(), abs=0.1)


def test_closing_histogram_percentile_and_otsu_equal_scipy_numpy_and_skimage():
    """The fast closing (sliding OR by doubling), the PIL histogram with its mask, the histogram percentile and the
    histogram Otsu give scipy's, numpy's and skimage's own results."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from napari_anonavila.grid.tissue import _close, _hist_u8, _otsu, _percentile_u8

    rng = np.random.default_rng(0)
    for _ in range(40):
        mask = rng.random(tuple(rng.integers(1, 70, 2))) < rng.random()
        gap = int(rng.integers(1, 12))
        size = 2 * gap + 1
        ref = ndimage.minimum_filter(ndimage.maximum_filter(mask.view(np.uint8), size=size, mode="nearest"),
                                     size=size, mode="nearest").view(bool)
        np.testing.assert_array_equal(_close(mask, gap), ref)
    for _ in range(100):
        v = rng.integers(0, 256, int(rng.integers(1, 400))).astype(np.uint8)
        for q in (99, 50, 1, 37.5):
            assert _percentile_u8(_hist_u8(v[None]), q) == float(np.percentile(v, q))
    for _ in range(100):
        shape = tuple(int(n) for n in rng.integers(1, 90, 2))
        lo, hi = sorted(int(x) for x in rng.integers(0, 256, 2))
        v = rng.integers(lo, hi + 1, shape).astype(np.uint8)
        where = rng.random(shape) < rng.random()
        counts = _hist_u8(v, where)
        np.testing.assert_array_equal(counts, np.bincount(v[where], minlength=256))
        np.testing.assert_array_equal(_hist_u8(v[:, ::2]), np.bincount(v[:, ::2].ravel(), minlength=256))  # a view
        if where.sum() > 16 and v[where].min() < v[where].max():
            assert _otsu(counts, -1.0) == float(threshold_otsu(v[where]))
        else:
            assert _otsu(counts, -1.0) == -1.0


@pytest.mark.parametrize("split", [False, True])
def test_dropping_small_pieces_equals_whole_mask_labelling(monkeypatch, split):
    """Specks and holes are dropped by their size in the whole mask, also when a large mask is labelled in two
    halves at once: pieces joined across the seam (even through a winding path that crosses it many times) count
    as one."""
    from scipy import ndimage

    from napari_anonavila.grid import tissue

    def reference(mask, min_px):
        labels, n = ndimage.label(mask)
        keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_px
        keep[0] = False
        return keep[labels]

    monkeypatch.setattr(tissue, "_SPLIT_PX", 0 if split else 1 << 40)
    rng = np.random.default_rng(1)
    masks = []
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(2, 80, 2))
        masks.append(ndimage.uniform_filter(rng.random(shape), int(rng.integers(1, 6))) < rng.uniform(0.3, 0.7))
    serpent = np.zeros((40, 41), bool)  # one path that crosses the middle row 11 times
    serpent[:, ::4] = True
    serpent[0, 1::8] = serpent[0, 2::8] = serpent[0, 3::8] = True
    serpent[-1, 5::8] = serpent[-1, 6::8] = serpent[-1, 7::8] = True
    masks += [serpent, ~serpent, np.zeros((9, 9), bool), np.ones((9, 9), bool)]
    for mask in masks:
        for min_px in (1, 4, 30, 200, mask.size + 1):
            np.testing.assert_array_equal(tissue._drop_small(mask, min_px), reference(mask, min_px))
    # and the default: a mask over the threshold is split, one under it is not
    big = ndimage.uniform_filter(rng.random((700, 500)), 3) < 0.5
    monkeypatch.setattr(tissue, "_SPLIT_PX", 1 << 18)
    np.testing.assert_array_equal(tissue._drop_small(big, 50), reference(big, 50))
