"""GUI tests: a real napari window (under Xvfb in CI, started by pytest-xvfb), driven through the doors a user uses.

Slides open with ``viewer.open(path, plugin=...)``, widgets through napari's plugin machinery, and Shapes layers
are made by clicking napari's own "new shapes layer" button (so they take the slide's scale).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

PLUGIN = "napari-anonavila"
WIDGETS = ("All panels (tabbed)", "Score", "Review top-k", "Term pools", "Retrain", "QA review and export")


def pytest_collection_modifyitems(config, items):
    reason = os.environ.get("ANONAVILA_SKIP_GUI")
    if not reason and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    skip = pytest.mark.skip(reason=reason or "no display: install Xvfb (scripts/test.sh does, as root) for the "
                                             "napari tests")
    for item in items:
        if "tests/napari" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture(scope="session")
def calibrated_model(fitted_on_sample, tmp_path_factory):
    """The sample detector calibrated on a large normal slide (about 800 patches: p-values fine enough to flag a
    few patches among the slide's; its own 42 held-out patches floor every p-value at 1/43)."""
    from napari_anonavila.detector import Detector
    from napari_anonavila.grid import make_grid
    from napari_anonavila.pipeline import iter_slide_embeddings
    from napari_anonavila.progress import drain
    from napari_anonavila.sample import make_tissue, write_pyramid_tiff
    from napari_anonavila.slide import open_slide

    folder = tmp_path_factory.mktemp("calibrated")
    det = Detector.load(fitted_on_sample.save(folder / "m.safetensors"))
    ref = write_pyramid_tiff(folder / "reference.tif", make_tissue(4096, 30)[0], 0.5)
    with open_slide(ref) as s:
        embs = drain(iter_slide_embeddings(s, make_grid(s, patch_px=128), det.backend, det.backend_id))
    det.calibrate(det.reference_scores(embs), "a 4096 px normal slide")
    assert det.calibration.n > 600
    return det.save(folder / "calibrated.safetensors")


@pytest.fixture
def errors(monkeypatch):
    """Messages the widgets show in napari's notification area with show_error."""
    import importlib
    import pkgutil

    import napari_anonavila._napari.widgets as widgets

    shown: list[str] = []
    for info in pkgutil.iter_modules(widgets.__path__):  # every panel module that shows errors, the helpers' too
        mod = importlib.import_module(f"{widgets.__name__}.{info.name}")
        if hasattr(mod, "show_error"):
            monkeypatch.setattr(mod, "show_error", shown.append)
    return shown


def open_widget(viewer, name: str):
    """Open one of the plugin's widgets the way the Plugins menu does; return the widget napari made."""
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def open_slide(viewer, path):
    """File > Open with this plugin's reader; return the slide layer."""
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    return layer


def draw_shapes(viewer, slide_layer, world_polygons, shape_type: str = "rectangle"):
    """Click napari's 'new shapes layer' button over the slide and draw polygons given in world coordinates."""
    viewer.layers.selection.active = slide_layer
    viewer.window._qt_viewer.layerButtons.newShapesButton.click()  # the real button (a test may use private API)
    layer = viewer.layers[-1]
    assert layer.scale[-1] == pytest.approx(slide_layer.scale[-1])  # napari copied the slide's scale
    data = [np.array([layer.world_to_data(v) for v in np.asarray(poly, float)]) for poly in world_polygons]
    layer.add(data, shape_type=shape_type)
    return layer


def wait_worker(qtbot, widget, timeout=120_000):
    """Wait until the widget's worker is gone (finished, errored or aborted)."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def click(button) -> None:
    """Press a magicgui PushButton as a user does."""
    button.native.click()


def layer_of(viewer, kind: str, slide_layer=None):
    """The ``kind`` result layer (heatmap, top-k, significant) of ``slide_layer`` (default: the slide the widgets
    show), found as the plugin finds it; fails when there is none."""
    from napari_anonavila._napari.results import result_layer
    from napari_anonavila._napari.session import session_for

    layer = result_layer(viewer, slide_layer or session_for(viewer).slide_layer, kind)
    assert layer is not None, f"no {kind!r} layer for that slide"
    return layer
