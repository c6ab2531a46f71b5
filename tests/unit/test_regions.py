"""Area fractions of patch squares inside annotated regions: the recursive bisection that keeps large outlines fast
gives each square's exact GEOS area, and agrees with a supersampled point-in-polygon count that uses no GEOS."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anonavila.annotations import regions_of_polygons

P = 32.0


def _wiggly(n: int, cx: float, cy: float, r: float, seed: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rr = r * (1 + 0.25 * np.sin(7 * t + seed) + 0.05 * np.sin(61 * t))
    return np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], axis=1)


@pytest.fixture(scope="module")
def case():
    outer = _wiggly(4000, 600, 500, 380, 0)
    other = _wiggly(800, 1250, 300, 120, 2)
    regions = regions_of_polygons([outer, other], source="test")
    g = np.arange(0, 1500, P)
    xy = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2) + 3.0  # not aligned to the outline's numbers
    return regions, xy


def test_bisection_equals_one_intersection_per_square(case):
    import shapely

    regions, xy = case
    got = regions.fractions(xy, P)
    geom = regions.area()
    want = np.array([shapely.box(x, y, x + P, y + P).intersection(geom).area / (P * P) for x, y in xy])
    assert got.max() == 1.0 and (got == 0).any() and ((got > 0) & (got < 1)).sum() > 100
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_fractions_match_a_supersampled_count_without_geos(case):
    from matplotlib.path import Path as MplPath

    regions, xy = case
    got = regions.fractions(xy, P)
    s = 16  # 16 x 16 sample points per square, at sub-square centres
    sub = (np.arange(s) + 0.5) * P / s
    pts = (xy[:, None, None, :] + np.stack(np.meshgrid(sub, sub), axis=-1)[None]).reshape(-1, 2)
    inside = np.zeros(len(pts), bool)
    for ring in (_wiggly(4000, 600, 500, 380, 0), _wiggly(800, 1250, 300, 120, 2)):
        inside |= MplPath(ring).contains_points(pts)
    counted = inside.reshape(len(xy), -1).mean(1)
    assert np.abs(got - counted).max() < 0.08  # a sampling error, not a wrong square
    assert np.abs(got - counted).mean() < 0.002
