"""The Score panel's model line: what model is loaded, and loading a chosen checkpoint (and torch) in the background
so that Run does not wait for them."""

from __future__ import annotations

from napari.utils.notifications import show_error

from ..session import chosen_path
from ..workers import load_worker, warm_worker

__all__ = ["NO_MODEL", "ModelLine"]

NO_MODEL = ("No model yet: choose a checkpoint, or draw normal regions in a Shapes layer and pick it in "
            "'demo fit on' to try the random demo model.")


class ModelLine:
    """Keeps ``label`` saying which model the session holds; warms torch and preloads the ``model`` field's file."""

    def __init__(self, session, label, model, device, precision) -> None:
        self.session, self.label, self.model, self.device, self.precision = session, label, model, device, precision

    def warm(self) -> None:
        """Start torch and the models' code in the background as the panel opens (once per process), so that the
        first Run does not wait for them; the model line says when it is ready."""
        worker = warm_worker()
        if worker is None:
            return
        if self.session.detector is None:
            self.label.value = f"{NO_MODEL}\n(starting torch in the background...)"
        worker.returned.connect(lambda _r: self.show(self.session.detector))
        worker.start()

    def preload(self, *_) -> None:
        """Load a chosen checkpoint at once, in the background: Run then starts scoring without the wait."""
        path = chosen_path(self.model)
        s = self.session
        if path is None or not path.is_file() or s.busy or (s.checkpoint is not None and s.checkpoint == path):
            return
        self.label.value = f"loading {path.name} in the background..."
        worker = load_worker(path, device=self.device.value, precision=self.precision.value)

        def loaded(det) -> None:
            if s.busy or chosen_path(self.model) != path:
                return  # a run or another choice came first
            s.detector, s.checkpoint = det, path
            s.detector_changed.emit(det)

        worker.returned.connect(loaded)
        worker.errored.connect(lambda err: (show_error(f"{path.name}: {err}"), self.show(s.detector)))
        worker.start()

    def show(self, det) -> None:
        """Say which model ``det`` is (a demo model in bold amber)."""
        if det is None:
            self.label.value = NO_MODEL
            return
        from ...splits import describe_split

        self.label.value = f"{det.describe()}\n{describe_split(det.info.get('centroid_split'))}"
        self.label.native.setStyleSheet("color: #ffb000; font-weight: bold;" if det.is_demo else "")
