"""The QA widget: review marks, export with regions, GeoJSON import, rejected findings to the normal reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_anonavila.annotations.geojson import read_geojson

from .conftest import click, draw_shapes, layer_of, open_slide, open_widget, wait_worker

TOPK = "top-k patches"


@pytest.fixture
def qa(viewer, qtbot, sample_slides, fitted_on_sample, tmp_path, errors):
    slide_layer = open_slide(viewer, sample_slides.anomalous)
    w = open_widget(viewer, "Score")
    w.model.value = fitted_on_sample.save(tmp_path / "m.safetensors")
    w.patch_um.value = 64.0
    click(w.run_button)
    wait_worker(qtbot, w)
    return viewer, w, open_widget(viewer, "QA review and export"), slide_layer


def _export(qtbot, qa_widget):
    click(qa_widget.export_button)
    qtbot.waitUntil(lambda: qa_widget.worker is None, timeout=60_000)
    return qa_widget.written


def test_mark_export_and_import_back(qa, qtbot, tmp_path, errors):
    viewer, w, qa_widget, slide_layer = qa
    qa_widget.mark("confirmed", rows=[0])
    qa_widget.mark("rejected", rows=[1, 2])
    pts = layer_of(viewer, TOPK)
    assert list(pts.features["review"][:3]) == ["confirmed", "rejected", "rejected"]
    # a region drawn the way napari's button makes it (slide scale 0.5): 100..300 um = level-0 pixels 200..600
    region = draw_shapes(viewer, slide_layer, [[[100, 100], [100, 300], [300, 300]]], shape_type="polygon")
    qa_widget.regions.value = [region.name]
    qa_widget.folder.value = tmp_path / "qa"
    written = _export(qtbot, qa_widget)
    assert not errors
    feats = read_geojson(written["geojson"])
    review = {f.metadata.get("review") for f in feats if f.metadata}
    assert {"confirmed", "rejected"} <= review
    [drawn] = [f for f in feats if f.name == region.name]
    # world (row, col) um -> level-0 (x, y), corner-based: pixel centres are at +0.5
    np.testing.assert_allclose(drawn.polygons_xy[0][:3], [[200.5, 200.5], [600.5, 200.5], [600.5, 600.5]])
    record = json.loads(written["provenance"].read_text())
    assert set(record["review_state"].values()) == {"confirmed", "rejected"}
    layers = qa_widget.import_geojson(written["geojson"])
    tiles = next(ly for ly in layers if ly.name.endswith("tiles"))
    assert len(tiles.data) == len(w.session.result)
    # an imported tile lies on its patch: its first corner is the patch's top-left corner in world coordinates
    xy = w.session.result.grid.xy_l0()
    corners = {tuple(np.round(slide_layer.data_to_world((y - 0.5, x - 0.5)), 6)) for x, y in xy}
    assert tuple(np.round(tiles.data_to_world(tiles.data[0][0]), 6)) in corners
    # a second export into the same folder is refused unless replacing is ticked
    click(qa_widget.export_button)
    assert "already holds" in errors[-1]
    qa_widget.replace.value = True
    assert _export(qtbot, qa_widget)["geojson"] == written["geojson"]


def test_rejected_findings_feed_the_normal_reference(qa):
    viewer, w, qa_widget, slide_layer = qa
    qa_widget.mark("rejected", rows=[0, 3])
    qa_widget.rejected_to_reference()
    squares = viewer.layers["normal reference (rejected findings)"]
    assert len(squares.data) == 2
    from napari_anonavila._napari.session import shapes_to_polygons_xy_l0

    polys = shapes_to_polygons_xy_l0(squares, slide_layer)
    keys = sorted(w.session.marks().items())
    got = sorted(tuple(np.rint(p.min(axis=0)).astype(int).tolist()) for p in polys)
    assert got == sorted((k.x_l0, k.y_l0) for k, _ in keys)


def test_bad_geojson_and_nothing_selected(qa, tmp_path, errors):
    viewer, _, qa_widget, _ = qa
    bad = tmp_path / "bad.geojson"
    bad.write_text("{")
    qa_widget.geojson.value = bad
    click(qa_widget.import_button)
    assert "not JSON" in errors[-1]
    click(qa_widget.rejected_button)
    assert "no rejected findings" in errors[-1]
    assert len(viewer.layers) >= 3  # still usable


def test_writer_contribution_uses_the_layers_transform(qa, tmp_path):
    """File > Save Selected Layer(s) with the GeoJSON writer, for a layer made with napari's button."""
    viewer, _, _, slide_layer = qa
    region = draw_shapes(viewer, slide_layer, [[[10, 10], [10, 50], [50, 50], [50, 10]]])
    out = tmp_path / "region.geojson"
    viewer.layers.selection = {region}
    viewer.layers.save(str(out), selected=True, plugin="napari-anonavila")
    [f] = read_geojson(out)
    assert f.object_type == "annotation"
    np.testing.assert_allclose(sorted(map(tuple, f.polygons_xy[0][:4])),
                               sorted([(20.5, 20.5), (100.5, 20.5), (100.5, 100.5), (20.5, 100.5)]))
