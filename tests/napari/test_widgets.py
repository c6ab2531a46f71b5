"""The Score, Review, Term and Retrain widgets in a real napari window, with the demo backend."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anonavila._napari.layers import slide_layer_data
from napari_anonavila._napari.widgets.retrain import RetrainWidget
from napari_anonavila._napari.widgets.review import ReviewWidget
from napari_anonavila._napari.widgets.score import HEATMAP, TOPK, ScoreWidget
from napari_anonavila._napari.widgets.terms import TermsWidget
from napari_anonavila.slide import open_slide

from .conftest import wait_worker


@pytest.fixture
def errors(monkeypatch):
    """Messages shown in napari's notification area by show_error."""
    shown = []
    for mod in ("score", "terms", "retrain"):
        monkeypatch.setattr(f"napari_anonavila._napari.widgets.{mod}.show_error", shown.append)
    return shown


def _open(viewer, path):
    data, kwargs, _ = slide_layer_data(open_slide(path))
    return viewer.add_image(data, **kwargs)


@pytest.fixture
def scored(viewer, qtbot, sample_slides, fitted_on_sample, tmp_path):
    """A viewer with the sample slide scored by a checkpoint (patch 64 um = 128 px)."""
    model = fitted_on_sample.save(tmp_path / "model.safetensors")
    layer = _open(viewer, sample_slides.anomalous)
    w = ScoreWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model.value = model
    w.patch_um.value = 64.0
    w.start()
    wait_worker(qtbot, w)
    assert w.session.result is not None
    return viewer, w, layer


def test_score_layers_features_and_alignment(scored):
    viewer, w, slide_layer = scored
    res = w.session.result
    heat, pts = viewer.layers[HEATMAP], viewer.layers[TOPK]
    assert len(pts.data) == 10
    assert list(pts.features.columns)[:5] == ["rank", "index", "score", "d_normal", "d_abnormal"]
    assert pts.text.values[0].startswith("1: ")
    assert pts.features["score"].is_monotonic_decreasing
    p = res.grid.patch_size_l0
    xy = res.grid.xy_l0()
    for k in range(3):
        i = pts.features["index"][k]
        world = pts.data[k]
        # the point sits over the centre of the patch's level-0 pixels ...
        np.testing.assert_allclose(slide_layer.world_to_data(world)[-2:], [xy[i, 1] + (p - 1) / 2,
                                                                           xy[i, 0] + (p - 1) / 2], atol=1e-6)
        # ... and so does the heatmap cell that holds the patch's score
        r, c = np.round(heat.world_to_data(world)).astype(int)[-2:]
        assert (r, c) == tuple(res.grid.cells_rc[i])
        assert heat.metadata["raw"][r, c] == pytest.approx(pts.features["score"][k])
    assert "max" in w.scores_label.value and "eroded" in w.scores_label.value
    _lo, hi = heat.contrast_limits
    assert hi < 1  # scores are tiny: no 0..1 assumption


def test_erosion_toggle_and_mode_rescore_from_cache(scored, qtbot):
    viewer, w, _ = scored
    raw = viewer.layers[HEATMAP].metadata["raw"].copy()
    w.eroded.value = True
    eroded = viewer.layers[HEATMAP].metadata["raw"]
    ok = ~np.isnan(raw)
    assert (eroded[ok] <= raw[ok]).all() and (eroded[ok] < raw[ok]).any()
    w.eroded.value = False
    slide = w.session.slide
    slide.reads = 0
    w.mode.value = "max"
    wait_worker(qtbot, w)
    assert w.session.result.mode == "max" and w.session.result.from_cache
    assert slide.reads == 0


def test_review_row_and_point_centre_the_view(scored, qtbot):
    viewer, _w, _ = scored
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review)
    review.refresh()
    assert review.table.rowCount() == 10
    review.table.selectRow(2)
    pts = viewer.layers[TOPK]
    np.testing.assert_allclose(viewer.camera.center[-2:], pts.data[2], atol=1e-6)
    assert "abnormal:" in review.details.text() and pts.features["abnormal_terms"][2] in review.details.text()
    pts.selected_data = {4}
    assert {i.row() for i in review.table.selectedItems()} == {4}
    np.testing.assert_allclose(viewer.camera.center[-2:], pts.data[4], atol=1e-6)


def test_cancel_keeps_what_was_scored(viewer, qtbot, sample_slides, fitted_on_sample, tmp_path):
    model = fitted_on_sample.save(tmp_path / "model.safetensors")
    _open(viewer, sample_slides.anomalous)
    w = ScoreWidget(viewer)
    w.model.value = model
    w.patch_um.value = 32.0  # 64 px patches: many batches
    w.batch_size.value = 2
    w.start()
    qtbot.waitUntil(lambda: w._heat is not None and np.isfinite(w._heat).sum() >= 4, timeout=60_000)
    w._on_run()  # the Run button is Cancel while running
    wait_worker(qtbot, w)
    n = int(np.isfinite(w._heat).sum())
    assert 4 <= n < len(w._grid)
    assert w.session.result is None and HEATMAP in viewer.layers
    assert w.run_button.text == "Run"


