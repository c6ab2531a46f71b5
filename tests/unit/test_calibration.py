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


def _slides(rng, k: int, effect_sd: float, n: int = 400) -> list[np.ndarray]:
    """k normal slides of n heavy-tailed patch scores, each with its own level and spread (``effect_sd`` within-slide
    SDs of slide effect): what stain, section thickness and scanner do to a whole slide."""
    out = []
    for _ in range(k):
        level, spread = rng.normal(0, effect_sd), np.exp(rng.normal(0, 0.3 * effect_sd))
        out.append(1e-3 + (level + spread * rng.standard_t(5, n)) * 1e-4)
    return out


def _reference(slides: list[np.ndarray], normalise: str) -> Calibration:
    from napari_anonavila.maps import top_percent_mean

    table = np.tile(np.concatenate(slides)[:, None], (1, len(MODES)))
    owner = np.repeat(np.arange(len(slides)), [s.size for s in slides])
    return Calibration(table, "sim", np.array([[top_percent_mean(s)] * 3 for s in slides]), owner, "top1", normalise)


@pytest.mark.parametrize("effect_sd", [0.0, 1.0, 2.0])
def test_slide_normalisation_keeps_the_false_alarm_rate_on_every_slide(effect_sd):
    """Model-free: five reference slides, 60 new normal slides, all with slide effects. Against the pooled reference
    the rate a slide gets drifts with its effect; each slide on its own scale it stays at 5% +/- about 1 point."""
    rng = np.random.default_rng(7)
    rates = {"reference": [], "slide": []}
    for _ in range(12):
        ref = _slides(rng, 5, effect_sd)
        new = _slides(rng, 5, effect_sd)
        for how in rates:
            cal = _reference(ref, how)
            rates[how] += [float((cal.p(s, "sum") <= 0.05).mean()) for s in new]
    own = np.asarray(rates["slide"])
    assert abs(own.mean() - 0.05) < 0.005 and own.std() < 0.02, (own.mean(), own.std())
    if effect_sd >= 1:  # the pooled reference: the same mean at best, far wider from slide to slide
        assert np.std(rates["reference"]) > 2 * own.std()


def test_slide_normalisation_is_blind_to_a_change_of_the_whole_slide():
    """The stated blind spot: a slide shifted as a whole (every patch 5 SD up) is flagged everywhere against the
    pooled reference and not at all on its own scale; its out-of-domain check still sees it."""
    from napari_anonavila.calibration import slide_calibration

    rng = np.random.default_rng(8)
    ref = _slides(rng, 5, 0.0)
    shifted = _slides(rng, 1, 0.0)[0] + 5e-4
    assert (_reference(ref, "reference").p(shifted, "sum") <= 0.05).mean() > 0.9
    own = _reference(ref, "slide")
    assert (own.p(shifted, "sum") <= 0.05).mean() < 0.1
    summary = slide_calibration(shifted, {}, "sum", own, patch_area_mm2=None)
    assert summary["normalise"] == "slide" and summary["median_z"] > 4  # against the reference as scored


def test_slide_normalisation_refuses_what_it_cannot_scale():
    rng = np.random.default_rng(9)
    slides = _slides(rng, 3, 0.0)
    table = np.tile(np.concatenate(slides)[:, None], (1, len(MODES)))
    with pytest.raises(ValueError, match="patch folders have no slide"):
        Calibration(table, "x", np.zeros((3, 3)), np.repeat([0, 1, -1], 400), "top1", "slide")
    with pytest.raises(ValueError, match="reference slide 3 of 3 has 5 scored patches"):
        Calibration(table[:805], "x", np.zeros((3, 3)), np.repeat([0, 1, 2], [400, 400, 5]), "top1", "slide")
    cal = _reference(slides, "slide")
    assert "this slide has 12 scored patches" in cal.unusable_for(slides[0][:12])
    assert cal.unusable_for(slides[0]) is None and _reference(slides, "reference").unusable_for(slides[0][:3]) is None
    with pytest.raises(ValueError, match="unknown normalisation"):
        Calibration(table, "x", normalise="image")
