"""In a real window: a result made from a relative path opens from any working folder and after the project is
moved, found by content; the cohort browser of a moved batch folder opens its slides too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PLUGIN, open_widget

EXE = str(Path(sys.executable).with_name("anonavila"))


@pytest.mark.slow
def test_results_open_from_anywhere_and_after_a_move(make_napari_viewer, tmp_path, sample_slides, calibrated_model,
                                                     monkeypatch):
    lab = tmp_path / "lab"
    (lab / "x").mkdir(parents=True)
    shutil.copy(sample_slides.anomalous, lab / "x" / "s.tif")
    shutil.copy(sample_slides.normal, lab / "x" / "n.tif")
    for cmd in (["score-slide", "x/s.tif", "--out", "res"], ["batch", "x/s.tif", "x/n.tif", "--out", "cohort",
                                                             "--n-workers", "1"]):
        done = subprocess.run([EXE, *cmd, "--model", str(calibrated_model), "--patch-px", "256"], cwd=lab,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    monkeypatch.chdir(tmp_path)  # another working folder
    viewer = make_napari_viewer()
    layers = viewer.open(str(lab / "res" / "s"), plugin=PLUGIN)
    assert [ly.name for ly in layers][:2] == ["s.tif", "anomaly heatmap [s.tif]"]
    moved = tmp_path / "moved"
    shutil.move(str(lab), moved)  # the whole project, slides and results
    monkeypatch.chdir(moved / "x")
    viewer2 = make_napari_viewer()
    layers = viewer2.open(str(moved / "res" / "s"), plugin=PLUGIN)
    assert layers[0].metadata["path"] == str(moved / "x" / "s.tif")  # found beside the result, by content
    browser = open_widget(viewer2, "Cohort browser")
    browser.load(moved / "cohort")
    assert browser.table.rowCount() == 2
    for row in range(2):
        assert browser.open_entry(row) is not None  # each slide of the moved cohort opens on its own tissue
