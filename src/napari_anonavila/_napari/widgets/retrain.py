"""The Retrain widget: train the MLP in place on normal regions, a normal slide or a folder, with a live loss curve."""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ...errors import AnonavilaError, OutputExistsError
from ...options import TrainConfig
from ...slide import slide_stem
from ..annotation_layers import regions_of_layer
from ..session import chosen_path, session_for
from ..tags import slide_of
from . import follow_layers, scroll_form, set_progress, tabify_when_docked, wrapping

__all__ = ["RetrainWidget", "versioned_checkpoint"]


def versioned_checkpoint(slide_path: Path | None, checkpoint: Path | None) -> Path:
    """The next free ``<name>-vN.safetensors``: beside the current checkpoint, else beside the slide."""
    if checkpoint is not None:
        folder, stem = checkpoint.parent, checkpoint.stem.rsplit("-v", 1)[0]
    elif slide_path is not None:
        folder, stem = slide_path.parent, f"{slide_stem(slide_path)}-anonavila"
    else:
        folder, stem = Path.cwd(), "anonavila-model"
    n = 1
    while (folder / f"{stem}-v{n}.safetensors").exists():
        n += 1
    return folder / f"{stem}-v{n}.safetensors"


class _LossPlot(QWidget):
    """The per-batch training loss, tall enough to read. matplotlib's canvas (seconds to import and build, the bulk
    of opening the panels) is made when the plot is first shown or given a loss, never while the panel opens."""

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(170)
        QVBoxLayout(self).setContentsMargins(0, 0, 0, 0)
        self.canvas = self.figure = self.ax = None
        self.losses: list[float] = []

    def showEvent(self, event) -> None:
        self._build()
        super().showEvent(event)

    def _build(self) -> None:
        if self.canvas is not None:
            return
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.6, 2.2), dpi=90, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.ax = self.figure.add_subplot()
        self.layout().addWidget(self.canvas)
        self.draw()

    def reset(self) -> None:
        self.losses = []
        self.draw()

    def add(self, loss: float) -> None:
        self.losses.append(loss)
        if len(self.losses) % 5 == 1:  # redraw every few batches: the UI stays responsive
            self.draw()

    def draw(self) -> None:
        if self.canvas is None:
            if not self.isVisible():
                return  # drawn when shown
            self._build()
            return
        self.ax.clear()
        if self.losses:
            self.ax.plot(range(1, len(self.losses) + 1), self.losses, color="tab:orange", lw=1.2)
        self.ax.set_xlabel("batch", fontsize=8)
        self.ax.set_ylabel("contrastive loss", fontsize=8)
        self.ax.set_title("training loss" if self.losses else "training loss (press Train)", fontsize=9)
        self.ax.tick_params(labelsize=7)
        self.ax.grid(alpha=0.3)
        self.canvas.draw_idle()


