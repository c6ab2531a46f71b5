"""Take the screenshots in docs/images from a real napari window (run under Xvfb or on a desktop).

Run: xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/make_screenshots.py
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_anonavila._napari.layers import slide_layer_data
from napari_anonavila._napari.sample_data import sample_folder
from napari_anonavila._napari.widgets.retrain import RetrainWidget
from napari_anonavila._napari.widgets.review import ReviewWidget
from napari_anonavila._napari.widgets.score import ScoreWidget
from napari_anonavila._napari.widgets.terms import TermsWidget
from napari_anonavila.slide import open_slide

OUT = Path(__file__).parent / "images"


def pump(seconds: float = 0.5) -> None:
    app = QApplication.instance()
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(widget, timeout: float = 600) -> None:
    t0 = time.time()
    while widget.worker is not None and time.time() - t0 < timeout:
        pump(0.05)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    folder = sample_folder()
    v = napari.Viewer()
    v.window._qt_window.resize(1800, 1050)
    data, kwargs, _ = slide_layer_data(open_slide(folder / "anomalous.tif"))
    kwargs["name"] = "planted anomalies (synthetic)"
    slide = v.add_image(data, **kwargs)
    overlays = getattr(getattr(v, 'canvas', None), 'overlays', None)
    (overlays.scale_bar if overlays is not None else v.scale_bar).visible = True
    normal = v.add_shapes([np.array([[700, 500], [700, 1300], [1500, 1300], [1500, 500]])], shape_type="rectangle",
                          name="normal regions", edge_color="lime", face_color="transparent", edge_width=12,
                          units=("um", "um"))
    score = ScoreWidget(v)
    v.window.add_dock_widget(score, name="Score", area="right")
    score.slide_layer.value = slide
    score.normal_layer.value = normal
    score.start()
    t0 = time.time()
    while score.session.result is None and time.time() - t0 < 600:
        pump(0.05)
    v.layers.selection.active = slide
    v.reset_view()
    pump(1)
    v.screenshot(str(OUT / "napari_score.png"), canvas_only=False)
    review = ReviewWidget(v)
    v.window.add_dock_widget(review, name="Review top-k", area="right")
    review.refresh()
    review.table.selectRow(0)
    pump(1)
    v.screenshot(str(OUT / "napari_review.png"), canvas_only=False)
    v.window.remove_dock_widget("all")
    terms = TermsWidget(v)
    v.window.add_dock_widget(terms, name="Term pools", area="right")
    terms.load_from_detector(score.session.detector)
    terms.abnormal.add(text="sheets of atypical cells with prominent nucleoli")
    v.reset_view()
    pump(1)
    v.screenshot(str(OUT / "napari_terms.png"), canvas_only=False)
    v.window.remove_dock_widget("all")
    retrain = RetrainWidget(v)
    v.window.add_dock_widget(retrain, name="Retrain", area="right")
    score2 = ScoreWidget(v)  # listens to re-score requests (it is the session's scorer now)
    score2.slide_layer.value = slide
    retrain.regions.value = normal
    retrain.epochs.value = 30
    retrain.start()
    wait(retrain)
    pump(1)
    v.screenshot(str(OUT / "napari_retrain.png"), canvas_only=False)
    v.window.remove_dock_widget("all")
    from napari_anonavila._napari.widgets.export import ExportWidget

    qa = ExportWidget(v)
    v.window.add_dock_widget(qa, name="QA review and export", area="right")
    qa.mark("confirmed", indices=[0, 1])
    qa.mark("rejected", indices=[2])
    qa.mark("unsure", indices=[3])
    import tempfile

    qa.folder.value = Path(tempfile.mkdtemp())
    written = qa.export()
    v.layers["top-k patches"].visible = False
    qa.import_geojson(written["geojson"])
    v.layers["anomaly heatmap"].visible = False
    v.reset_view()
    pump(1)
    v.screenshot(str(OUT / "napari_qa.png"), canvas_only=False)
    print("wrote", sorted(p.name for p in OUT.glob("napari_*.png")))
    v.close()


if __name__ == "__main__":
    main()
