"""The Retrain widget: train the MLP in place on normal regions or a folder, with a live loss curve and cancel."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info

from ...errors import AnonavilaError
from ...training import TrainConfig
from ..layers import slide_scale
from ..session import chosen_path, session_for, shapes_to_polygons_xy_l0, slide_of
from ..workers import fit_worker

__all__ = ["RetrainWidget"]


class _LossPlot:
    """A small matplotlib canvas with the per-batch training loss."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 1.6), dpi=90, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.ax = self.figure.add_subplot()
        self.losses: list[float] = []

    def reset(self) -> None:
        self.losses = []
        self.draw()

    def add(self, loss: float) -> None:
        self.losses.append(loss)
        if len(self.losses) % 5 == 1:  # redraw every few batches: the UI stays responsive
            self.draw()

    def draw(self) -> None:
        self.ax.clear()
        self.ax.plot(self.losses, color="tab:orange", lw=1)
        self.ax.set_xlabel("batch", fontsize=7)
        self.ax.set_ylabel("loss", fontsize=7)
        self.ax.tick_params(labelsize=6)
        self.canvas.draw_idle()


class RetrainWidget(Container):
    """Retrain the session's MLP on a normal reference (regions of the scored slide, another slide, or a patch
    folder), then recompute centroids and re-score from the cache."""

    def __init__(self, viewer) -> None:
        from napari.layers import Shapes

        self.viewer = viewer
        self.session = session_for(viewer)
        self.regions = ComboBox(label="normal regions", nullable=True,
                                choices=lambda *_: [ly for ly in viewer.layers if isinstance(ly, Shapes)])
        self.other_slide = ComboBox(label="or normal slide", nullable=True,
                                    choices=lambda *_: [ly for ly in viewer.layers if slide_of(ly) is not None],
                                    tooltip="a whole slide of normal tissue (its tissue patches)")
        self.folder = FileEdit(label="or patch folder", mode="d")
        self.epochs = SpinBox(label="epochs", value=20, min=1, max=1000)
        self.batch_size = SpinBox(label="batch size", value=32, min=2, max=1024)
        self.lr = FloatSpinBox(label="learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4)
        self.accumulate = SpinBox(label="accumulate", value=1, min=1, max=1000,
                                  tooltip="batches summed per optimiser step (the authors used 100 on a large set)")
        self.train_button = PushButton(text="Train")
        self.progress = ProgressBar(label="progress", value=0, max=1)
        self.status = Label(value="")
        self.out = FileEdit(label="save as", mode="w", filter="*.safetensors")
        self.save_button = PushButton(text="Save checkpoint", enabled=False)
        self.plot = _LossPlot()
        super().__init__(widgets=[self.regions, self.other_slide, self.folder, self.epochs, self.batch_size, self.lr,
                                  self.accumulate, self.train_button, self.progress, self.status, self.out,
                                  self.save_button])
        self.native.layout().addWidget(self.plot.canvas)
        self.worker = None
        self.train_button.changed.connect(self._on_train)
        self.save_button.changed.connect(self.save)
        viewer.layers.events.inserted.connect(lambda *_: self.reset_choices())
        viewer.layers.events.removed.connect(lambda *_: self.reset_choices())

    def _on_train(self, *_):
        if self.worker is not None:
            self.worker.quit()
            return
        try:
            self.start()
        except (AnonavilaError, ValueError) as err:
            show_error(str(err))

    def start(self):
        det = self.session.detector
        if det is None or det.backend is None:
            raise ValueError("no detector with a backend yet: score a slide first (Score widget)")
        slide = self.session.slide
        polys = None
        if self.regions.value is not None:
            if slide is None:
                raise ValueError("normal regions need a scored slide layer")
            polys = shapes_to_polygons_xy_l0(self.regions.value, slide_scale(slide))
            if not polys:
                raise ValueError(f"Shapes layer {self.regions.value.name!r} has no region drawn")
        folder = chosen_path(self.folder)
        reference_slide = slide if polys else None
        if self.other_slide.value is not None:
            if polys:
                raise ValueError("choose normal regions or a normal slide, not both")
            reference_slide = slide_of(self.other_slide.value)
        config = TrainConfig(epochs=self.epochs.value, batch_size=self.batch_size.value, lr=self.lr.value,
                             accumulate=self.accumulate.value)
        self.worker = fit_worker(det, slide=reference_slide, roi=polys, folder=folder, config=config)
        self.plot.reset()
        self.train_button.text = "Cancel"
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: show_error(f"training failed: {err}"))
        self.worker.aborted.connect(lambda: show_info("training cancelled; the detector is unchanged"))
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _on_progress(self, event):
        self.progress.label = event.stage
        self.progress.max = max(1, event.total)
        self.progress.value = event.done
        if "loss" in event.info:
            self.plot.add(event.info["loss"])

    def _on_done(self, losses):
        self.plot.draw()
        det = self.session.detector
        self.status.value = f"trained: loss {losses[0]:.4f} -> {losses[-1]:.4f}; re-scoring from the cache"
        self.save_button.enabled = True
        if chosen_path(self.out) is None:
            self.out.value = self._versioned_name()
        self.session.detector_changed.emit(det)
        self.session.rescore_requested.emit()

    def _on_finished(self):
        self.worker = None
        self.train_button.text = "Train"

    def _versioned_name(self) -> Path:
        base = self.session.checkpoint or Path.cwd() / "anonavila-model.safetensors"
        stem = base.stem.split("-v")[0]
        n = 1
        while (base.parent / f"{stem}-v{n}.safetensors").exists():
            n += 1
        return base.parent / f"{stem}-v{n}.safetensors"

    def save(self, *_):
        """Write the retrained detector as a new checkpoint (never over an existing file)."""
        try:
            path = self.session.detector.save(Path(self.out.value))
        except (AnonavilaError, OSError, ValueError) as err:
            show_error(str(err))
            return None
        self.session.checkpoint = path
        show_info(f"saved {path}")
        return path
