"""A scripted user session in a real napari window, through the doors a user uses.

Open a slide with the plugin's reader, open the widgets from the plugin machinery, draw a normal region in a
Shapes layer made by napari's own button (which takes the slide's 0.5 um/px scale), fit the demo model, score,
change the patch size and check that heatmap cell edges fall on the right slide pixels in world coordinates,
mark reviews, re-score, check the marks, and cancel after a fit.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_anonavila.grid import make_grid
from napari_anonavila.reviews import PatchKey

from .conftest import WIDGETS, click, draw_shapes, layer_of, open_slide, open_widget, wait_worker

HEATMAP, TOPK = "anomaly heatmap", "top-k patches"


def test_every_widget_opens_from_the_plugins_menu(viewer, qtbot):
    from napari_anonavila._napari.widgets.export import ExportWidget
    from napari_anonavila._napari.widgets.panel import PanelWidget
    from napari_anonavila._napari.widgets.retrain import RetrainWidget
    from napari_anonavila._napari.widgets.review import ReviewWidget
    from napari_anonavila._napari.widgets.score import ScoreWidget
    from napari_anonavila._napari.widgets.terms import TermsWidget

    menu = viewer.window.plugins_menu
    menu.aboutToShow.emit()
    [sub] = [a.menu() for a in menu.actions() if a.text() == "Ano-NAViLa anomaly detection"]
    sub.aboutToShow.emit()
    actions = {a.text(): a for a in sub.actions()}
    assert set(WIDGETS) <= set(actions)
    for name in WIDGETS:
        actions[name].trigger()
    qtbot.wait(50)
    docked = {name.rsplit(" (", 1)[0]: w for name, w in viewer.window.dock_widgets.items()
              if name.endswith("(Ano-NAViLa anomaly detection)")}  # the menu names docks by the display name
    kinds = {"All panels (tabbed)": PanelWidget, "Score": ScoreWidget, "Review top-k": ReviewWidget,
             "Term pools": TermsWidget, "Retrain": RetrainWidget, "QA review and export": ExportWidget}
    for name, kind in kinds.items():
        assert isinstance(docked[name], kind), name
    # every widget of the window shares one session, although napari hands each its own viewer proxy
    assert docked["Score"].session is docked["Retrain"].session
    # ... and opening one through the API again gives the same dock, not a second one
    assert sum(isinstance(w, ScoreWidget) for w in viewer.window.dock_widgets.values()) == 1


def _cell_corner_world(layer, rc):
    return np.asarray(layer.data_to_world(np.asarray(rc, float)))


def _assert_cells_on_slide(viewer, slide_layer, result):
    """Each heatmap cell's edges, in world coordinates, are the edges of its patch's level-0 pixels."""
    heat = layer_of(viewer, HEATMAP)
    p = result.grid.patch_size_l0
    for r, c in result.grid.cells_rc[:: max(1, len(result.grid) // 7)]:
        for dr, dc in ((0, 0), (1, 1), (0, 1)):
            np.testing.assert_allclose(_cell_corner_world(heat, (r + dr - 0.5, c + dc - 0.5)),
                                       _cell_corner_world(slide_layer, ((r + dr) * p - 0.5, (c + dc) * p - 0.5)),
                                       atol=1e-6)
    assert tuple(heat.units) == tuple(slide_layer.units)


def _marks_by_key(session):
    return dict(session.marks().items())


@pytest.mark.slow
def test_scripted_user_session(viewer, qtbot, sample_slides, errors, monkeypatch):
    unit_popups = []
    monkeypatch.setattr("napari._vispy.canvas.show_warning", unit_popups.append)
    warnings_shown = []
    monkeypatch.setattr("napari_anonavila._napari.widgets.score.show_warning", warnings_shown.append)

    slide_layer = open_slide(viewer, sample_slides.anomalous)
    assert slide_layer.scale[-1] == pytest.approx(0.5)
    score, review, qa = (open_widget(viewer, n) for n in ("Score", "Review top-k", "QA review and export"))
    # 1. a normal region drawn in a layer made with napari's button: 100..500 um = level-0 pixels 200..1000
    normal = draw_shapes(viewer, slide_layer, [[[100, 100], [100, 500], [500, 500], [500, 100]]])
    score.normal_layer.value = viewer.layers[normal.name]
    score.patch_um.value = 64.0  # 128 px at 0.5 um/px
    texts = []
    score.progress.changed.connect(lambda *_: texts.append(score.run_button.text))
    click(score.run_button)
    assert score.run_button.text == "Cancel"
    wait_worker(qtbot, score)
    assert not errors
    assert set(texts) == {"Cancel"}  # Run stayed Cancel through the fit and the scoring
    res = score.session.result
    det = score.session.detector
    assert det.is_demo and "NO pathology knowledge" in score.model_info.value
    assert "lymph-node" in score.model_info.value
    # the demo was fitted on the patches inside the drawn box, found independently in level-0 pixels
    box = np.array([[200, 200], [1000, 200], [1000, 1000], [200, 1000]], float)
    expected = make_grid(score.session.slide, patch_px=128, roi_polygons_xy_l0=[box])
    split = det.info["centroid_split"]  # blocks of the region's tissue held out for the centroids
    assert split["kind"] == "held-out groups" and len(split["held_out"]) == 3 and split["groups"] == 16
    assert "block" in split["held_out"][0] and split["n_train"] + split["n_centroid"] == len(expected) >= 8
    # 2. the heatmap and the points sit on the tissue
    _assert_cells_on_slide(viewer, slide_layer, res)
    pts = layer_of(viewer, TOPK)
    for k in range(3):
        x, y = pts.features["x_l0"][k], pts.features["y_l0"][k]
        np.testing.assert_allclose(pts.data_to_world(pts.data[k]),
                                   slide_layer.data_to_world((y + 63.5, x + 63.5)), atol=1e-6)
    assert layer_of(viewer, HEATMAP).colorbar.visible
    assert review.table.rowCount() == 10  # Review was open before the result: filled at once
    # 3. review marks, then a re-score (mode change, from the cache): the marks stay on their patches
    pts.selected_data = {0, 1}
    click(qa.mark_button)
    qa.state.value = "rejected"
    pts.selected_data = {2}
    click(qa.mark_button)
    marks = _marks_by_key(score.session)
    assert sorted(marks.values()) == ["confirmed", "confirmed", "rejected"]
    assert "confirmed 2" in qa.status.value and "rejected 1" in qa.status.value
    score.mode.value = "max"
    wait_worker(qtbot, score)
    assert score.session.result.mode == "max" and score.session.result.from_cache
    pts = layer_of(viewer, TOPK)
    shown = {PatchKey(int(x), int(y), 128): s for x, y, s in
             zip(pts.features["x_l0"], pts.features["y_l0"], pts.features["review"], strict=True) if s != "unreviewed"}
    assert shown == marks
    state = qa.review_state()
    xy = score.session.result.grid.xy_l0()
    assert {PatchKey(int(xy[i, 0]), int(xy[i, 1]), 128): s for i, s in state.items()} == marks
    col = [review.table.horizontalHeaderItem(c).text() for c in range(review.table.columnCount())].index("review")
    assert "rejected" in [review.table.item(r, col).text() for r in range(review.table.rowCount())]
    # 4. a smaller patch: cells move with it; the marks are kept aside and the user is told
    score.patch_um.value = 32.0
    click(score.run_button)
    wait_worker(qtbot, score)
    res32 = score.session.result
    assert res32.grid.patch_size_l0 == 64
    _assert_cells_on_slide(viewer, slide_layer, res32)
    assert qa.review_state() == {}
    assert "3 on patches of another grid" in qa.status.value
    assert any("review mark" in w and "kept" in w for w in warnings_shown)
    # ... and back: the marks return
    score.patch_um.value = 64.0
    click(score.run_button)
    wait_worker(qtbot, score)
    assert len(qa.review_state()) == 3
    # 5. cancel after a fit: a new demo fit, cancelled once scoring has begun
    score.session.detector = None
    score.patch_um.value = 24.0  # a grid not in the cache: scoring reads pixels, in small batches
    score.batch_size.value = 4
    click(score.run_button)
    qtbot.waitUntil(lambda: score._grid is not None and score.progress.label == "encode", timeout=120_000)
    click(score.run_button)  # the same button, now Cancel
    wait_worker(qtbot, score)
    assert score.run_button.text == "Run" and score.worker is None
    assert score.session.result is None and len(layer_of(viewer, TOPK).data) == 0
    assert "cancelled" in score.scores_label.value
    assert review.table.rowCount() == 0
    assert not errors
    assert not [m for m in unit_popups if "Inconsistent units" in str(m)]


def test_review_opened_after_scoring_and_details_follow_a_rescore(viewer, qtbot, sample_slides, fitted_on_sample,
                                                                   tmp_path, errors):
    slide_layer = open_slide(viewer, sample_slides.anomalous)
    score = open_widget(viewer, "Score")
    score.model.value = fitted_on_sample.save(tmp_path / "m.safetensors")
    score.patch_um.value = 64.0
    click(score.run_button)
    wait_worker(qtbot, score)
    review = open_widget(viewer, "Review top-k")
    assert review.table.rowCount() == 10
    review.table.selectRow(2)
    first = review.details.text()
    key = review._selected
    np.testing.assert_allclose(viewer.camera.center[-2:],
                               slide_layer.data_to_world((key.y_l0 + 63.5, key.x_l0 + 63.5)), atol=1e-6)
    score.mode.value = "l2"
    wait_worker(qtbot, score)
    assert review._selected == key  # the same patch stays selected ...
    assert review.details.text() != first  # ... with its new score
    layer_of(viewer, TOPK).selected_data = {4}
    assert {i.row() for i in review.table.selectedItems()} == {4}
    assert not errors
    assert slide_layer is not None


def test_docked_panels_leave_the_canvas_most_of_a_default_window(make_napari_viewer, qtbot):
    """At napari's default window size a docked panel takes a third of the window, not the canvas's space."""
    viewer = make_napari_viewer(show=True)
    for name in ("All panels (tabbed)", "Score", "Cohort browser"):
        open_widget(viewer, name)
    qtbot.wait(200)
    window, canvas = viewer.window._qt_window.width(), viewer.window._qt_viewer.canvas.native.width()
    assert canvas >= window / 3, (canvas, window)
