"""The Score widget: pick a slide layer and a model, score in a worker, watch the heatmap fill in."""

from __future__ import annotations

import contextlib

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning

from ...annotations import ScoreRegions
from ...errors import AnonavilaError
from ...options import PRECISIONS, ScoreMode
from ...progress import Progress
from ..annotation_layers import regions_of_layer, view_regions
from ..layers import Z_RANGE
from ..legend import legend_text, scores_text
from ..live_heatmap import HEATMAP_VALUES, LiveHeatmap
from ..results import HEATMAP, TOPK, clear_results, draw_points, draw_significant, result_layer
from ..session import chosen_path, session_for
from ..slides import LAYOUTS
from ..tags import slide_of, unwrap
from ..turns import TurnQueue
from ..workers import DetectorReady, GridReady, ScorePlan, score_worker
from . import follow_layers, scroll_form, set_progress, tabify_when_docked, wrapping
from .model_line import NO_MODEL, ModelLine
from .slide_units import SlideUnits

__all__ = ["HEATMAP", "TOPK", "ScoreWidget"]

REGIONS = ("whole slide", "current view", "shapes layer")
_MODEL_FILES = "*.safetensors *.pth *.pt"


class ScoreWidget(Container):
    """Run/Cancel scoring of a slide layer; results become a heatmap image layer and a top-k points layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.session = session_for(viewer)
        self.slide_layer = ComboBox(label="slide", choices=self._slide_layers, nullable=True)
        self.slide_units = SlideUnits(self.session, self.slide_layer)
        self.units, self.slide_mpp, self.patch_um = (self.slide_units.units, self.slide_units.slide_mpp,
                                                     self.slide_units.patch)
        self.model = FileEdit(label="model", mode="r", filter=_MODEL_FILES,
                              tooltip="a checkpoint: ours (.safetensors) or the authors' (.pth, which holds CONCH); "
                                      "leave empty to fit the random demo model")
        self.model_info = Label(value=NO_MODEL)
        self.normal_layer = ComboBox(label="demo fit on", choices=self._shapes_layers, nullable=True,
                                     tooltip="a Shapes layer of normal regions, to fit the demo model on")
        self.region = ComboBox(label="region", choices=REGIONS, value="whole slide")
        self.region_layer = ComboBox(label="region shapes", choices=self._shapes_layers, nullable=True,
                                     tooltip="a Shapes layer: drawn here, or an annotation file opened onto the slide "
                                             "(QuPath GeoJSON, ASAP XML: one layer per class)")
        self.exclude_layer = ComboBox(label="leave out", choices=self._shapes_layers, nullable=True,
                                      tooltip="a Shapes layer of regions to leave out: pen marks, folds, blur; a "
                                              "patch a quarter or more inside one is not scored")
        self.show_slides = ComboBox(label="show", choices=LAYOUTS, value=self.session.layout,
                                    tooltip="one slide at a time (its layers only, the view fitted to it), or every "
                                            "slide side by side")
        self.batch_size = SpinBox(label="batch size", value=32, min=1, max=1024)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.precision = ComboBox(label="precision", choices=list(PRECISIONS), value="float32",
                                  tooltip="encoder precision: float32 as the authors (default); lower ones are faster "
                                          "on a GPU and can reorder close scores")
        self.top_k = SpinBox(label="top-k", value=10, min=1, max=500)
        self.mode = ComboBox(label="score mode", choices=[m.value for m in ScoreMode], value="sum")
        self.eroded = CheckBox(label="show 3x3 erosion", value=False)
        self.values = ComboBox(label="heatmap", choices=HEATMAP_VALUES, value=HEATMAP_VALUES[0],
                               tooltip="z: robust standard deviations above normal tissue, on one fixed colour scale "
                                       f"({Z_RANGE[0]:g} to {Z_RANGE[1]:g}) for every slide (needs a calibrated "
                                       "model); raw: the authors' distance, stretched per slide")
        self.run_button = PushButton(text="Run")
        self.progress = ProgressBar(label="progress", value=0, max=1)
        self.scores_label = Label(label="slide scores", value="-")
        self.legend = Label(value="")
        super().__init__()
        self.form = scroll_form(self, [
            self.slide_layer, self.units, self.slide_mpp, self.show_slides, self.model, self.model_info,
            self.normal_layer, self.region, self.region_layer, self.exclude_layer, self.patch_um, self.batch_size,
            self.device, self.precision, self.top_k, self.mode, self.eroded, self.values, self.run_button,
            self.progress, self.scores_label, self.legend])
        tabify_when_docked(self.native)
        for label in (self.units, self.model_info, self.scores_label, self.legend):
            wrapping(label)
        self.worker = None
        self._turns = TurnQueue(self.native, then=self._end_run)  # a result's layers, one per event-loop turn
        self.live = LiveHeatmap(viewer, self.session)
        self.model_line = ModelLine(self.session, self.model_info, self.model, self.device, self.precision)
        self.run_button.changed.connect(self._on_run)
        self.slide_layer.changed.connect(self._on_pick)
        self.show_slides.changed.connect(lambda layout: self.session.show(layout))
        self.model.changed.connect(self.model_line.preload)
        self.eroded.changed.connect(lambda *_: self._refresh_heatmap())
        self.values.changed.connect(lambda *_: self._refresh_heatmap())
        self.mode.changed.connect(lambda *_: self.rescore())
        self.top_k.changed.connect(self._on_top_k)
        self.session.rescore_requested.connect(self.rescore)
        self.session.detector_changed.connect(self.model_line.show)
        self.session.reviews_changed.connect(self._draw_points)
        follow_layers(viewer, self.reset_choices)
        viewer.layers.events.inserted.connect(self._show_legend)
        self.session.slide_changed.connect(self._on_slide)
        self.reset_choices()
        self.slide_units.show()
        self.top_k.value = self.session.top_k
        self.model_line.show(self.session.detector)
        if self.session.slide_layer is not None:
            self._on_slide(self.session.slide_layer)  # a slide (a reopened result) shown before the panel opened
        self.model_line.warm()

    @property
    def _grid(self):
        """The grid being scored or shown (None before a run)."""
        return self.live.grid

    @property
    def _scored(self) -> int:
        """Patches scored so far in this run (all of a finished one)."""
        return self.live.scored

    # -- choices -----------------------------------------------------------------------------------
    def reset_choices(self, *_):
        self.form.reset_choices()
        if self.slide_layer.value is None and self._slide_layers():
            self.slide_layer.value = self._slide_layers()[-1]

    def _slide_layers(self, *_):
        return [ly for ly in self.viewer.layers if slide_of(ly) is not None]

    def _shapes_layers(self, *_):
        from napari.layers import Shapes

        return [ly for ly in self.viewer.layers if isinstance(ly, Shapes)]

    def set_mpp(self, layer, mpp: float) -> None:
        """Give a slide without mpp in its file its microns per pixel (see :func:`..units.give_mpp`)."""
        self.slide_units.set_mpp(layer, mpp)

    def _show_legend(self, *_) -> None:
        """The legend of the shown slide's heatmap (called as a reopened result's layers arrive)."""
        s = self.session
        if s.result is not None and result_layer(self.viewer, s.slide_layer, HEATMAP) is not None:
            det = s.detector.describe() if s.detector is not None else None
            self.legend.value = legend_text(self.viewer, s.slide_layer, s.result, det)

    def _on_pick(self, layer) -> None:
        """A slide picked in the panel becomes the slide shown (alone, or among the others side by side)."""
        self.slide_units.show()
        if layer is not None and not self.session.busy and unwrap(layer) is not self.session.slide_layer:
            self.viewer.layers.selection.active = layer

    def _on_slide(self, slide_layer) -> None:
        """The session shows another slide (selected in the layer list, or by the cohort browser): show its own
        result (never re-scores, except a result made before the model changed: from the cache)."""
        s = self.session
        with contextlib.suppress(ValueError):  # a layer the slide combo does not list
            self.slide_layer.value = slide_layer
        res = s.result
        if res is not None:
            self.live.show_result(res)
            self.scores_label.value = scores_text(res)
            self._refresh_heatmap()
            if not s.result_is_current() and s.detector is not None and self.worker is None:
                self.rescore()
        else:
            self.live.clear()
            self.scores_label.value = "-"
            self.legend.value = ""

    def _draw_points(self):
        s = self.session
        return draw_points(self.viewer, s.slide_layer, s.result, s.top_k, s.marks())

    def _on_top_k(self, k: int) -> None:
        self.session.top_k = k
        self._draw_points()
        self.session.result_changed.emit(self.session.result)

    # -- run / cancel ------------------------------------------------------------------------------
    def _on_run(self, *_):
        if self.worker is not None:
            self.worker.quit()
            self.run_button.text = "Cancelling..."
            return
        try:
            self.start()
        except (AnonavilaError, ValueError, OSError) as err:
            show_error(str(err))

    def _regions(self, slide_layer) -> ScoreRegions | None:
        """Where to score: the whole slide, the current view or a Shapes layer's regions (the exact regions of an
        annotation file opened onto the slide), less the exclusion layer's; the tissue rule, by area."""
        roi = None
        if self.region.value == "current view":
            roi = view_regions(slide_layer)
        elif self.region.value == "shapes layer":
            if self.region_layer.value is None:
                raise ValueError("region 'shapes layer' needs a Shapes layer with the regions to score")
            roi = regions_of_layer(self.region_layer.value, slide_layer)
        exclude = (regions_of_layer(self.exclude_layer.value, slide_layer),) if self.exclude_layer.value else ()
        regions = ScoreRegions(roi, exclude)
        return regions if regions else None

    def plan(self) -> ScorePlan:
        """The Run as the widget's fields describe it (cheap: nothing is read or built here)."""
        layer = self.slide_layer.value
        if layer is None:
            raise ValueError("no slide layer: open a slide (File > Open) or the sample (File > Open Sample)")
        slide = slide_of(layer)
        patch_um, patch_px = self.slide_units.patch_size(slide)
        plan = ScorePlan(slide=slide, patch_um=patch_um, patch_px=patch_px, batch_size=self.batch_size.value,
                         mode=self.mode.value, regions=self._regions(layer), device=self.device.value,
                         precision=self.precision.value)
        s, model = self.session, chosen_path(self.model)
        same_precision = s.detector is not None and getattr(s.detector.backend, "precision", None) == plan.precision
        plan.checkpoint = s.checkpoint
        if model is not None:
            if same_precision and s.checkpoint is not None and s.checkpoint.resolve() == model.resolve():
                plan.detector = s.detector
            else:
                plan.model_path = model
        elif same_precision and (s.detector.is_fitted or self.mode.value == "zero_shot"):
            plan.detector = s.detector
        else:
            if self.normal_layer.value is None:
                raise ValueError("choose a model checkpoint, or a Shapes layer of normal regions to fit the demo "
                                 "model on ('demo fit on')")
            plan.demo_regions = regions_of_layer(self.normal_layer.value, layer)
            show_warning("Fitting the demo model: random weights, NO pathology knowledge (for trying the tool only)")
        return plan

    def start(self, plan: ScorePlan | None = None, slide_layer=None) -> None:
        """Start a run (the fields' plan by default) in a worker; Run turns into Cancel until it ends."""
        if self.session.busy:
            raise ValueError(f"wait until {self.session.busy} has finished (or cancel it), then run again")
        plan = plan or self.plan()
        self.session.busy = "scoring"
        self.session.slide_layer = unwrap(slide_layer or self.slide_layer.value)
        self.session.result = None
        clear_results(self.viewer, self.session.slide_layer)  # this slide's earlier result is not this run's
        self.scores_label.value = "scoring..."
        self.session.result_changed.emit(None)
        self.live.clear()
        self._turns.reset()
        worker = score_worker(plan)
        self.worker = worker
        self.run_button.text = "Cancel"
        set_progress(self.progress, 0)
        worker.yielded.connect(self._on_yield)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._turns.finish)  # the run ends after the result's last layer is drawn
        worker.start()

    def rescore(self):
        """Score the last result's grid again (new mode, terms or MLP): from the embedding cache, no pixel reads."""
        res, det, layer = self.session.result, self.session.detector, self.session.slide_layer
        if res is None or det is None or layer is None or self.worker is not None or self.session.busy:
            return
        self.start(ScorePlan(slide=slide_of(layer), patch_um=None, batch_size=self.batch_size.value,
                             mode=self.mode.value, grid=res.grid, detector=det,
                             checkpoint=self.session.checkpoint), slide_layer=layer)

    def _end_run(self):
        self.worker = None
        self.session.busy = None
        self.run_button.text = "Run"

    def _on_error(self, err):
        show_error(f"{self.progress.label or 'scoring'} failed: {err}")
        self.scores_label.value = f"failed: {err}"

    def _on_aborted(self):
        self._refresh_heatmap()
        n = len(self._grid) if self._grid is not None else 0
        msg = f"cancelled: {self._scored} of {n} patches scored (shown; no slide scores for a partial run)"
        self.scores_label.value = msg if self._scored else "cancelled"
        show_info(self.scores_label.value)

    # -- results -----------------------------------------------------------------------------------
    def _on_yield(self, event):
        if isinstance(event, DetectorReady):
            s = self.session
            s.detector, s.checkpoint = event.detector, event.checkpoint
            s.detector_changed.emit(event.detector)
        elif isinstance(event, GridReady):
            self.live.start(event.grid)
            if len(event.grid) == 0:
                show_warning("no tissue patches in this region; nothing to score")
            self._refresh_heatmap()
        elif isinstance(event, Progress):
            if event.total == 0:  # no known end (a model being built or loaded): a busy bar and the seconds so far
                seconds = event.info.get("seconds", 0)
                set_progress(self.progress, 0, 0, f"{event.stage} ({seconds:.0f} s; Cancel stops at once)")
                return
            set_progress(self.progress, event.done, max(1, event.total), event.stage)
            scores = event.info.get("scores")
            if scores is None or self.live.heat is None or "start" not in event.info:
                return
            if self.live.add(event.info["start"], scores, event.done):
                self._refresh_heatmap()

    def _refresh_heatmap(self):
        label = self.live.refresh(values=self.values.value, eroded=self.eroded.value, mode=self.mode.value)
        if label is None:
            return
        if self.session.result is None:
            self.legend.value = label
        else:
            self._show_legend()

    def _on_result(self, result):
        """The finished run's result: its scores and heatmap at once, then its points layers one per event-loop turn.

        napari takes 0.2-0.3 s to add a layer under software OpenGL; the two points layers in one call held the window
        for half a second. Until the last is drawn the run still counts as running (the session busy, Run still
        Cancel), so no other slide can be selected in between and every layer is drawn for this run's slide.
        """
        s = self.session
        s.result = result
        self.live.show_result(result)
        self.scores_label.value = scores_text(result)
        self._refresh_heatmap()
        self._turns.run([self._draw_points, lambda: draw_significant(self.viewer, s.slide_layer, s.result),
                         self._announce])

    def _announce(self) -> None:
        s = self.session
        self.viewer.layers.selection.active = s.slide_layer  # the scored slide is current, as the widgets show
        _on, aside = s.marks().on_grid(s.result.grid)
        if aside:
            show_warning(f"{len(aside)} review mark(s) were made on patches of another grid (patch size "
                         f"{sorted({k.size_l0 for k in aside})} px); they are kept and come back when you score "
                         "with that patch size again")
        s.result_changed.emit(s.result)
