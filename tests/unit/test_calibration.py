"""The calibration's arithmetic against direct computations: leave-one-out distances, conformal p, robust z, BH."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_anonavila.calibration import MODES, Calibration, benjamini_hochberg, loo_distances


def test_leave_one_out_distances_equal_centroids_made_without_each_row():
    h = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    got = loo_distances(h, h.double().mean(0))
    for i in (0, 7, 29):
        c = torch.cat([h[:i], h[i + 1 :]]).double().mean(0)
        want = 1 - torch.nn.functional.cosine_similarity(h[i].double(), c, dim=0)
        assert got[i] == pytest.approx(float(want), rel=1e-9)


def test_p_values_count_the_reference_at_or_above():
    ref = np.random.default_rng(1).random((50, len(MODES)))
    cal = Calibration(ref, "test")
    s = np.array([-1.0, ref[3, 0], 0.5, 2.0])
    want = [(1 + np.sum(ref[:, 0] >= v)) / 51 for v in s]
    np.testing.assert_allclose(cal.p(s, "sum"), want)
    assert cal.p(np.array([2.0]), "sum")[0] == pytest.approx(1 / 51)  # the floor: 1 / (n + 1)


def test_z_is_robust_and_strictly_increasing():
    ref = np.random.default_rng(2).normal(10, 2, (4001, len(MODES)))
    ref[:5] = 1e6  # outliers do not move a robust z
    cal = Calibration(ref, "test")
    med, scale = cal.centre_scale("max")
    assert med == pytest.approx(10, abs=0.15) and scale == pytest.approx(2, rel=0.06)
    s = np.sort(np.random.default_rng(3).random(100) * 20)
    assert np.all(np.diff(cal.z(s, "max")) > 0)


def test_benjamini_hochberg_matches_the_step_up_rule():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # k = 5: 0.042 <= 0.05 * 5 / 10 = 0.025? no; k = 2: 0.008 <= 0.01 yes; k = 3: 0.039 <= 0.015 no
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 8
    assert benjamini_hochberg(p, 0.5).sum() == 10  # 0.216 <= 0.5


def test_too_small_or_damaged_references_are_refused():
    with pytest.raises(ValueError, match="at least 20"):
        Calibration(np.ones((5, len(MODES))), "x")
    bad = np.ones((30, len(MODES)))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Calibration(bad, "x")
