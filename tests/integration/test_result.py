"""One result, one way: a slide's result read back from its folder is the result that was scored, view by view."""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest

from napari_anonavila import open_result
from napari_anonavila.grid import make_grid
from napari_anonavila.pipeline import iter_slide_embeddings
from napari_anonavila.progress import drain
from napari_anonavila.result import HEATMAP_VALUES, SlideResult
from napari_anonavila.reviews import ReviewMarks, write_reviews
from napari_anonavila.slide import open_slide


@pytest.fixture(scope="module")
def calibrated(sample_slides, fitted_on_sample):
    """The fitted demo detector calibrated on many normal patches (p fine enough for significant patches)."""
    det = copy.deepcopy(fitted_on_sample)
    with open_slide(sample_slides.normal) as s:
        embs = drain(iter_slide_embeddings(s, make_grid(s, patch_px=64), det.backend, det.backend_id))
    det.calibrate(det.reference_scores(embs), f"{len(embs)} patches of the normal slide")
    return det


@pytest.fixture(scope="module", params=["calibrated", "uncalibrated"])
def live_and_back(request, tmp_path_factory, sample_slides, calibrated):
    det = copy.deepcopy(calibrated)
    if request.param == "uncalibrated":
        det.calibration = None
    out = tmp_path_factory.mktemp(request.param) / "anomalous"
    live = det.score_slide(sample_slides.anomalous, out_dir=out, patch_px=64)
    marks = ReviewMarks()
    marks.set(ReviewMarks.keys_of(live.grid, live.top_k(3)[:2]), "confirmed")
    marks.set(ReviewMarks.keys_of(live.grid, live.top_k(3)[2:]), "rejected")
    live.marks = marks
    write_reviews(out, marks, slide_fingerprint=live.slide_fingerprint)  # as napari saves them
    return live, open_result(out), out


def test_both_are_one_type(live_and_back):
    live, back, out = live_and_back
    assert type(live) is SlideResult and type(back) is SlideResult
    assert live.folder == back.folder == out


def test_every_view_is_bit_identical(live_and_back):
    live, back, _ = live_and_back
    assert len(live) == len(back) > 100
    for values in HEATMAP_VALUES:
        for eroded in (False, True):
            np.testing.assert_array_equal(live.heatmap(values=values, eroded=eroded),
                                          back.heatmap(values=values, eroded=eroded), err_msg=values)
    for name in ("score", "d_normal", "d_abnormal", "z", "p_normal", "rank", "xy_l0"):
        np.testing.assert_array_equal(getattr(live, name), getattr(back, name), err_msg=name)
    for fdr in (None, 0.05, 0.3):
        np.testing.assert_array_equal(live.significant(fdr), back.significant(fdr))
    assert live.slide_scores() == back.slide_scores()
    assert live.calibrated_summary() == back.calibrated_summary()
    np.testing.assert_array_equal(live.top_k(len(live)), back.top_k(len(back)))
    assert [live.explain(i) for i in range(len(live))] == [back.explain(i) for i in range(len(back))]
    assert live.review_states() == back.review_states() and len(back.review_states()) == 3
    g, h = live.grid, back.grid
    assert (g.patch_size_l0, g.shape_rc, g.origin_xy_l0, g.mpp) == (h.patch_size_l0, h.shape_rc, h.origin_xy_l0,
                                                                    h.mpp)
    np.testing.assert_array_equal(g.cells_rc, h.cells_rc)
    np.testing.assert_array_equal(g.tissue, h.tissue)
    assert g.key() == h.key()
    assert (live.mode, live.fdr, live.slide, live.provenance, live.geometry) == \
           (back.mode, back.fdr, back.slide, back.provenance, back.geometry)


def test_the_calibrated_case_has_findings(live_and_back):
    """The comparison above is not vacuous: the calibrated result flags patches, the other none."""
    live, _, _ = live_and_back
    if live.calibrated:
        assert 0 < live.significant().sum() < len(live) and np.isfinite(live.z).all()
    else:
        assert not live.significant().any() and np.isnan(live.z).all()


def test_the_csv_holds_the_same_rows_to_its_precision(live_and_back):
    live, _, out = live_and_back
    with open(out / "patches.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(live)
    xy, rank, sig = live.xy_l0, live.rank, live.significant()
    states = live.review_states()
    for i, r in enumerate(rows):
        assert (int(r["x_l0"]), int(r["y_l0"]), int(r["rank"])) == (xy[i, 0], xy[i, 1], rank[i])
        for col in ("score", "d_normal", "d_abnormal"):
            assert float(r[col]) == pytest.approx(getattr(live, col)[i], rel=1e-7)
        assert (r["top_normal"], r["top_abnormal"]) == live.explain(i)
        if live.calibrated:
            assert float(r["z"]) == pytest.approx(live.z[i], rel=1e-5)
            assert float(r["p_normal"]) == pytest.approx(live.p_normal[i], rel=1e-5)
            assert r["significant"] == str(int(sig[i]))
        else:
            assert r["z"] == r["p_normal"] == r["significant"] == ""
    assert {i: r["review"] for i, r in enumerate(rows) if r["review"] != "unreviewed"} == {}  # written before marks
    assert len(states) == 3


def test_a_reopened_result_needs_no_torch(live_and_back):
    import subprocess
    import sys

    _, _, out = live_and_back
    code = ("import sys\nfrom napari_anonavila import open_result\n"
            f"r = open_result({str(out)!r})\nr.heatmap(values='z', eroded=True); r.significant(); r.slide_scores()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
