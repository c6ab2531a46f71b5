"""The QA widget: review marks, export with regions, GeoJSON import, rejected findings to the normal reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_anonavila._napari.layers import slide_layer_data
from napari_anonavila._napari.widgets.export import REJECTED, ExportWidget
from napari_anonavila._napari.widgets.score import TOPK, ScoreWidget
from napari_anonavila._napari.writer import write_shapes
from napari_anonavila.export.geojson import read_geojson
from napari_anonavila.slide import open_slide

from .conftest import wait_worker


@pytest.fixture
def qa(viewer, qtbot, sample_slides, fitted_on_sample, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("napari_anonavila._napari.widgets.export.show_error", shown.append)
    data, kwargs, _ = slide_layer_data(open_slide(sample_slides.anomalous))
    viewer.add_image(data, **kwargs)
    w = ScoreWidget(viewer)
    w.model.value = fitted_on_sample.save(tmp_path / "m.safetensors")
    w.patch_um.value = 64.0
    w.start()
    wait_worker(qtbot, w)
    return viewer, w, ExportWidget(viewer), shown


def test_mark_export_and_import_back(qa, tmp_path):
    viewer, w, qa_widget, shown = qa
    qa_widget.mark("confirmed", indices=[0])
    qa_widget.mark("rejected", indices=[1, 2])
    pts = viewer.layers[TOPK]
    assert list(pts.features["review"][:3]) == ["confirmed", "rejected", "rejected"]
    viewer.add_shapes([np.array([[100, 100], [100, 300], [300, 300]])], shape_type="polygon", name="Normal",
                      units=("um", "um"))
    qa_widget.regions.value = ["Normal"]
    qa_widget.folder.value = tmp_path / "qa"
    written = qa_widget.export()
    assert not shown
    feats = read_geojson(written["geojson"])
    review = {f.metadata.get("review") for f in feats if f.metadata}
    assert {"confirmed", "rejected"} <= review
    normal = [f for f in feats if f.name == "Normal"]
    np.testing.assert_allclose(normal[0].polygons_xy[0][:3], [[200, 200], [600, 200], [600, 600]])  # um -> px
    record = json.loads(written["provenance"].read_text())
    assert set(record["review_state"].values()) == {"confirmed", "rejected"}
    layers = qa_widget.import_geojson(written["geojson"])
    tiles = next(ly for ly in layers if ly.name.endswith("tiles"))
    assert len(tiles.data) == len(w.session.result.scores)
    # a tile polygon sits on its patch: world (row, col) = level-0 (y, x) times the scale
    first = tiles.data[0]
    xy = w.session.result.grid.xy_l0()
    assert any(np.allclose(first[0], [y * 0.5, x * 0.5]) for x, y in xy)


def test_rejected_findings_feed_the_normal_reference(qa):
    viewer, _, qa_widget, _ = qa
    qa_widget.mark("rejected", indices=[0, 3])
    qa_widget.rejected_to_reference()
    assert len(viewer.layers[REJECTED].data) == 2


def test_bad_geojson_and_nothing_selected(qa, tmp_path):
    viewer, _, qa_widget, shown = qa
    bad = tmp_path / "bad.geojson"
    bad.write_text("{")
    qa_widget.geojson.value = bad
    qa_widget.import_button.changed.emit(True)
    assert "not JSON" in shown[-1]
    qa_widget.rejected_button.changed.emit(True)
    assert "no rejected findings" in shown[-1]
    assert len(viewer.layers) >= 3  # still usable


def test_writer_contribution(qa, tmp_path):
    viewer, _, _, _ = qa
    layer = viewer.add_shapes([np.array([[10, 10], [10, 50], [50, 50], [50, 10]])], shape_type="rectangle",
                              name="px region")
    out = write_shapes(str(tmp_path / "r.geojson"), layer.data, {"name": "px region", "scale": [1, 1],
                                                                 "units": ("pixel", "pixel"), "metadata": {}})
    [f] = read_geojson(out[0])
    assert f.object_type == "annotation" and f.polygons_xy[0][0].tolist() == [10.0, 10.0]
    with pytest.raises(ValueError, match="microns per pixel"):
        write_shapes(str(tmp_path / "u.geojson"), layer.data, {"name": "um", "scale": [1, 1],
                                                               "units": ("micrometer", "micrometer"), "metadata": {}})
