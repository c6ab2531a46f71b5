"""A day of slides in a real window: results that reopen from their folders without scoring again (marks saved back
to the folder), and a cohort browsed slide by slide. Slides, folders and cohorts are made by the installed
``anonavila`` and opened through File > Open (``viewer.open(..., plugin=...)``), as a user does."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import PLUGIN, click, layer_of, open_slide, open_widget, wait_worker

EXE = str(Path(sys.executable).with_name("anonavila"))
HEATMAP, SIGNIFICANT, TOPK = "anomaly heatmap", "significant patches (FDR 5%)", "top-k patches"


def _run(*args: str, code: int = 0) -> subprocess.CompletedProcess:
    res = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == code, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def cohort_dir(sample_slides, calibrated_model, tmp_path_factory):
    """``anonavila batch`` over the two sample slides and a corrupt one."""
    root = tmp_path_factory.mktemp("day")
    corrupt = root / "corrupt.svs"
    corrupt.write_bytes(b"II*\x00" + b"\x00" * 64)
    _run("batch", "--model", str(calibrated_model), "--out", str(root / "cohort"), "--n-workers", "1",
         "--patch-um", "64", str(sample_slides.normal), str(sample_slides.anomalous), str(corrupt),
         code=2)  # one slide failed
    return root / "cohort"


def _rows(folder: Path) -> list[dict]:
    with open(folder / "patches.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _state_colours(layer) -> list[str]:
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_anonavila._napari.layers import REVIEW_COLORS

    names = {tuple(np.round(transform_color(c)[0], 3)): s for s, c in REVIEW_COLORS.items()}
    return [names[tuple(np.round(c, 3))] for c in layer.border_color]


@pytest.mark.slow
def test_a_day_of_slides(make_napari_viewer, qtbot, sample_slides, calibrated_model, cohort_dir, errors):
    from qtpy.QtCore import QPoint, Qt

    viewer = make_napari_viewer()
    # 1. two slides scored one after the other: each heatmap right above its own slide, the first one intact
    normal, anomalous = open_slide(viewer, sample_slides.normal), open_slide(viewer, sample_slides.anomalous)
    score = open_widget(viewer, "Score")
    score.model.value, score.patch_um.value = calibrated_model, 64.0
    results, made_active = {}, []
    viewer.layers.selection.events.active.connect(lambda e: made_active.append(e.value))
    for layer in (anomalous, normal):
        score.slide_layer.value = layer
        click(score.run_button)
        wait_worker(qtbot, score)
        results[layer.name] = score.session.result
    names = [ly.name for ly in viewer.layers]
    for layer in (normal, anomalous):
        i = names.index(layer.name)
        assert names[i + 1 : i + 4] == [f"{kind} [{layer.name}]" for kind in (HEATMAP, SIGNIFICANT, TOPK)]
    assert viewer.layers.selection.active is normal  # the slide just scored is current, not its newest layer
    # one slide at a time: the current slide's layers shown, the other slide's hidden (never stacked)
    assert [ly.name for ly in viewer.layers if ly.visible] == [
        "normal.tif", *(f"{kind} [normal.tif]" for kind in (HEATMAP, SIGNIFICANT, TOPK))]
    # a run's new layers never took the selection (napari rebuilds its layer controls for each change)
    assert not [ly.name for ly in made_active if ly is not None and "anonavila_result" in ly.metadata]
    first = layer_of(viewer, HEATMAP, anomalous)
    np.testing.assert_allclose(np.nanmax(first.metadata["raw"]), results[anomalous.name].z.max(), rtol=1e-6)

    # 2. a result folder written by `anonavila batch` reopens through File > Open, without the model
    folder = cohort_dir / "anomalous"
    saved_rows, summary = _rows(folder), json.loads((folder / "summary.json").read_text())
    viewer2 = make_napari_viewer()
    layers = viewer2.open(str(folder), plugin=PLUGIN)
    assert [ly.name for ly in layers] == ["anomalous.tif", f"{HEATMAP} [anomalous.tif]",
                                         f"{SIGNIFICANT} [anomalous.tif]", f"{TOPK} [anomalous.tif]"]
    slide2, heat2, sig2, top2 = layers
    best = max(saved_rows, key=lambda row: float(row["z"]))
    cell = int(best["row"]), int(best["col"])
    # the layer's unclipped values are the saved z, as on a heatmap scored in the window
    z_best = pytest.approx(float(best["z"]), rel=1e-5)  # the CSV's 6 digits; the layer has the exact z
    assert heat2.metadata["scale"] == "fixed" and heat2.metadata["raw"][cell] == z_best
    assert heat2.data[cell] == pytest.approx(min(float(best["z"]), np.max(heat2.data)), rel=1e-5)
    assert len(sig2.data) == sum(r["significant"] == "1" for r in saved_rows) == summary["calibrated"]["n_significant"]
    want_xy = [(t["x_l0"], t["y_l0"]) for t in summary["top_k"]]
    assert list(zip(top2.features["x_l0"], top2.features["y_l0"], strict=True)) == want_xy
    assert list(top2.features["top_abnormal"]) == [t["top_abnormal"].split("|")[0].rsplit(":", 1)[0]
                                                   for t in summary["top_k"]]
    # the points sit on their patches in world coordinates (the slide's microns)
    p = int(saved_rows[0]["size_l0"])
    centre_world = top2.data_to_world(top2.data[0])
    np.testing.assert_allclose(centre_world, slide2.data_to_world([want_xy[0][1] + (p - 1) / 2,
                                                                  want_xy[0][0] + (p - 1) / 2]))
    review = open_widget(viewer2, "Review top-k")
    qa = open_widget(viewer2, "QA review and export")
    viewer2.layers.selection.active = slide2
    assert review.table.rowCount() == 10 and float(review.table.item(0, 1).text()) == pytest.approx(
        summary["top_k"][0]["z"], abs=0.05)
    qa.mark("confirmed", rows=[0])
    qa.mark("rejected", rows=[1])
    saved = json.loads((folder / "reviews.json").read_text())
    cols = saved["columns"]
    assert set(zip(cols["x_l0"], cols["y_l0"], cols["review"], strict=True)) == {
        (*want_xy[0], "confirmed"), (*want_xy[1], "rejected")}
    # ... reopened later, the marks come back; `anonavila export` of the folder carries them too
    viewer3 = make_napari_viewer()
    top3 = viewer3.open(str(folder), plugin=PLUGIN)[3]
    assert _state_colours(top3)[:3] == ["confirmed", "rejected", "unreviewed"]
    _run("export", str(folder), "--out", str(cohort_dir.parent / "export"), "--formats", "csv")
    [table] = (cohort_dir.parent / "export").rglob("*.csv")
    with open(table, newline="") as fh:
        reviews = {(int(r["x_l0"]), int(r["y_l0"])): r["review"] for r in csv.DictReader(fh)}
    assert reviews[want_xy[0]] == "confirmed" and reviews[want_xy[1]] == "rejected"

    # 3. the cohort: File > Open on the batch folder lists its slides ranked, the failure last; a click opens a
    # slide with its results, Page Down goes to the next and hides the one before
    viewer4 = make_napari_viewer()
    assert viewer4.open(str(cohort_dir), plugin=PLUGIN) == []
    [browser] = [w for n, w in viewer4.window.dock_widgets.items() if n.startswith("Cohort browser")]
    review4 = open_widget(viewer4, "Review top-k")
    slides = [browser.table.item(r, 1).text() for r in range(browser.table.rowCount())]
    assert slides == ["anomalous.tif", "normal.tif", "corrupt.svs"]
    assert "failed" in browser.table.item(2, 6).text()
    browser.table.selectRow(0)
    first = viewer4.layers["anomalous.tif"]
    assert first.visible and review4.table.rowCount() == 10
    qtbot.keyClick(browser.table, Qt.Key.Key_PageDown)
    second = viewer4.layers["normal.tif"]
    assert browser.current == 1 and second.visible and not first.visible
    assert not layer_of(viewer4, HEATMAP, first).visible and layer_of(viewer4, HEATMAP, second).visible
    assert review4.session.slide_layer is second and review4.session.result.folder == cohort_dir / "normal"
    qtbot.keyClick(browser.table, Qt.Key.Key_PageDown)  # the corrupt slide has no result: stays on the last one
    assert browser.current == 1
    qtbot.keyClick(browser.table, Qt.Key.Key_PageUp)
    assert browser.current == 0 and first.visible and len(viewer4.layers) == 8
    # a click on a column header sorts by it (numbers as numbers, the failure last either way); Page Down then
    # follows the order shown
    viewer4.window._qt_window.show()  # a header takes clicks once it is laid out on screen
    header = browser.table.horizontalHeader()
    qtbot.waitUntil(lambda: header.isVisible() and header.height() > 0, timeout=10_000)

    def click_header(name: str) -> list[str]:
        col = [browser.table.horizontalHeaderItem(c).text() for c in range(browser.table.columnCount())].index(name)
        browser.table.scrollToItem(browser.table.item(0, col))  # the dock is narrow: scroll the column into view
        middle = header.sectionViewportPosition(col) + header.sectionSize(col) // 2  # not the resize grip at its edge
        qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(middle, header.height() // 2))
        return [browser.table.item(r, 1).text() for r in range(browser.table.rowCount())]

    z = {browser.entries[i].numbers["max_z"]: Path(browser.entries[i].slide).name for i in (0, 1)}
    assert click_header("max z") == [*(z[k] for k in sorted(z)), "corrupt.svs"]
    assert click_header("max z") == [*(z[k] for k in sorted(z, reverse=True)), "corrupt.svs"]
    assert click_header("slide") == ["anomalous.tif", "corrupt.svs", "normal.tif"]
    assert browser.current == 0 and browser.table.selectedItems()[0].text() == "1"  # the selection moved with it
    qtbot.keyClick(browser.table, Qt.Key.Key_PageDown)  # past the failure, which has no result, to normal.tif
    assert browser.current == 1 and second.visible and not first.visible
    assert click_header("#") == ["anomalous.tif", "normal.tif", "corrupt.svs"]
    # a cohort folder copied elsewhere still opens: its result folders are found beside its cohort.csv
    moved = shutil.copytree(cohort_dir, cohort_dir.parent / "moved-cohort")
    viewer5 = make_napari_viewer()
    _dock, browser5 = viewer5.window.add_plugin_dock_widget(PLUGIN, "Cohort browser")
    browser5.source.value = moved / "cohort.csv"
    browser5.table.selectRow(0)
    assert browser5.entries[0].result_dir == moved / "anomalous" and "anomalous.tif" in viewer5.layers
    assert not errors


def test_a_result_folder_is_refused_over_another_slide(make_napari_viewer, sample_slides, calibrated_model,
                                                       tmp_path, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    slide = shutil.copy(sample_slides.anomalous, tmp_path / "case.tif")
    _run("score-slide", str(slide), "--model", str(calibrated_model), "--out", str(tmp_path / "out"),
         "--patch-um", "64")
    [folder] = [p for p in (tmp_path / "out").iterdir() if (p / "summary.json").is_file()]
    viewer = make_napari_viewer()
    shutil.copy(sample_slides.normal, slide)  # same name and size, other tissue
    with pytest.raises(Exception, match="not the slide this result was made on"):
        viewer.open(str(folder), plugin=PLUGIN)
    Path(slide).unlink()
    with pytest.raises(Exception, match="is not there"):
        viewer.open(str(folder), plugin=PLUGIN)
    shutil.copy(sample_slides.anomalous, slide)
    (folder / "reviews.json").write_text('{"marks": [{"x_l0": "x"}]}')
    with pytest.raises(Exception, match=r"reviews\.json: damaged review marks"):
        viewer.open(str(folder), plugin=PLUGIN)
    assert len(viewer.layers) == 0 and len(shown) == 3
