"""Work for the window done one event-loop turn at a time: napari takes 0.2-0.3 s to add a layer under software
OpenGL, and two inserts in one turn hold the window for half a second."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from qtpy.QtCore import QTimer

__all__ = ["TurnQueue"]


class TurnQueue:
    """Steps run one per event-loop turn; ``then`` runs once the last step is done and :meth:`finish` was called
    (a worker that has finished), whichever comes last."""

    def __init__(self, parent, then: Callable[[], None]) -> None:
        self._then = then
        self._steps: list[Callable[[], None]] = []
        self._finished = False
        self._timer = QTimer(parent)  # its parent's own: it goes with the panel, never fires on a dead one
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.next_step)

    def reset(self) -> None:
        """A new run: nothing pending, not finished."""
        self._steps, self._finished = [], False

    def run(self, steps: Iterable[Callable[[], None]]) -> None:
        """Queue ``steps``, the first at the next turn."""
        self._steps = list(steps)
        self._timer.start()

    def finish(self) -> None:
        """The work behind the steps is over: ``then`` now, or after the last pending step."""
        self._finished = True
        if not self._steps:
            self._then()

    def next_step(self) -> None:
        """Run the next pending step; after the last, ``then`` once :meth:`finish` was called."""
        if not self._steps:
            return
        step = self._steps.pop(0)
        try:
            step()
        finally:
            if self._steps:
                self._timer.start()
            elif self._finished:
                self._then()
