"""The calibrated heatmap in a real window: z on one fixed scale for every slide, significant patches outlined,
z and p in the Review list, a switch to raw scores, and Retrain > Calibrate only for an uncalibrated model."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import click, layer_of, open_slide, open_widget, wait_worker

HEATMAP, SIGNIFICANT = "anomaly heatmap", "significant patches (FDR 5%)"


def _score(viewer, qtbot, w, layer, model):
    w.slide_layer.value = layer
    w.model.value = model
    w.patch_um.value = 64.0
    click(w.run_button)
    wait_worker(qtbot, w)
    assert w.session.result is not None
    heat = layer_of(viewer, HEATMAP)
    return tuple(heat.contrast_limits), heat.metadata["label"], w.session.result


def test_two_slides_share_one_fixed_z_scale(make_napari_viewer, qtbot, sample_slides, calibrated_model, errors):
    from napari_anonavila._napari.layers import Z_RANGE

    model = calibrated_model
    viewer = make_napari_viewer()
    normal, anomalous = open_slide(viewer, sample_slides.normal), open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    clim_a, label_a, res_a = _score(viewer, qtbot, w, anomalous, model)
    assert "z" in label_a and "fixed scale" in label_a and w.legend.value.startswith(f"Heatmap: {label_a}")
    np.testing.assert_allclose(np.nanmax(layer_of(viewer, HEATMAP).metadata["raw"]), res_a.z.max(), rtol=1e-6)
    sig = layer_of(viewer, SIGNIFICANT)
    assert len(sig.data) == int(res_a.significant().sum()) > 0
    review = open_widget(viewer, "Review top-k")
    headers = [review.table.horizontalHeaderItem(c).text() for c in range(review.table.columnCount())]
    assert headers[:3] == ["rank", "z", "p"]
    assert float(review.table.item(0, 1).text()) == pytest.approx(res_a.z.max(), abs=0.05)
    heat_a = layer_of(viewer, HEATMAP, anomalous)
    clim_n, _label, res_n = _score(viewer, qtbot, w, normal, model)
    assert clim_n == clim_a and clim_a[1] == Z_RANGE[1]  # same colour, same meaning on both slides
    assert res_n.z.max() < res_a.z.max()
    # each slide keeps its own results, named after it, directly above it; the first slide's are intact
    heat_n = layer_of(viewer, HEATMAP, normal)
    assert heat_n is not heat_a and "normal.tif" in heat_n.name and "anomalous.tif" in heat_a.name
    np.testing.assert_allclose(np.nanmax(heat_a.metadata["raw"]), res_a.z.max(), rtol=1e-6)
    names = [ly.name for ly in viewer.layers]
    for slide in (normal, anomalous):
        i = names.index(slide.name)
        assert names[i + 1].startswith("anomaly heatmap [") and slide.name in names[i + 1]
        assert all(slide.name in n for n in names[i + 1 : i + 3])
    # selecting the first slide shows its own result again, without scoring it again
    viewer.layers.selection.active = anomalous
    assert w.worker is None and w.session.result is res_a  # shown again (its tiles read for display), not scored
    assert float(review.table.item(0, 1).text()) == pytest.approx(res_a.z.max(), abs=0.05)
    viewer.layers.selection.active = normal
    w.values.value = "raw score (per slide)"
    heat = layer_of(viewer, HEATMAP)
    assert "raw" in heat.metadata["label"] and tuple(heat.contrast_limits) != clim_n
    assert not errors


def test_retrain_calibrate_only_gives_an_uncalibrated_model_z(make_napari_viewer, qtbot, sample_slides,
                                                              fitted_on_sample, tmp_path, errors):
    from napari_anonavila.detector import Detector

    det = Detector.load(fitted_on_sample.save(tmp_path / "m.safetensors"))
    det.calibration = None
    model = det.save(tmp_path / "uncalibrated.safetensors")
    viewer = make_napari_viewer()
    normal, anomalous = open_slide(viewer, sample_slides.normal), open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    _clim, label, res = _score(viewer, qtbot, w, anomalous, model)
    assert "uncalibrated" in label and "uncalibrated" in w.scores_label.value and np.isnan(res.z).all()
    r = open_widget(viewer, "Retrain")
    r.other_slides.value = [normal]
    before = w.session.detector.mlp.linear1.weight.detach().clone()
    click(r.calibrate_button)
    qtbot.waitUntil(lambda: r.worker is None, timeout=120_000)
    wait_worker(qtbot, w)
    det = w.session.detector
    assert det.calibration is not None and "normal.tif" in det.calibration.source
    assert np.array_equal(det.mlp.linear1.weight.detach().numpy(), before.numpy())  # the MLP is kept
    assert w.session.result.calibration is det.calibration and np.isfinite(w.session.result.z).all()
    assert "fixed scale" in layer_of(viewer, HEATMAP).metadata["label"]
    assert not errors


def test_calibrate_only_on_several_normal_slides_each_on_its_own_scale(make_napari_viewer, qtbot, sample_slides,
                                                                       fitted_on_sample, tmp_path, errors):
    """Retrain > Calibrate only with several normal slides chosen: each slide a unit of the reference (as
    ``anonavila calibrate``), the leave-one-slide-out check run, and with 'each slide on its own scale' the slides
    normalised; the legend says so, and what a reference of three slides cannot do."""
    from napari_anonavila.detector import Detector
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    det = Detector.load(fitted_on_sample.save(tmp_path / "m.safetensors"))
    det.calibration = None
    model = det.save(tmp_path / "uncalibrated.safetensors")
    extra = [write_pyramid_tiff(tmp_path / f"n{i}.tif", make_tissue(768, 200 + i, variation=1.0)[0], 0.5)
             for i in range(2)]
    viewer = make_napari_viewer()
    normals = [open_slide(viewer, p) for p in (sample_slides.normal, *extra)]
    anomalous = open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    _score(viewer, qtbot, w, anomalous, model)
    r = open_widget(viewer, "Retrain")
    r.other_slides.value = normals[:1]
    r.own_scale.value = True
    click(r.calibrate_button)  # one slide has no other slide to be scaled against: refused before any work
    assert r.worker is None and any("two or more normal slides" in e for e in errors)
    errors.clear()
    r.other_slides.value = normals
    click(r.calibrate_button)
    qtbot.waitUntil(lambda: r.worker is None, timeout=180_000)
    wait_worker(qtbot, w)
    cal = w.session.detector.calibration
    assert cal.k_slides == 3 and cal.normalise == "slide" and (cal.patch_slides >= 0).all()
    assert w.session.detector.info["reference_check"]["k_slides"] == 3
    assert "each slide on its own scale" in w.legend.value and "cannot fall below 0.25" in w.legend.value
    res = w.session.result
    assert res.calibration_summary["normalise"] == "slide" and abs(float(np.median(res.z))) < 1e-9
    assert not errors
