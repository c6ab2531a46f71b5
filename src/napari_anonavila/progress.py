"""Progress events and cancellation shared by every long-running generator (fit, score, batch)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import CancelledError

__all__ = ["Progress", "ProgressCallback", "drain", "restage", "waiting"]

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``stage`` are finished; ``info`` carries stage-specific values."""

    stage: str
    done: int
    total: int
    info: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]


def drain(
    gen: Generator[Progress, None, T],
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> T:
    """Run a progress generator to its end and return its value; raise CancelledError when ``cancel`` is set."""
    try:
        while True:
            event = next(gen)
            if on_progress is not None:
                on_progress(event)
            if cancel is not None and cancel.is_set():
                gen.close()
                raise CancelledError(f"cancelled during {event.stage} at {event.done}/{event.total}")
    except StopIteration as stop:
        return stop.value


def restage(gen: Generator[Progress, None, T], stage: str) -> Generator[Progress, None, T]:
    """``gen`` with every event's stage renamed (e.g. 'encode' -> 'encoding the normal regions'); same result."""
    try:
        while True:
            event = next(gen)
            yield Progress(stage, event.done, event.total, event.info)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


def waiting(fn: Callable[[], T], stage: str, *, tick_s: float = 0.2) -> Generator[Progress, None, T]:
    """Run ``fn`` (a blocking call with no progress of its own: building or loading a model) on a side thread and
    yield a Progress every ``tick_s`` with the seconds so far (``total`` 0: no known end). A consumer that stops
    iterating (Cancel) is free within one tick; ``fn`` then finishes on its own thread and its result is dropped."""
    import time

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the consumer below
            box["error"] = err

    thread = threading.Thread(target=run, name=f"anonavila: {stage}", daemon=True)
    t0 = time.perf_counter()
    thread.start()
    while thread.is_alive():
        yield Progress(stage, 0, 0, {"seconds": time.perf_counter() - t0})
        thread.join(tick_s)
    if "error" in box:
        raise box["error"]
    return box["value"]