def test_term_edit_rescores_from_cache_without_pixel_reads(scored, qtbot, errors):
    viewer, w, _ = scored
    terms = TermsWidget(viewer)
    before = w.session.result.scores.score.copy()
    slide = w.session.slide
    slide.reads = 0
    terms.abnormal.list.takeItem(0)
    terms.normal.add(text="reactive germinal centres")
    assert terms.apply()
    wait_worker(qtbot, w)
    assert slide.reads == 0
    assert w.session.result.from_cache
    assert not np.allclose(w.session.result.scores.score, before)
    assert "retraining is advisable" in terms.status.text()
    assert not errors


def test_empty_pool_is_refused(scored, errors):
    viewer, w, _ = scored
    terms = TermsWidget(viewer)
    terms.normal.list.clear()
    assert not terms.apply()
    assert any("empty" in e for e in errors)
    assert w.session.detector.pools.normal  # unchanged


def test_retrain_changes_scores_and_saves_a_loadable_checkpoint(scored, qtbot, tmp_path, errors):
    from napari_anonavila.detector import Detector

    viewer, w, _ = scored
    shapes = viewer.add_shapes([np.array([[300, 300], [300, 700], [700, 700], [700, 300]])], shape_type="polygon",
                               name="normal", units=("um", "um"))
    r = RetrainWidget(viewer)
    r.regions.value = shapes
    r.epochs.value = 3
    r.batch_size.value = 8
    before = w.session.result.scores.score.copy()
    r.start()
    qtbot.waitUntil(lambda: r.worker is None, timeout=60_000)
    wait_worker(qtbot, w)
    assert len(r.plot.losses) >= 3
    assert not np.allclose(w.session.result.scores.score, before)
    r.out.value = tmp_path / "retrained-v1.safetensors"
    path = r.save()
    again = Detector.load(path)
    np.testing.assert_allclose(again.score_embeddings(again.reference[:5]).score,
                               w.session.detector.score_embeddings(again.reference[:5]).score)
    assert not errors


def test_bad_inputs_show_messages_and_leave_the_viewer_usable(viewer, qtbot, errors, tmp_path, sample_slides):
    w = ScoreWidget(viewer)
    w._on_run()  # no slide layer
    assert "no slide layer" in errors[-1]
    _open(viewer, sample_slides.anomalous)
    bad = tmp_path / "wrong.safetensors"
    bad.write_bytes(b"this is not a checkpoint")
    w.model.value = bad
    w._on_run()
    assert "wrong.safetensors" in errors[-1]
    w.model.value = ""
    w._on_run()  # neither a model nor normal regions for the demo fit
    assert "Shapes layer of normal regions" in errors[-1]
    assert w.worker is None and w.run_button.text == "Run"
    viewer.add_points([[1, 1]])  # still usable
    assert len(viewer.layers) == 2


def test_demo_fit_on_normal_regions_then_score(viewer, qtbot, sample_slides):
    layer = _open(viewer, sample_slides.anomalous)
    shapes = viewer.add_shapes([np.array([[0, 0], [0, 400], [400, 400], [400, 0]])], shape_type="rectangle",
                               name="normal", units=("um", "um"))
    w = ScoreWidget(viewer)
    w.slide_layer.value = layer
    w.normal_layer.value = shapes
    w.patch_um.value = 64.0
    w.start()
    qtbot.waitUntil(lambda: w.session.result is not None, timeout=120_000)
    assert w.session.detector.backend_spec == "demo"
    assert TOPK in viewer.layers


def test_current_view_region_scores_only_what_is_visible(viewer, qtbot, sample_slides, fitted_on_sample, tmp_path):
    layer = _open(viewer, sample_slides.anomalous)
    w = ScoreWidget(viewer)
    w.model.value = fitted_on_sample.save(tmp_path / "m.safetensors")
    w.patch_um.value = 64.0
    w.region.value = "current view"
    viewer.camera.center = (256, 256)  # world units are microns (0.5 um/px): the top-left quarter
    viewer.camera.zoom = 4.0
    qtbot.wait(200)
    layer.refresh()
    w.start()
    wait_worker(qtbot, w)
    res = w.session.result
    full = (2048 // 128) ** 2
    assert 0 < len(res.scores) < full
    x0, y0 = res.grid.xy_l0().min(axis=0)
    assert x0 < 1024 and y0 < 1024


def test_retrain_on_another_normal_slide(scored, qtbot, sample_slides):
    viewer, w, _ = scored
    normal = _open(viewer, sample_slides.normal)
    r = RetrainWidget(viewer)
    r.other_slide.value = normal
    r.epochs.value = 2
    before = w.session.result.scores.score.copy()
    r.start()
    qtbot.waitUntil(lambda: r.worker is None, timeout=120_000)
    wait_worker(qtbot, w)
    assert not np.allclose(w.session.result.scores.score, before)
    assert w.session.detector.info["n_train"] > 20
