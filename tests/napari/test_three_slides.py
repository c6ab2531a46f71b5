"""A day with three real slides of different units in one real window (issue 38): one slide shown at a time with
exactly its layers, no duplicate result layers, a colour bar and a legend on every heatmap, reopened results
complete with their slide scores, a small retrain that says what became of the calibration, and a model out of its
domain said so, in napari and in summary.json. Everything through the doors a user uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import shared_path
from .conftest import PLUGIN, click, draw_shapes, layer_of, open_widget, wait_worker

EXE = str(Path(sys.executable).with_name("anonavila"))
HEATMAP = "anomaly heatmap"
SLIDES = ("cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs", "os-2-ki67-crop.ome.tif")  # um, pixels, um


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def _shown(viewer) -> list[str]:
    return [ly.name for ly in viewer.layers if ly.visible]


def _group(viewer, slide_layer) -> list[str]:
    link = slide_layer.metadata.get("anonavila_link") or slide_layer.unique_id
    return [slide_layer.name, *(ly.name for ly in viewer.layers if ly.metadata.get("anonavila_for") == link)]


def _only_this_slide(viewer, slide_layer) -> None:
    names = [ly.name for ly in viewer.layers]
    assert len(names) == len(set(names)), f"duplicate layers: {names}"
    assert _shown(viewer) == _group(viewer, slide_layer), (_shown(viewer), slide_layer.name)
    heat = layer_of(viewer, HEATMAP, slide_layer)
    assert heat.visible and heat.colorbar.visible
    others = [ly for ly in viewer.layers if ly.metadata.get("anonavila_result") == HEATMAP and ly is not heat]
    assert not any(ly.colorbar.visible for ly in others)


@pytest.fixture(scope="module")
def batch_folder(tmp_path_factory, calibrated_model):
    paths = [shared_path("slides", s) for s in SLIDES]
    out = tmp_path_factory.mktemp("three") / "cohort"
    res = subprocess.run([EXE, "batch", *map(str, paths), "--model", str(calibrated_model), "--out", str(out),
                          "--n-workers", "1", "--patch-px", "512"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


@pytest.mark.slow
def test_three_slides_of_different_units(make_napari_viewer, qtbot, calibrated_model, batch_folder, errors):
    from qtpy.QtCore import Qt

    from napari_anonavila.errors import MissingMppWarning

    viewer = make_napari_viewer()
    layers = []
    for s in SLIDES:
        with pytest.warns(MissingMppWarning) if s.startswith("tcga") else _nothing():
            layers.append(viewer.open(str(shared_path("slides", s)), plugin=PLUGIN)[0])
    assert _shown(viewer) == [SLIDES[2]]  # the slide opened last, alone: never stacked on the others
    score = open_widget(viewer, "Score")
    score.model.value = calibrated_model
    qtbot.waitUntil(lambda: score.session.detector is not None, timeout=120_000)  # loaded as soon as it was chosen
    for layer in layers:
        score.slide_layer.value = layer  # the slide selector shows the slide it picks, alone
        assert viewer.layers.selection.active is layer and _shown(viewer)[0] == layer.name
        pixels = layer.metadata["mpp"] is None
        assert score.patch_um.label == ("patch (px)" if pixels else "patch (um)")
        assert ("PIXELS" in score.units.value) == pixels
        score.patch_um.value = 512 if pixels else 256
        click(score.run_button)
        wait_worker(qtbot, score)
        _only_this_slide(viewer, layer)
        assert score.legend.value.startswith("Heatmap: anomaly z")
        # a model fitted on synthetic tissue is far out of its domain on real slides: said so, not shown as findings
        assert "WARNING: this tissue is unlike the model's normal reference" in score.legend.value
        assert len(layer_of(viewer, "significant patches (FDR 5%)", layer).data) == 0  # not shown as findings
        assert "OUT OF THE MODEL'S DOMAIN" in score.scores_label.value
    for layer in layers:  # back through them: each alone, its own result shown again
        viewer.layers.selection.active = layer
        _only_this_slide(viewer, layer)

    # the batch run's summary.json says the same, and the reopened results are complete
    for name in ("cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"):
        cal = json.loads((batch_folder / name / "summary.json").read_text())["calibrated"]
        assert cal["out_of_domain"] and "unlike the model's normal reference" in cal["domain_note"]
    viewer2 = make_napari_viewer()
    score2 = open_widget(viewer2, "Score")
    reopened = []
    for name in ("cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"):
        with pytest.warns(MissingMppWarning) if name.startswith("tcga") else _nothing():
            reopened.append(viewer2.open(str(batch_folder / name), plugin=PLUGIN)[0])
        _only_this_slide(viewer2, reopened[-1])
        assert score2.scores_label.value.startswith("uncalibrated") or "significant" in score2.scores_label.value
        legend = next(w for n, w in viewer2.window.dock_widgets.items() if n.startswith("Heatmap legend"))
        text = legend.text.text()
        assert "Heatmap: anomaly z" in text and "Model: demo model" in text and "Slide: " in text
        assert "WARNING: this tissue is unlike" in text and str(batch_folder / name) in text
    n = len(viewer2.layers)
    assert viewer2.open(str(batch_folder / "cmu-1-small-region"), plugin=PLUGIN) == []  # open already: selected
    assert len(viewer2.layers) == n and viewer2.layers.selection.active is reopened[0]
    _only_this_slide(viewer2, reopened[0])

    # the batch folder browsed with Page Down to the end and back: one slide at a time, nothing opened twice
    browser = open_widget(viewer2, "Cohort browser")
    browser.load(batch_folder)
    browser.table.selectRow(0)
    seen = []
    for key in [Qt.Key.Key_PageDown] * 3 + [Qt.Key.Key_PageUp] * 3:
        current = viewer2.layers.selection.active
        seen.append(current.name)
        _only_this_slide(viewer2, current)
        qtbot.keyClick(browser.table, key)
    assert sorted(set(seen)) == sorted(SLIDES) and len(viewer2.layers) == 3 * 4, [ly.name for ly in viewer2.layers]

    # a retrain on a small region says what became of the calibration
    slide = reopened[0]
    viewer2.layers.selection.active = slide
    score2.model.value = calibrated_model
    qtbot.waitUntil(lambda: score2.session.detector is not None, timeout=120_000)
    region = draw_shapes(viewer2, slide, [[[0, 0], [0, 1500], [1500, 1500], [1500, 0]]])  # the whole small slide
    retrain = open_widget(viewer2, "Retrain")
    retrain.regions.value = region
    retrain.epochs.value, retrain.batch_size.value = 1, 4
    click(retrain.train_button)
    qtbot.waitUntil(lambda: retrain.worker is None, timeout=120_000)
    wait_worker(qtbot, score2)  # the retrained model re-scores the slide
    assert "UNCALIBRATED: only" in retrain.status.value and "larger normal region" in retrain.status.value
    assert not [e for e in errors if "failed" in e]
