"""Erosion, top-1% and slide scores on hand-made grids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anonavila.maps import (
    HeatmapGeometry,
    cells_to_heatmap,
    erode,
    heatmaps_from_patch_names,
    slide_scores,
    top_percent_mean,
)

nan = np.nan


def test_erosion_by_hand():
    h = np.array([[1.0, 2.0, nan], [4.0, 5.0, 6.0], [nan, 8.0, 9.0]])
    e = erode(h)
    expected = np.array([[1.0, 1.0, nan], [1.0, 1.0, 2.0], [nan, 4.0, 5.0]])
    np.testing.assert_array_equal(e, expected)


def test_erosion_isolated_cell_keeps_its_value_and_nan_stays_nan():
    h = np.full((3, 3), nan)
    h[1, 1] = 7.0
    e = erode(h)
    assert e[1, 1] == 7.0
    assert np.isnan(e).sum() == 8


def test_erosion_never_raises_a_cell():
    rng = np.random.default_rng(0)
    h = rng.random((20, 30))
    h[rng.random(h.shape) < 0.3] = nan
    e = erode(h)
    ok = ~np.isnan(h)
    assert np.array_equal(np.isnan(e), np.isnan(h))
    assert (e[ok] <= h[ok]).all()


def test_top_percent():
    v = np.arange(250, dtype=float)  # n=250 -> k=2 -> mean(249, 248)
    assert top_percent_mean(v) == pytest.approx(248.5)
    assert top_percent_mean(np.array([3.0, nan, 1.0])) == 3.0  # k = max(1, 0)
    assert np.isnan(top_percent_mean(np.array([nan, nan])))


def test_slide_scores_with_and_without_erosion():
    h = np.array([[0.1, 0.1, 0.1], [0.1, 0.9, 0.1], [nan, 0.1, 0.1]])
    s = slide_scores(h)
    assert s["max"] == pytest.approx(0.9)
    assert s["top1"] == pytest.approx(0.9)
    assert s["max_eroded"] == pytest.approx(0.1)  # a lone hot cell is removed by erosion
    assert s["top1"] <= s["max"]
    assert s["top1_eroded"] <= s["max_eroded"]


def test_heatmaps_from_patch_names_parse_from_the_end():
    pairs = [("slide_a_1_0_0_200.png", 1.0), ("slide_a_1_512_256_200.png", 2.0), ("b_0_0_100.png", 3.0)]
    maps = heatmaps_from_patch_names(pairs, 256)
    assert set(maps) == {"slide_a_1", "b"}
    assert maps["slide_a_1"].shape == (2, 3)
    assert maps["slide_a_1"][1, 2] == 2.0
    assert np.isnan(maps["slide_a_1"][0, 1])


def test_duplicate_cells_are_an_error():
    with pytest.raises(ValueError, match="same heatmap cell"):
        heatmaps_from_patch_names([("s_0_0_1.png", 1.0), ("s_10_10_1.png", 2.0)], 256)


def test_geometry_half_patch_translate():
    g = HeatmapGeometry(patch_size_l0=256, origin_xy_l0=(0, 0))
    assert g.napari_scale == (256.0, 256.0)
    assert g.napari_translate == (127.5, 127.5)
    # the centre of cell (row 2, col 3) is level-0 pixel centre (y = 2*256 + 127.5, x = 3*256 + 127.5)
    row, col = 2, 3
    assert row * 256 + g.napari_translate[0] == pytest.approx(2 * 256 + 255 / 2)
    assert g.cell_of(3 * 256 + 10, 2 * 256 + 200) == (row, col)


def test_cells_outside_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        cells_to_heatmap(np.array([3]), np.array([0]), np.array([1.0]), (3, 3))
