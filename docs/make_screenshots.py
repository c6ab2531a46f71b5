"""Take the screenshots in docs/images from a real napari window, through the doors a user uses.

The slide opens with ``viewer.open(path, plugin="napari-anonavila")``, the widgets through napari's plugin
machinery (as the Plugins menu opens them), and the normal region is drawn in a Shapes layer made by napari's
own "new shapes layer" button. Run under Xvfb or on a desktop:
xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python docs/make_screenshots.py [calibrated | cohort]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_anonavila._napari.sample_data import sample_folder

OUT = Path(__file__).parent / "images"
PLUGIN = "napari-anonavila"


def pump(seconds: float = 0.5) -> None:
    app = QApplication.instance()
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(widget, timeout: float = 900) -> None:
    t0 = time.time()
    while widget.worker is not None and time.time() - t0 < timeout:
        pump(0.05)


def shot(viewer, name: str) -> None:
    pump(1)
    viewer.screenshot(str(OUT / name), canvas_only=False)


def calibrated() -> None:
    """Two slides scored one after the other by the main job's calibrated model, side by side (napari's grid, one
    slide with its own result layers a cell): z on the fixed scale, significant patches outlined."""
    from napari_anonavila.demo import PATCH_UM, run_demo
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    demo = Path(tempfile.mkdtemp()) / "demo"
    run_demo(demo, size=4096)
    unseen = write_pyramid_tiff(demo / "slides" / "unseen_normal.tif", make_tissue(4096, 40)[0], 0.5)
    v = napari.Viewer()
    v.window._qt_window.resize(1800, 1000)
    _dock, score = v.window.add_plugin_dock_widget(PLUGIN, "Score")
    score.show_slides.value = "side by side"  # both slides in view, each with its own layers
    for path in (unseen, demo / "slides" / "anomalous.tif"):
        [slide] = v.open(str(path), plugin=PLUGIN)
        score.slide_layer.value = slide
        score.model.value = demo / "model.safetensors"
        score.patch_um.value = PATCH_UM
        score.run_button.native.click()
        wait(score)
    v.window.add_plugin_dock_widget(PLUGIN, "Review top-k")
    score.session.show("side by side")
    shot(v, "napari_two_slides.png")
    v.close()


def cohort() -> None:
    """The cohort browser on an `anonavila batch` run of the demo's model over four synthetic slides (one with
    planted anomalies) and a corrupt file, the top slide opened from its result folder with the Review list."""
    import subprocess

    from napari_anonavila.demo import PATCH_UM, run_demo
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff

    demo = Path(tempfile.mkdtemp()) / "demo"
    run_demo(demo, size=4096)
    slides = [write_pyramid_tiff(demo / "slides" / f"case{i}.tif", make_tissue(3072, 50 + i, n_anomalies=0)[0], 0.5)
              for i in range(3)]
    (demo / "slides" / "corrupt.svs").write_bytes(b"II*\x00" + bytes(64))
    exe = Path(sys.executable).with_name("anonavila")
    subprocess.run([str(exe), "batch", "--model", str(demo / "model.safetensors"), "--out", str(demo / "cohort"),
                    "--n-workers", "1", "--patch-um", str(PATCH_UM), *map(str, slides),
                    str(demo / "slides" / "anomalous.tif"), str(demo / "slides" / "corrupt.svs")], check=False)
    v = napari.Viewer()
    v.window._qt_window.resize(1800, 1000)
    v.open(str(demo / "cohort"), plugin=PLUGIN)  # File > Open on the batch folder: the cohort browser
    v.window.add_plugin_dock_widget(PLUGIN, "Review top-k")
    [browser] = [w for n, w in v.window.dock_widgets.items() if n.startswith("Cohort browser")]
    browser.table.selectRow(0)
    pump(1)
    browser.native.parent().raise_()
    shot(v, "napari_cohort.png")
    v.close()


def day() -> None:
    """A real slide from another lab scored by the demo model: one slide shown (the other hidden), its legend saying
    the tissue is out of the model's domain; and a slide without mpp, said to be in pixels."""
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"
    model = Path(__file__).resolve().parents[1] / "demo-output" / "model.safetensors"
    v = napari.Viewer()
    v.window._qt_window.resize(1800, 1050)
    [tcga] = v.open(str(root / "tcga-cr-7395-01a-01-ts1.svs"), plugin=PLUGIN)
    [cmu] = v.open(str(root / "cmu-1-small-region.svs"), plugin=PLUGIN)
    _dock, score = v.window.add_plugin_dock_widget(PLUGIN, "Score")
    score.model.value = model
    while score.session.detector is None:
        pump(0.2)
    score.slide_layer.value = cmu
    score.run_button.native.click()
    wait(score)
    v.window.add_plugin_dock_widget(PLUGIN, "Heatmap legend")
    shot(v, "napari_legend.png")
    score.slide_layer.value = tcga
    shot(v, "napari_pixels.png")
    v.close()


