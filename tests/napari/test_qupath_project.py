"""In a real window: File > Open of a QuPath project.qpproj opens the cohort browser on its images (after the project
moved with them); Page Down shows them one at a time, each opened once (also one opened earlier by File > Open),
ready to score; an image the project cannot find is listed last, in red, and skipped."""

from __future__ import annotations

import shutil

from qtpy.QtCore import Qt

from ..integration.test_qupath_project import _uri, write_project
from .conftest import PLUGIN, click, open_widget, wait_worker


def test_a_qupath_project_opens_as_a_cohort_of_its_images(make_napari_viewer, qtbot, sample_slides,
                                                          fitted_on_sample, tmp_path, errors):
    old = tmp_path / "old" / "lab"
    (old / "images").mkdir(parents=True)
    a = shutil.copy(sample_slides.normal, old / "images" / "case 1.tif")
    b = shutil.copy(sample_slides.anomalous, old / "images" / "case2.tif")
    write_project(old / "qp", [_uri(a), _uri(b), _uri(old / "images" / "gone.svs")],
                  _uri(old / "qp" / "project.qpproj"), ["case 1.tif", "case2.tif", "gone.svs"])
    lab = tmp_path / "new" / "lab"
    shutil.move(old, lab)  # the recorded paths are gone: found relative to the project, as QuPath finds them
    viewer = make_napari_viewer()
    [first] = viewer.open(str(lab / "images" / "case2.tif"), plugin=PLUGIN)  # opened before: never twice
    assert viewer.open(str(lab / "qp" / "project.qpproj"), plugin=PLUGIN) == []
    browser = next(w for w in viewer.window._dock_widgets.values() if "Cohort" in w.name).widget()
    browser = getattr(browser, "_magic_widget", browser)
    names = [browser.table.item(r, 1).text() for r in range(browser.table.rowCount())]
    assert names == ["case 1.tif", "case2.tif", "gone.svs"] and "1 not found" in browser.info.value
    browser.table.selectRow(0)
    seen = []
    for key in [Qt.Key.Key_PageDown] * 3 + [Qt.Key.Key_PageUp] * 2:
        seen.append(viewer.layers.selection.active.name)
        assert [ly.name for ly in viewer.layers if ly.visible] == [seen[-1]]  # one slide at a time
        qtbot.keyClick(browser.table, key)
    assert seen == ["case 1.tif", "case2.tif", "case2.tif", "case2.tif", "case 1.tif"] and len(viewer.layers) == 2
    assert viewer.layers["case2.tif"] is first
    # the slide shown is ready to score in the Score panel
    score = open_widget(viewer, "Score")
    score.session.detector = fitted_on_sample
    assert score.slide_layer.value.name == "case 1.tif"
    score.patch_um.value = 64.0
    click(score.run_button)
    wait_worker(qtbot, score)
    assert score.session.result is not None and not errors