class RetrainWidget(Container):
    """Retrain the session's MLP on a normal reference (regions of the scored slide, another slide, or a patch
    folder), then recompute centroids and re-score from the cache."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Shapes

        self.viewer = viewer
        self.session = session_for(viewer)
        self.regions = ComboBox(label="normal regions", nullable=True,
                                choices=lambda *_: [ly for ly in viewer.layers if isinstance(ly, Shapes)])
        self.other_slides = Select(label="or normal slides",
                                   choices=lambda *_: [ly for ly in viewer.layers if slide_of(ly) is not None],
                                   tooltip="whole slides of normal tissue (their tissue patches); to calibrate, each "
                                           "slide is a unit of the reference: 5 or more for a checked false-alarm "
                                           "rate, 19 or more for a slide decision")
        self.own_scale = CheckBox(value=False, text="calibrate: each slide on its own scale",
                                  tooltip="standardise every slide by its own median and robust SD before the "
                                          "p-values (2 or more normal slides): holds the false-alarm rate when "
                                          "slides differ as a whole, blind to a change of the whole slide")
        self.folder = FileEdit(label="or patch folder", mode="d")
        self.epochs = SpinBox(label="epochs", value=20, min=1, max=1000)
        self.batch_size = SpinBox(label="batch size", value=32, min=2, max=1024)
        self.lr = FloatSpinBox(label="learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4)
        self.accumulate = SpinBox(label="accumulate", value=1, min=1, max=1000,
                                  tooltip="batches summed per optimiser step (the authors used 100 on a large set)")
        self.train_button = PushButton(text="Train")
        self.calibrate_button = PushButton(text="Calibrate only",
                                           tooltip="keep the MLP and centroids; score this normal reference (tissue "
                                                   "the model never saw) to give the scores z and p-values")
        self.progress = ProgressBar(label="progress", value=0, max=1)
        self.status = Label(value="")
        wrapping(self.status)
        self.out = FileEdit(label="save as", mode="w", filter="*.safetensors")
        self.save_button = PushButton(text="Save checkpoint", enabled=False)
        self.plot = _LossPlot()
        super().__init__()
        self.form = scroll_form(self, [self.regions, self.other_slides, self.folder, self.epochs, self.batch_size,
                                       self.lr, self.accumulate, self.train_button, self.own_scale,
                                       self.calibrate_button,
                                       self.progress, self.status,
                                       self.out, self.save_button], extra=[self.plot])
        tabify_when_docked(self.native)
        self.worker = None
        self._trained = False
        self.train_button.changed.connect(self._on_train)
        self.calibrate_button.changed.connect(self._on_calibrate)
        self.save_button.changed.connect(self.save)
        follow_layers(viewer, self.reset_choices)

    def reset_choices(self, *_):
        self.form.reset_choices()

    def _on_train(self, *_):
        if self.worker is not None:
            self.worker.quit()
            self.train_button.text = "Cancelling..."
            return
        try:
            self.start()
        except (AnonavilaError, ValueError, OSError) as err:
            show_error(str(err))

    def _on_calibrate(self, *_):
        if self.worker is not None:
            show_error("wait until the running job has finished (or cancel it)")
            return
        try:
            self.start(calibrate=True)
        except (AnonavilaError, ValueError, OSError) as err:
            show_error(str(err))

    def start(self, *, calibrate: bool = False):
        """Validate on the UI thread (cheap), then embed the reference and train (or only calibrate) in a worker."""
        from ..workers import calibrate_worker, fit_worker

        s = self.session
        det = s.detector
        if det is None or det.backend is None:
            raise ValueError("no model yet: score a slide first (Score widget)")
        if s.busy:
            raise ValueError(f"wait until {s.busy} has finished (or cancel it), then train")
        polys = None
        if self.regions.value is not None:
            if s.slide_layer is None:
                raise ValueError("normal regions need a scored slide layer")
            polys = regions_of_layer(self.regions.value, s.slide_layer)  # exact, for an annotation file's layer
        folder = chosen_path(self.folder)
        slides = [s.slide] if polys else []
        if self.other_slides.value:
            if polys:
                raise ValueError("choose normal regions or normal slides, not both")
            slides = [slide_of(layer) for layer in self.other_slides.value]
        config = TrainConfig(epochs=self.epochs.value, batch_size=self.batch_size.value, lr=self.lr.value,
                             accumulate=self.accumulate.value)
        patch_um = s.result.grid.patch_size_um if s.result is not None else None
        if calibrate:
            normalise = "slide" if self.own_scale.value else "reference"
            if normalise == "slide" and (len(slides) < 2 or folder is not None):
                raise ValueError("each slide on its own scale needs two or more normal slides (and no patch folder: "
                                 "its patches have no slide to be scaled by)")
            self.worker = calibrate_worker(det, slides=slides, roi=polys, folder=folder, patch_um=patch_um,
                                           normalise=normalise)
            s.busy = "calibrating"
            self.worker.yielded.connect(self._on_progress)
            self.worker.returned.connect(self._on_calibrated)
            self.worker.errored.connect(lambda err: (show_error(f"calibration failed: {err}"),
                                                     setattr(self.status, "value", f"calibration failed: {err}")))
            self.worker.finished.connect(self._on_finished)
            self.worker.start()
            return self.worker
        self.worker = fit_worker(det, slides=slides, roi=polys, folder=folder, config=config,
                                 patch_um=patch_um)
        s.busy = "training"
        self.plot.reset()
        self.status.value = ""
        self.train_button.text = "Cancel"
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: (show_error(f"training failed: {err}"),
                                                 setattr(self.status, "value", f"training failed: {err}")))
        self.worker.aborted.connect(lambda: show_info("training cancelled; the model is unchanged"))
        self.worker.finished.connect(self._on_finished)
        self.worker.start()
        return self.worker

    def _on_progress(self, event):
        set_progress(self.progress, event.done, max(1, event.total), event.stage)
        if "loss" in event.info:
            self.plot.add(event.info["loss"])

    def _on_done(self, losses):
        self.plot.draw()
        outcome = self.session.detector.info.get("calibration_outcome", "")
        if self.session.detector.calibration is None:
            show_warning(f"Retrained: {outcome}")
        self._model_changed(f"trained: loss {losses[0]:.4f} -> {losses[-1]:.4f}; {outcome}")

    def _on_calibrated(self, n: int):
        self._model_changed(self.session.detector.calibration.describe())

    def _model_changed(self, what: str) -> None:
        """The session's model changed in place: offer a new checkpoint name, tell the widgets, re-score after."""
        self.status.value = f"{what}; re-scoring from the cache"
        self.save_button.enabled = True
        self._trained = True
        slide = self.session.slide
        self.out.value = versioned_checkpoint(slide.path if slide else None, self.session.checkpoint)
        self.session.detector_changed.emit(self.session.detector)

    def _on_finished(self):
        self.worker = None
        self.session.busy = None
        self.train_button.text = "Train"
        if self._trained:  # the model changed: show its scores
            self._trained = False
            self.session.rescore_requested.emit()

    def save(self, *_):
        """Write the retrained model as a new checkpoint; an existing file is never replaced."""
        path = chosen_path(self.out)
        if path is None:
            show_error("choose where to save the checkpoint ('save as')")
            return None
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        try:
            path = self.session.detector.save(path)
        except OutputExistsError:
            free = versioned_checkpoint(None, path)
            self.out.value = free
            show_error(f"{path.name} already exists and is kept; choose another name ('{free.name}' is free and is "
                       "now filled in), then press Save checkpoint again")
            return None
        except (AnonavilaError, OSError, ValueError) as err:
            show_error(f"checkpoint not saved: {err}")
            return None
        self.session.checkpoint = path
        self.status.value = f"saved {path}"
        show_info(f"saved {path}")
        return path
