"""The Score widget: pick a slide layer and a model, score in a worker, watch the heatmap fill in."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning

from ...errors import AnonavilaError
from ...maps import erode, slide_scores
from ...scoring import ScoreMode
from ...training import TrainConfig
from ..layers import heatmap_for_display, heatmap_layer_data, slide_scale, topk_layer_data
from ..session import chosen_path, session_for, shapes_to_polygons_xy_l0, slide_of
from ..workers import fit_worker, score_worker

__all__ = ["ScoreWidget"]

HEATMAP = "anomaly heatmap"
TOPK = "top-k patches"
REGIONS = ("whole slide", "current view", "shapes layer")
_REFRESH_S = 0.3  # at most ~3 heatmap redraws a second while batches arrive


class ScoreWidget(Container):
    """Run/Cancel scoring of a slide layer; results become a heatmap image layer and a top-k points layer."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.session = session_for(viewer)
        self.slide_layer = ComboBox(label="slide", choices=self._slide_layers, nullable=True)
        self.model = FileEdit(label="model", mode="r", filter="*.safetensors",
                              tooltip="checkpoint (.safetensors); leave empty to fit the demo backend")
        self.normal_layer = ComboBox(label="demo fit on", choices=self._shapes_layers, nullable=True,
                                     tooltip="Shapes layer of normal regions to fit the demo backend on")
        self.region = ComboBox(label="region", choices=REGIONS, value="whole slide")
        self.region_layer = ComboBox(label="region shapes", choices=self._shapes_layers, nullable=True)
        self.patch_um = FloatSpinBox(label="patch (um)", value=128.0, min=8.0, max=2048.0, step=16.0,
                                     tooltip="patch field; 256 px is used when the slide has no mpp")
        self.batch_size = SpinBox(label="batch size", value=32, min=1, max=1024)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.top_k = SpinBox(label="top-k", value=10, min=1, max=500)
        self.mode = ComboBox(label="score mode", choices=[m.value for m in ScoreMode], value="sum")
        self.eroded = CheckBox(label="show 3x3 erosion", value=False)
        self.run_button = PushButton(text="Run")
        self.progress = ProgressBar(label="progress", value=0, max=1)
        self.scores_label = Label(label="slide scores", value="-")
        super().__init__(widgets=[self.slide_layer, self.model, self.normal_layer, self.region, self.region_layer,
                                  self.patch_um, self.batch_size, self.device, self.top_k, self.mode, self.eroded,
                                  self.run_button, self.progress, self.scores_label])
        self.worker = None
        self._heat: np.ndarray | None = None
        self._partial = []
        self.run_button.changed.connect(self._on_run)
        self.eroded.changed.connect(lambda *_: self._refresh_heatmap())
        self.mode.changed.connect(lambda *_: self.rescore())
        self.session.rescore_requested.connect(self.rescore)
        viewer.layers.events.inserted.connect(lambda *_: self.reset_choices())
        viewer.layers.events.removed.connect(lambda *_: self.reset_choices())
        self.reset_choices()

    # -- choices -----------------------------------------------------------------------------------
    def reset_choices(self, *_):
        super().reset_choices()
        if self.slide_layer.value is None and self._slide_layers():
            self.slide_layer.value = self._slide_layers()[-1]

    def _slide_layers(self, *_):
        return [ly for ly in self.viewer.layers if slide_of(ly) is not None]

    def _shapes_layers(self, *_):
        from napari.layers import Shapes

        return [ly for ly in self.viewer.layers if isinstance(ly, Shapes)]

    # -- run / cancel ------------------------------------------------------------------------------
    def _on_run(self, *_):
        if self.worker is not None:
            self.worker.quit()
            self.run_button.text = "Cancelling..."
            return
        try:
            self.start()
        except (AnonavilaError, ValueError, FileNotFoundError) as err:
            show_error(str(err))

    def _roi(self, slide, scale):
        if self.region.value == "current view":
            layer = self.slide_layer.value
            level = layer.data_level
            ds = float(np.mean(layer.downsample_factors[level][-2:]))
            corners = np.asarray(layer.corner_pixels)[:, -2:] * ds  # (2, (row, col)) level-0
            (r0, c0), (r1, c1) = corners
            return [np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1]], float)]
        if self.region.value == "shapes layer":
            if self.region_layer.value is None:
                raise ValueError("region 'shapes layer' needs a Shapes layer with the regions to score")
            polys = shapes_to_polygons_xy_l0(self.region_layer.value, scale)
            if not polys:
                raise ValueError(f"Shapes layer {self.region_layer.value.name!r} has no polygon or rectangle")
            return polys
        return None

    def start(self):
        """Validate the inputs on the UI thread (cheap), then score in a worker."""
        layer = self.slide_layer.value
        if layer is None:
            raise ValueError("no slide layer: open a slide (File > Open) or the sample (File > Open Sample)")
        slide = slide_of(layer)
        scale = slide_scale(slide)
        roi = self._roi(slide, scale)
        self.session.slide_layer = layer
        model = chosen_path(self.model)
        det = self._detector(model)
        if det is None:
            return
        self._launch_scoring(slide, det, roi)

    def _detector(self, model: Path | None):
        from ...detector import Detector

        s = self.session
        if model is not None:
            if s.detector is None or s.checkpoint != model:
                s.detector = Detector.load(model, device=self.device.value)
                s.checkpoint = model
                s.detector_changed.emit(s.detector)
            return s.detector
        if s.detector is not None and s.detector.is_fitted:
            return s.detector
        if self.normal_layer.value is None:
            raise ValueError("choose a model checkpoint, or a Shapes layer of normal regions to fit the demo "
                             "backend on ('demo fit on')")
        self._fit_demo_then_score()
        return None

    def _fit_demo_then_score(self):
        from ...detector import Detector

        layer = self.slide_layer.value
        slide = slide_of(layer)
        scale = slide_scale(slide)
        polys = shapes_to_polygons_xy_l0(self.normal_layer.value, scale)
        if not polys:
            raise ValueError(f"Shapes layer {self.normal_layer.value.name!r} has no normal region drawn")
        show_warning("Fitting the demo backend: random weights, NO pathology knowledge (for trying the tool only)")
        det = Detector.create("demo", device=self.device.value)
        worker = fit_worker(det, slide=slide, roi=polys, patch_um=self.patch_um.value,
                            config=TrainConfig(epochs=20, batch_size=32, accumulate=1))
        self._attach(worker, stage="fitting")

        def done(_losses):
            self.session.detector = det
            self.session.detector_changed.emit(det)
            self._launch_scoring(slide, det, self._roi(slide, scale))

        worker.returned.connect(done)
        worker.start()

    def rescore(self):
        """Score the last result's grid again (new mode, terms or MLP): from the embedding cache, no pixel reads."""
        res, det, slide = self.session.result, self.session.detector, self.session.slide
        if res is None or det is None or slide is None or self.worker is not None:
            return
        self._launch_scoring(slide, det, None, grid=res.grid)

    def _launch_scoring(self, slide, det, roi, grid=None):
        cache = self.session.cache(slide)
        worker = score_worker(slide, det, cache=cache, patch_um=self.patch_um.value, roi=roi,
                              batch_size=self.batch_size.value, mode=self.mode.value, grid=grid)
        self._heat = None
        self._partial = []
        worker.yielded.connect(self._on_yield)
        worker.returned.connect(self._on_result)
        self._attach(worker, stage="scoring")
        worker.start()

    def _attach(self, worker, stage: str):
        self.worker = worker
        self.run_button.text = "Cancel"
        self.progress.label = stage
        self.progress.value = 0
        worker.errored.connect(lambda err: show_error(f"{stage} failed: {err}"))
        worker.aborted.connect(lambda: self._on_aborted(stage))
        worker.finished.connect(self._on_finished)
        worker.yielded.connect(self._on_progress)

    def _on_progress(self, event):
        if hasattr(event, "total"):
            self.progress.max = max(1, event.total)
            self.progress.value = event.done

    def _on_finished(self):
        self.worker = None
        self.run_button.text = "Run"

    def _on_aborted(self, stage):
        self._refresh_heatmap()
        kept = sum(len(p.score) for p in self._partial)
        show_info(f"{stage} cancelled; {kept} scored patches are kept on the heatmap" if kept else f"{stage} cancelled")

    # -- results -----------------------------------------------------------------------------------
    def _on_yield(self, event):
        if isinstance(event, tuple) and event[0] == "grid":
            grid = event[1]
            self._grid = grid
            self._heat = np.full(grid.shape_rc, np.nan)
            self._last_refresh = 0.0
            if len(grid) == 0:
                show_warning("no tissue patches in this region; nothing to score")
            return
        scores = event.info.get("scores")
        if scores is None or self._heat is None:
            return
        start = event.info["start"]
        cells = self._grid.cells_rc[start : start + len(scores)]
        self._heat[cells[:, 0], cells[:, 1]] = scores.score
        self._partial.append(scores)
        now = time.perf_counter()
        if now - self._last_refresh >= _REFRESH_S:  # coalesce batches: each redraw costs the UI a frame
            self._last_refresh = now
            self._refresh_heatmap()

    def _refresh_heatmap(self):
        if self._heat is None:
            return
        heat = erode(self._heat) if self.eroded.value else self._heat
        slide = slide_of(self.slide_layer.value) if self.slide_layer.value is not None else None
        if slide is None:
            return
        if HEATMAP in self.viewer.layers:
            shown, clim = heatmap_for_display(heat)
            layer = self.viewer.layers[HEATMAP]
            layer.data = shown
            layer.contrast_limits = clim
            layer.metadata["raw"] = heat
        else:
            data, kwargs, _ = heatmap_layer_data(heat, self._grid.patch_size_l0, slide_scale(slide))
            self.viewer.add_image(data, **kwargs)

    def _on_result(self, result):
        self.session.result = result
        self.show_result(result)
        self.session.result_changed.emit(result)

    def show_result(self, result):
        """Draw a finished result: heatmap, top-k points and the slide scores."""
        self._grid = result.grid
        self._heat = result.heatmap()
        self._refresh_heatmap()
        slide = self.session.slide
        data, kwargs, _ = topk_layer_data(result, self.session.detector, self.top_k.value, slide_scale(slide))
        if TOPK in self.viewer.layers:  # update in place: cheaper than a new layer, and keeps the user's styling
            layer = self.viewer.layers[TOPK]
            layer.data = data
            layer.features = kwargs["features"]
            layer.text = kwargs["text"]
        else:
            self.viewer.add_points(data, **kwargs)
        self.viewer.layers.selection.active = self.slide_layer.value
        s = slide_scores(self._heat)
        self.scores_label.value = (f"max {s['max']:.3g}, top-1% {s['top1']:.3g}\n"
                                   f"eroded: max {s['max_eroded']:.3g}, top-1% {s['top1_eroded']:.3g}")
