"""First contact in a real window: how long the UI thread is held (target: no stall over 100 ms) when a new user
opens a slide, opens the sample, opens the Score panel and presses Run, and cancels while the model loads.

Each measurement is a fresh process (the plugin's first use in that window: its imports count), 5 alternating
rounds, warm and, when the page cache may be dropped (root on Linux), cold. In the child a 5 ms QTimer on the UI
thread records its firings from just before the action until it has finished; the longest gap is the longest time
the window could not respond. napari's own start (import, window) happens before the timer and is not counted.
Run under a display or Xvfb (one command for the table):

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python bench/bench_first_contact_ui.py
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
PLUGIN = "napari-anonavila"
PROBES = {
    "napari_first_layer": "napari alone: its first layer (an empty Points layer; baseline)",
    "napari_second_layer": "napari alone: a second empty Points layer, after the first has drawn (baseline)",
    "napari_result_layers": "napari alone: a heatmap Image layer, its colour bar and two Points layers inserted "
                            "above a drawn slide by the plugin's insert, one per event-loop turn (baseline)",
    "open_slide": "File > Open of a slide",
    "open_sample": "File > Open Sample (not yet written)",
    "score_panel_and_run": "Plugins > Score, then Run (checkpoint)",
    "cancel_while_loading": "Cancel while torch and the model load",
}


def _time_plugin_calls() -> list[tuple[str, float]]:
    """Wrap the plugin's entry points on the UI thread (reader, sample command, the Score panel's handlers, the
    result layers it draws one per event-loop turn) so each call's name and duration are recorded in the returned
    list."""
    import functools

    from napari_anonavila._napari import reader, sample_data
    from napari_anonavila._napari.turns import TurnQueue
    from napari_anonavila._napari.widgets.score import ScoreWidget

    ours: list[tuple[str, float]] = []

    def timed(owner, name: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)  # napari reads the widget's signature to hand it the viewer
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                ours.append((name, time.perf_counter() - t))

        setattr(owner, name, wrapper)

    for owner, names in ((reader, ("get_reader", "read_slide")), (sample_data, ("sample_slide",)),
                         (ScoreWidget, ("__init__", "_on_run", "_on_yield", "_on_result", "_on_aborted")),
                         (TurnQueue, ("next_step", "finish"))):
        for name in names:
            timed(owner, name)
    return ours


def _time_garbage_collections() -> list[float]:
    """Record the duration of each full (oldest-generation) collection of Python's garbage collector, on any
    thread: a collection holds the GIL, so one in a worker stops the UI thread too."""
    import gc

    full: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            full.append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    return full


# -- the child: one probe in a fresh window --------------------------------------------------------------------
def _before_the_clock(v, probe: str, slide: str, model: str):
    """What a probe needs in place before its clock starts: (the slide layer, the Score panel), or Nones."""
    import numpy as np

    needs_slide = ("score_panel_and_run", "cancel_while_loading", "napari_result_layers")
    layer = v.open(slide, plugin=PLUGIN)[0] if probe in needs_slide else None
    w = None
    if probe == "cancel_while_loading":
        _dock, w = v.window.add_plugin_dock_widget(PLUGIN, "Score")
        w.slide_layer.value, w.model.value, w.patch_um.value = layer, Path(model), 64.0
    if probe == "napari_result_layers":  # as the plugin's worker does before the first points layer
        import pandas  # noqa: F401
    if probe == "napari_second_layer":  # napari's first layer, drawn before the clock starts
        v.add_points(np.zeros((0, 2)))
    return layer, w


def _insert_like_the_plugin(v, slide_layer, pump) -> list[tuple[str, float]]:
    """napari's own cost of what Score draws, without the rest of the plugin: the layers are built first (pure
    models; the plugin builds them from a worker's results), then each goes in through the plugin's own insert
    (`results._add_above`: directly above the slide, without taking the selection), in its own event-loop turn, and
    the colour bar is switched on in a later turn. Returns each napari call and its duration (s)."""
    import numpy as np
    from napari.layers import Image, Points

    from napari_anonavila._napari.results import HEATMAP, SIGNIFICANT, TOPK, _add_above
    from napari_anonavila._napari.tags import link_of, tag

    def tagged(kind: str, **kw) -> dict:
        return tag(kw, slide_layer.name, link_of(slide_layer), kind)

    rng = np.random.default_rng(0)
    um = np.asarray(slide_layer.scale[-2:])
    heat = Image(rng.random((64, 64), dtype=np.float32), **tagged(HEATMAP, colormap="inferno", opacity=0.5,
                                                                  scale=tuple(um * 64)))
    points = [Points(rng.random((n, 2)) * 4096 * um, **tagged(kind)) for n, kind in ((60, SIGNIFICANT), (20, TOPK))]
    calls = []

    def timed(name: str, action) -> None:
        t = time.perf_counter()
        action()
        calls.append((name, time.perf_counter() - t))
        pump(0.3)

    timed("insert Image", lambda: _add_above(v, heat, slide_layer))
    timed("colour bar", lambda: setattr(heat.colorbar, "visible", True))
    for i, layer in enumerate(points):
        name = "insert first Points" if i == 0 else "insert Points"
        timed(name, lambda layer=layer: _add_above(v, layer, slide_layer))
    return calls


def _child(probe: str, slide: str, model: str) -> dict:
    import napari
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    v = napari.Viewer(show=True)

    def pump(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.002)

    ours = _time_plugin_calls()
    collections = _time_garbage_collections()
    pump(1.0)
    layer, w = _before_the_clock(v, probe, slide, model)
    pump(0.5)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    pump(0.1)
    ours.clear()
    collections.clear()
    t0 = time.perf_counter()
    extra: dict = {}
    if probe in ("napari_first_layer", "napari_second_layer"):
        v.add_points(np.zeros((0, 2)))
        pump(0.5)
    elif probe == "napari_result_layers":
        extra["napari_calls"] = _insert_like_the_plugin(v, layer, pump)
    elif probe == "open_slide":
        v.open(slide, plugin=PLUGIN)
        pump(0.5)  # the first draw
    elif probe == "open_sample":
        v.open_sample(PLUGIN, "planted_anomalies")
        while not any(ly.name.startswith("planted anomalies") for ly in v.layers):
            pump(0.05)
        pump(0.5)
    elif probe == "score_panel_and_run":
        _dock, w = v.window.add_plugin_dock_widget(PLUGIN, "Score")
        w.slide_layer.value, w.model.value, w.patch_um.value = layer, Path(model), 64.0
        w.run_button.native.click()
        while w.worker is not None:
            pump(0.01)
        pump(0.5)
        extra["scored"] = w.session.result is not None
    else:
        w.run_button.native.click()
        while w.worker is not None and w.progress.max != 0:  # the busy bar: torch or the model is loading
            pump(0.005)
        pump(0.3)
        t_cancel = time.perf_counter()
        extra["stage"] = w.progress.label
        w.run_button.native.click()
        while w.worker is not None:
            pump(0.005)
        extra["cancel_ms"] = (time.perf_counter() - t_cancel) * 1e3
    seconds = time.perf_counter() - t0
    timer.stop()
    ticks = [t for t in ticks if t >= t0 - 0.01]
    gaps = [b - a for a, b in itertools.pairwise(ticks)] or [seconds]
    name, longest = max(ours, key=lambda c: c[1], default=("", 0.0))
    out = {"stall_ms": max(gaps) * 1e3, "seconds": seconds, "plugin_ms": longest * 1e3, "plugin_call": name,
           "gc_ms": max(collections, default=0.0) * 1e3, **extra}
    v.close()  # as napari's own exit does: the window goes before the interpreter
    pump(0.2)
    return out


# -- the parent: rounds, regimes, the table ----------------------------------------------------------------------
def _fixtures(folder: Path) -> tuple[str, str]:
    """A 4096 px synthetic slide and a demo checkpoint fitted on its normal twin (as `anonavila demo` makes)."""
    from napari_anonavila.demo import run_demo

    run_demo(folder / "demo", size=4096, epochs=5)
    return str(folder / "demo" / "slides" / "anomalous.tif"), str(folder / "demo" / "model.safetensors")


def main(rounds: int = 5) -> None:
    from _common import drop_caches, host_line, machine, save

    work = Path(tempfile.mkdtemp(prefix="anonavila-first-contact-"))
    slide, model = _fixtures(work)
    regimes = ("warm", "cold") if drop_caches() else ("warm",)
    runs: dict[str, dict[str, list[dict]]] = {r: {p: [] for p in PROBES} for r in regimes}
    for regime in regimes:
        for i in range(rounds):
            for probe in PROBES:  # alternating
                env = {**os.environ, "ANONAVILA_CACHE": str(work / f"cache-{regime}-{probe}-{i}")}
                if regime == "cold":
                    drop_caches()
                out = subprocess.run([sys.executable, "-X", "faulthandler", __file__, "--child", probe, slide, model],
                                     env=env, capture_output=True, text=True, timeout=900)
                if out.returncode != 0:
                    raise RuntimeError(f"{probe}: exit {out.returncode}: {out.stderr[-2000:]}")
                runs[regime][probe].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def cell(values: list[float], unit: str, spec: str) -> str:
        return f"{statistics.median(values):{spec}} {unit} ({min(values):{spec}}-{max(values):{spec}})"

    lines = []
    for regime, res in runs.items():
        for probe, rs in res.items():
            stall = [r["stall_ms"] for r in rs]
            what = PROBES[probe]
            extra = ""
            if probe == "cancel_while_loading":
                extra = f"Cancel to idle {cell([r['cancel_ms'] for r in rs], 'ms', '.0f')}"
            if probe == "napari_result_layers":
                names = [n for n, _ in rs[0]["napari_calls"]]
                extra = "napari's calls: " + ", ".join(
                    f"{n} {cell([r['napari_calls'][k][1] * 1e3 for r in rs], 'ms', '.0f')}"
                    for k, n in enumerate(names))
            took = cell([r["seconds"] for r in rs], "s", ".2f")
            plugin = [r["plugin_ms"] for r in rs]
            collect = cell([r["gc_ms"] for r in rs], "ms", ".0f")
            calls = sorted({r.get("plugin_call", "") for r in rs if r["plugin_ms"] >= 1} - {""})
            which = f" `{'`, `'.join(calls)}`" if calls else ""
            lines.append(f"| {what} | {regime} | {cell(stall, 'ms', '.0f')} | {cell(plugin, 'ms', '.0f')}{which} | "
                         f"{collect} | {took} | {extra} |")
    m = machine()
    md = f"""## First contact in a window (issue 22)

{host_line(m)}.
`bench/bench_first_contact_ui.py`: each a fresh napari process under Xvfb (Mesa software OpenGL), {rounds}
alternating rounds, median (range); cold rounds drop the page cache first. A 5 ms QTimer on the UI thread records
its firings from the action until it is done; *longest stall* is the longest gap (the time the window could not
respond), *time* the whole action. *Plugin's longest call* is the longest single call of the plugin's code on the UI
thread (the reader, the sample command, the Score panel's handlers and the result layers it draws one per
event-loop turn: a layer they create counts, napari's work around them does not), with the calls that were longest
in some round. napari's own start is not counted; the plugin's first imports are. The slide is
the demo's 4096 px synthetic slide, the model the demo checkpoint (64 um patches). *Longest full GC* is the longest
pass of Python's garbage collector over its oldest generation, on any thread (it holds the GIL, so one in a worker
stops the window too). Target: no stall over 100 ms.

| action | regime | longest stall | plugin's longest call | longest full GC | time | |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}"""
    save("first_contact_ui", {"machine": m, "rounds": rounds, "runs": runs}, md)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(_child(*sys.argv[2:5])))
    else:
        main()
