"""Tissue mask and patch grid."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_anonavila.errors import GridError, MissingMppWarning, SlideReadError
from napari_anonavila.grid import make_grid, patch_size_l0, tissue_mask
from napari_anonavila.slide import open_slide

from ..conftest import shared_path


def _open(name, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMppWarning)
        return open_slide(shared_path("slides", name), **kw)


def test_patch_size_from_microns():
    with _open("cmu-1-small-region.svs") as s:
        assert patch_size_l0(s) == round(128 / 0.499)
        assert patch_size_l0(s, patch_um=64) == round(64 / 0.499)
        assert patch_size_l0(s, patch_px=300) == 300
        with pytest.raises(ValueError, match="not both"):
            patch_size_l0(s, patch_um=64, patch_px=300)


def test_no_mpp_falls_back_to_pixels_and_refuses_microns():
    with _open("tcga-cr-7395-01a-01-ts1.svs") as s:
        assert patch_size_l0(s) == 256
        with pytest.raises(GridError, match="no mpp"):
            patch_size_l0(s, patch_um=128)
    with _open("tcga-cr-7395-01a-01-ts1.svs", mpp=0.25) as s:
        assert patch_size_l0(s) == 512


def test_grid_falls_on_tissue():
    with _open("cmu-1-small-region.svs") as s:
        tm = tissue_mask(s)
        g = make_grid(s, mask=tm, min_tissue=0.5)
        assert 0.2 < tm.fraction < 0.7
        assert len(g) > 10
        assert (g.tissue >= 0.5).all()
        # the centre of every kept patch is tissue in the mask, and the patch pixels are not background
        centres = (g.xy_l0() + g.patch_size_l0 / 2) / tm.downsample
        inside = tm.mask[centres[:, 1].astype(int), centres[:, 0].astype(int)]
        assert inside.mean() > 0.9
        x, y = g.xy_l0()[0]
        patch = s.read_region((int(x), int(y)), 0, (g.patch_size_l0, g.patch_size_l0))
        assert (patch.min(axis=-1) < 220).mean() > 0.3


def test_patch_larger_than_slide_is_rejected():
    with _open("kidney-48-5.tif") as s, pytest.raises(GridError, match="larger than the slide"):
        make_grid(s, patch_px=1000)


def test_mostly_background_slide_gives_empty_grid_with_warning():
    with _open("kidney-48-5.tif") as s, pytest.warns(UserWarning, match="no tissue patches"):
        g = make_grid(s)
    assert len(g) == 0


def test_roi_polygon_restricts_the_grid(sample_slides):
    with open_slide(sample_slides.anomalous) as s:
        full = make_grid(s, patch_px=128, min_tissue=0)
        box = np.array([[0, 0], [512, 0], [512, 384], [0, 384]])
        part = make_grid(s, patch_px=128, min_tissue=0, roi_polygons_xy_l0=[box])
        with pytest.raises(ValueError, match="at least 3"):
            make_grid(s, patch_px=128, roi_polygons_xy_l0=[np.array([[0, 0], [1, 1]])])
    assert len(full) == 16 * 16
    assert len(part) == 4 * 3
    assert (part.xy_l0()[:, 0] < 512).all() and (part.xy_l0()[:, 1] < 384).all()


def test_grid_key_changes_with_geometry(sample_slides):
    with open_slide(sample_slides.normal) as s:
        a, b = make_grid(s, patch_px=128), make_grid(s, patch_px=256)
    with open_slide(sample_slides.normal) as s:
        assert a.key() == make_grid(s, patch_px=128).key()
    assert a.key() != b.key()
    with pytest.raises(SlideReadError, match="closed"):
        s.read_region((0, 0), 0, (4, 4))
