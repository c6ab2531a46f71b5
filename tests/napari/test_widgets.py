"""The Score, Term and Retrain widgets in a real napari window, opened through the plugin machinery."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import click, draw_shapes, layer_of, open_slide, open_widget, wait_worker

HEATMAP, TOPK = "anomaly heatmap", "top-k patches"


@pytest.fixture
def scored(viewer, qtbot, sample_slides, fitted_on_sample, tmp_path):
    """A viewer with the sample slide scored by a checkpoint (patch 64 um = 128 px)."""
    layer = open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    w.model.value = fitted_on_sample.save(tmp_path / "model.safetensors")
    w.patch_um.value = 64.0
    click(w.run_button)
    wait_worker(qtbot, w)
    assert w.session.result is not None
    return viewer, w, layer


def test_score_layers_and_features(scored):
    viewer, w, _ = scored
    heat, pts = layer_of(viewer, HEATMAP), layer_of(viewer, TOPK)
    assert len(pts.data) == 10
    assert list(pts.features.columns)[:4] == ["rank", "index", "x_l0", "y_l0"]
    assert list(pts.text.values[:2]) == ["1", "2"]  # short rank labels; the terms are in the Review list
    assert pts.features["score"].is_monotonic_decreasing
    assert w.session.result.calibration is not None  # trained here: its held-out patches calibrate it
    for k in range(3):  # the heatmap cell under each point holds that patch's z (the calibrated heatmap)
        r, c = np.round(heat.world_to_data(pts.data_to_world(pts.data[k]))).astype(int)[-2:]
        assert heat.metadata["raw"][r, c] == pytest.approx(pts.features["z"][k])
    assert "max" in w.scores_label.value and "eroded" in w.scores_label.value
    w.values.value = "raw score (per slide)"
    for k in range(3):  # and its raw score when switched
        r, c = np.round(heat.world_to_data(pts.data_to_world(pts.data[k]))).astype(int)[-2:]
        assert heat.metadata["raw"][r, c] == pytest.approx(pts.features["score"][k])
    _lo, hi = heat.contrast_limits
    assert hi < 1  # scores are tiny: no 0..1 assumption


def test_result_layers_are_added_on_separate_event_loop_turns(viewer, qtbot, sample_slides, fitted_on_sample,
                                                               tmp_path):
    """napari takes ~0.2 s per new layer here: the window must get a turn between the result layers, and a click on
    another slide in that turn must not move them (the run is busy until its last layer is drawn)."""
    from qtpy.QtCore import QTimer

    other = open_slide(viewer, sample_slides.normal)
    layer = open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    w.slide_layer.value, w.patch_um.value = layer, 64.0
    w.model.value = fitted_on_sample.save(tmp_path / "model.safetensors")
    turns, seen = [0], []

    def on_inserted(event):
        kind = event.value.metadata.get("anonavila_result")
        seen.append((kind, turns[0], w.worker is None, w.run_button.text))
        if kind == TOPK:  # a user's click lands in the next turn
            QTimer.singleShot(0, lambda: (turns.__setitem__(0, turns[0] + 1),
                                          setattr(viewer.layers.selection, "active", other)))

    viewer.layers.events.inserted.connect(on_inserted)
    click(w.run_button)
    wait_worker(qtbot, w)
    kinds = [k for k, *_ in seen]
    assert kinds == [HEATMAP, TOPK, "significant patches (FDR 5%)"]
    assert seen[2][1] == seen[1][1] + 1  # the window had a turn between the two points layers
    assert all(not done and text == "Cancel" for _k, _t, done, text in seen)  # the run lasts until its last layer
    assert w.session.slide_layer is layer and w.run_button.text == "Run"
    for kind in (HEATMAP, TOPK, "significant patches (FDR 5%)"):  # all drawn for the scored slide, above it
        assert layer.name in layer_of(viewer, kind, layer).name
    assert w.session.result_of(layer) is w.session.result and w.session.result_of(other) is None


def test_progress_is_painted_with_the_next_frame_not_inside_its_handler(viewer, qtbot, sample_slides,
                                                                       fitted_on_sample, tmp_path):
    """QProgressBar.setValue repaints at once, and in napari's window that paint draws the OpenGL canvas (0.35 s here
    after a layer is added): a worker's progress event must only schedule the bar's paint."""
    from qtpy.QtCore import QEvent, QObject

    viewer.window.show()  # a hidden window paints nothing
    layer = open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    w.slide_layer.value, w.patch_um.value = layer, 64.0
    w.model.value = fitted_on_sample.save(tmp_path / "model.safetensors")
    inside, paints = [False], {"inside": 0, "after": 0}

    class Paints(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                paints["inside" if inside[0] else "after"] += 1
            return False

    counter = Paints()
    w.progress.native.installEventFilter(counter)
    handler = w._on_yield

    def on_yield(event):  # the run connects the instance's handler, so this wraps the worker's every event
        inside[0] = True
        try:
            handler(event)
        finally:
            inside[0] = False

    w._on_yield = on_yield
    click(w.run_button)
    wait_worker(qtbot, w)
    qtbot.wait(50)
    assert w.session.result is not None and w.progress.value == w.progress.max
    assert paints["after"] > 0  # the bar was drawn, in turns of its own
    assert paints["inside"] == 0


def test_low_scores_are_visible_and_unscored_cells_transparent(scored):
    viewer, _w, _ = scored
    heat = layer_of(viewer, HEATMAP)
    raw = heat.metadata["raw"]
    lo, hi = heat.contrast_limits
    shown = np.asarray(heat.data)
    scored_cells = ~np.isnan(raw)
    rgba = heat.colormap.map((np.clip(shown, lo, hi) - lo) / (hi - lo))
    rgba = rgba.reshape(*shown.shape, 4)
    assert (rgba[~scored_cells][:, 3] == 0).all()  # no tissue: transparent
    assert (rgba[scored_cells][:, 3] >= 0.3).all()  # every scored cell, the lowest included, is coloured


def test_erosion_toggle_and_mode_rescore_from_cache(scored, qtbot):
    viewer, w, _ = scored
    raw = layer_of(viewer, HEATMAP).metadata["raw"].copy()
    w.eroded.value = True
    eroded = layer_of(viewer, HEATMAP).metadata["raw"]
    ok = ~np.isnan(raw)
    assert (eroded[ok] <= raw[ok]).all() and (eroded[ok] < raw[ok]).any()
    w.eroded.value = False
    slide = w.session.slide
    slide.reads = 0
    w.mode.value = "max"
    wait_worker(qtbot, w)
    assert w.session.result.mode == "max" and w.session.result.from_cache
    assert slide.reads == 0


def test_term_edit_rescores_from_cache_without_pixel_reads(scored, qtbot, errors):
    viewer, w, _ = scored
    terms = open_widget(viewer, "Term pools")
    before = w.session.result.score.copy()
    slide = w.session.slide
    slide.reads = 0
    terms.abnormal.list.takeItem(0)
    terms.normal.add(text="reactive germinal centres")
    worker = terms.apply()
    assert worker is not None
    qtbot.waitUntil(lambda: terms.worker is None, timeout=60_000)
    wait_worker(qtbot, w)
    assert slide.reads == 0
    assert w.session.result.from_cache
    assert not np.allclose(w.session.result.score, before)
    assert "retraining is advisable" in terms.status.text()
    assert "(edited)" in w.model_info.value
    assert not errors


def test_apply_changes_only_edited_terms_and_says_default_until_then(scored, qtbot, errors):
    from napari_anonavila.terms import TermPools

    viewer, w, _ = scored
    before = w.session.detector.pools
    text_before = w.session.detector.normal_text.clone()
    assert sum(p.endswith(" ") for p in before.normal + before.abnormal) == 12  # the authors' trailing spaces
    terms = open_widget(viewer, "Term pools")
    assert terms.apply() is None and "No term changed" in terms.status.text()
    assert w.session.detector.pools is before and "edited" not in w.model_info.value
    plain = next(i for i, p in enumerate(before.normal) if not p.endswith(" "))
    terms.normal.list.item(plain).setText(terms.normal.list.item(plain).text() + " nodules")
    assert terms.apply() is not None
    qtbot.waitUntil(lambda: terms.worker is None, timeout=60_000)
    wait_worker(qtbot, w)
    after = w.session.detector.pools
    assert [i for i, (a, b) in enumerate(zip(before.normal, after.normal, strict=True)) if a != b] == [plain]
    assert after.abnormal == before.abnormal  # byte for byte, trailing spaces kept
    keep = [i for i in range(len(before.normal)) if i != plain]
    assert torch.equal(w.session.detector.normal_text[keep], text_before[keep])
    assert "lymph-node (edited)" in w.model_info.value
    terms.restore_defaults()
    assert terms.apply() is not None
    qtbot.waitUntil(lambda: terms.worker is None, timeout=60_000)
    wait_worker(qtbot, w)
    assert w.session.detector.pools == TermPools.default() and "edited" not in w.model_info.value
    assert not errors


def test_empty_pool_is_refused(scored, errors):
    viewer, w, _ = scored
    terms = open_widget(viewer, "Term pools")
    terms.normal.list.clear()
    assert terms.apply() is None
    assert any("empty" in e for e in errors)
    assert w.session.detector.pools.normal  # unchanged


def test_retrain_changes_scores_and_saves_versioned_checkpoints(scored, qtbot, tmp_path, errors):
    from napari_anonavila.detector import Detector

    viewer, w, slide_layer = scored
    normal = draw_shapes(viewer, slide_layer, [[[100, 100], [100, 600], [600, 600], [600, 100]]])
    r = open_widget(viewer, "Retrain")
    r.regions.value = viewer.layers[normal.name]
    r.epochs.value = 3
    r.batch_size.value = 8
    before = w.session.result.score.copy()
    click(r.train_button)
    qtbot.waitUntil(lambda: r.worker is None, timeout=60_000)
    wait_worker(qtbot, w)
    assert not errors
    assert len(r.plot.losses) >= 3
    assert not np.allclose(w.session.result.score, before)
    # the default name is versioned, next to the checkpoint in use
    assert r.out.value.name == "model-v1.safetensors" and r.out.value.parent == tmp_path
    path = r.save()
    again = Detector.load(path)
    np.testing.assert_allclose(again.score_embeddings(again.reference[:5]).score,
                               w.session.detector.score_embeddings(again.reference[:5]).score)
    r.out.value = path  # saving again under the same name: GUI wording, and the next free name is offered
    assert r.save() is None
    assert "already exists" in errors[-1] and "--overwrite" not in errors[-1]
    assert r.out.value.name == "model-v2.safetensors"


def test_a_small_field_suggests_a_smaller_patch(scored, qtbot, errors):
    viewer, w, slide_layer = scored
    # a 250 um field at the default 128 um patch holds at most 1 patch; 32 um gives enough
    small = draw_shapes(viewer, slide_layer, [[[300, 300], [300, 550], [550, 550], [550, 300]]])
    w.session.detector = None
    w.model.value = ""
    w.normal_layer.value = viewer.layers[small.name]
    w.patch_um.value = 128.0
    click(w.run_button)
    wait_worker(qtbot, w)
    assert errors and "use a smaller patch" in errors[-1] and "um gives" in errors[-1]


def test_bad_inputs_show_messages_and_leave_the_viewer_usable(viewer, qtbot, errors, tmp_path, sample_slides):
    w = open_widget(viewer, "Score")
    click(w.run_button)  # no slide layer
    assert "no slide layer" in errors[-1]
    open_slide(viewer, sample_slides.anomalous)
    bad = tmp_path / "wrong.safetensors"
    bad.write_bytes(b"this is not a checkpoint")
    w.model.value = bad
    click(w.run_button)
    wait_worker(qtbot, w)  # the model is read in the worker; its error comes back as a message
    assert "wrong.safetensors" in errors[-1]
    w.model.value = ""
    click(w.run_button)  # neither a model nor normal regions for the demo fit
    assert "Shapes layer of normal regions" in errors[-1]
    assert w.worker is None and w.run_button.text == "Run"
    viewer.add_points([[1, 1]])  # still usable
    assert len(viewer.layers) >= 2


def test_current_view_region_scores_only_what_is_visible(viewer, qtbot, sample_slides, fitted_on_sample, tmp_path):
    layer = open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    w.model.value = fitted_on_sample.save(tmp_path / "m.safetensors")
    w.patch_um.value = 64.0
    w.region.value = "current view"
    viewer.camera.center = (256, 256)  # world units are microns (0.5 um/px): the top-left quarter
    viewer.camera.zoom = 4.0
    qtbot.wait(200)
    layer.refresh()
    click(w.run_button)
    wait_worker(qtbot, w)
    res = w.session.result
    assert 0 < len(res) < (2048 // 128) ** 2
    x0, y0 = res.grid.xy_l0().min(axis=0)
    assert x0 < 1024 and y0 < 1024


def test_retrain_on_another_normal_slide(scored, qtbot, sample_slides):
    viewer, w, slide_layer = scored
    before = w.session.result.score.copy()
    normal = open_slide(viewer, sample_slides.normal)  # selected: the widgets now show this slide (no result yet)
    assert w.session.result is None
    r = open_widget(viewer, "Retrain")
    r.other_slides.value = [normal]
    r.epochs.value = 2
    click(r.train_button)
    qtbot.waitUntil(lambda: r.worker is None, timeout=120_000)
    wait_worker(qtbot, w)
    assert w.session.detector.info["n_train"] > 20
    slide = w.session.slide_layer  # back to the scored slide: its result was made by the old model, so it is
    viewer.layers.selection.active = slide_layer  # re-scored from the cache, never shown stale
    wait_worker(qtbot, w)
    assert slide is not w.session.slide_layer and w.session.result_is_current()
    assert not np.allclose(w.session.result.score, before)


def test_cancel_then_run_again_resumes_to_the_uninterrupted_result(viewer, qtbot, fitted_on_sample, tmp_path):
    """Cancel a run on a slide of several cache chunks after a chunk is committed; Run again encodes only the
    rest and ends with the scores an uninterrupted run gives."""
    from napari_anonavila.pipeline import score_slide
    from napari_anonavila.synthetic import write_wsi

    wsi = write_wsi(tmp_path / "large.svs", 6144, 4096, mpp=0.5, seed=11, n_anomalies=5)
    model = fitted_on_sample.save(tmp_path / "model.safetensors")
    open_slide(viewer, wsi.path)
    w = open_widget(viewer, "Score")
    w.model.value = model
    w.patch_um.value = 32.0  # 64 px: about 5000 patches, three chunks of the embedding cache
    click(w.run_button)
    qtbot.waitUntil(lambda: w._scored >= 3000, timeout=120_000)  # past the first committed chunk (2048)
    click(w.run_button)  # now Cancel
    wait_worker(qtbot, w)
    assert w.scores_label.value.startswith("cancelled:") and w.session.result is None
    click(w.run_button)
    wait_worker(qtbot, w)
    res = w.session.result
    ref = score_slide(fitted_on_sample, wsi.path, patch_px=64)  # no cache: a plain uninterrupted run
    assert 2048 <= res.n_from_cache < len(ref)
    np.testing.assert_array_equal(res.grid.cells_rc, ref.grid.cells_rc)
    np.testing.assert_array_equal(res.score, ref.score)


def test_a_renamed_shapes_layer_is_listed_by_its_new_name(viewer, sample_slides):
    layer = open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    shapes = draw_shapes(viewer, layer, [[[100, 100], [100, 600], [600, 600], [600, 100]]])
    shapes.name = "normal lymph node"
    combo = w.normal_layer.native
    assert "normal lymph node" in [combo.itemText(i) for i in range(combo.count())]


def test_cancel_while_the_model_is_built_acts_within_a_second(viewer, qtbot, sample_slides, monkeypatch, errors):
    """Building a model has no progress of its own; the bar is busy, counts seconds, and Cancel is immediate."""
    import time

    from napari_anonavila.detector import Detector

    real_create = Detector.create

    def slow_create(*args, **kwargs):  # a model as slow to build as CONCH from a cold disk
        time.sleep(20)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(Detector, "create", staticmethod(slow_create))
    layer = open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    w.slide_layer.value = layer
    w.normal_layer.value = draw_shapes(viewer, layer, [[[100, 100], [100, 600], [600, 600], [600, 100]]])
    click(w.run_button)
    qtbot.waitUntil(lambda: "building the demo model (1 s" in (w.progress.label or ""), timeout=10_000)
    assert w.progress.max == 0  # busy, not a bar stuck at 0
    t0 = time.perf_counter()
    click(w.run_button)
    wait_worker(qtbot, w, timeout=5_000)
    assert time.perf_counter() - t0 < 1.0
    assert w.session.detector is None and w.scores_label.value == "cancelled" and not errors


def test_a_slide_without_mpp_gets_one_in_the_score_panel(viewer, qtbot, sample_slides, fitted_on_sample, tmp_path,
                                                         errors):
    """The file says nothing about microns: the Score panel offers 'slide mpp'; set, the slide works in microns
    (scale, units, patch size) beside micron slides; once it has a result, a new mpp is refused."""
    import tifffile

    from napari_anonavila.sample import make_tissue

    bare = tmp_path / "no_mpp.tif"
    tifffile.imwrite(bare, make_tissue(1024, 7)[0], tile=(256, 256), photometric="rgb", metadata=None)
    micron = open_slide(viewer, sample_slides.normal)
    with pytest.warns(UserWarning, match="Score's 'slide mpp'"):
        pixels = open_slide(viewer, bare)
    w = open_widget(viewer, "Score")
    w.slide_layer.value = micron
    assert w.slide_mpp.native.isHidden()  # (the window itself is not shown in tests)
    w.slide_layer.value = pixels
    assert not w.slide_mpp.native.isHidden() and w.slide_mpp.value == 0 and tuple(pixels.units) == ("pixel", "pixel")
    w.slide_mpp.value = 0.5
    assert tuple(pixels.scale) == (0.5, 0.5) and tuple(str(u) for u in pixels.units) == ("micrometer",) * 2
    assert pixels.metadata["anonavila_slide"].mpp_source == "user" and not errors
    w.model.value = fitted_on_sample.save(tmp_path / "m.safetensors")
    w.patch_um.value = 64.0
    click(w.run_button)
    wait_worker(qtbot, w)
    assert w.session.result.grid.patch_size_l0 == 128  # 64 um at 0.5 um/px
    assert tuple(layer_of(viewer, HEATMAP).scale) == (64.0, 64.0)
    w.slide_mpp.value = 0.25
    assert errors and "already has a result" in errors[-1] and w.slide_mpp.value == 0.5