def main() -> None:
    if sys.argv[1:] == ["day"]:
        day()
        return
    if sys.argv[1:] == ["calibrated"]:
        calibrated()
        return
    if sys.argv[1:] == ["cohort"]:
        cohort()
        return
    OUT.mkdir(exist_ok=True)
    folder = sample_folder()
    v = napari.Viewer()
    v.window._qt_window.resize(1800, 1000)
    [slide] = v.open(str(folder / "anomalous.tif"), plugin=PLUGIN)
    v.canvas.overlays.scale_bar.visible = True
    # a normal region, drawn in a layer made with napari's button (it takes the slide's 0.5 um/px scale)
    v.layers.selection.active = slide
    v.window._qt_viewer.layerButtons.newShapesButton.click()
    normal = v.layers[-1]
    normal.name = "normal regions"
    world = np.array([[800, 450], [800, 850], [1200, 850], [1200, 450]], float)  # microns
    normal.add([np.array([normal.world_to_data(p) for p in world])], shape_type="rectangle")
    normal.edge_color, normal.face_color, normal.edge_width = "lime", "transparent", 8

    _dock, panel = v.window.add_plugin_dock_widget(PLUGIN, "All panels (tabbed)")
    score = panel.score
    score.slide_layer.value = slide
    score.normal_layer.value = normal
    score.patch_um.value = 64.0
    score.run_button.native.click()
    wait(score)
    v.layers.selection.active = slide
    v.reset_view()
    shot(v, "napari_score.png")

    panel.setCurrentWidget(panel.review)
    panel.review.table.selectRow(0)
    shot(v, "napari_review.png")

    panel.setCurrentWidget(panel.terms)
    panel.terms.abnormal.add(text="sheets of atypical cells with prominent nucleoli")
    v.reset_view()
    shot(v, "napari_terms.png")

    panel.setCurrentIndex(3)  # Retrain
    panel.retrain.regions.value = normal
    panel.retrain.epochs.value = 30
    panel.retrain.train_button.native.click()
    wait(panel.retrain)
    wait(score)
    shot(v, "napari_retrain.png")

    panel.setCurrentIndex(4)  # QA
    qa = panel.qa
    for rows, state in (([0, 1], "confirmed"), ([2], "rejected"), ([3], "unsure")):
        qa.mark(state, rows=rows)
    qa.folder.value = Path(tempfile.mkdtemp())
    qa.export_button.native.click()
    wait(qa)
    qa.import_geojson(qa.written["geojson"])
    from napari_anonavila._napari.results import result_layers

    for layer in result_layers(v, slide):
        layer.visible = False
    v.reset_view()
    shot(v, "napari_qa.png")
    print("wrote", sorted(p.name for p in OUT.glob("napari_*.png")))
    v.close()


if __name__ == "__main__":
    main()
