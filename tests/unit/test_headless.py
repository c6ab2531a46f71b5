"""The core imports no Qt and no napari, and `import napari_anonavila` stays light."""

from __future__ import annotations

import os
import subprocess
import sys

CORE = ["napari_anonavila", "napari_anonavila.terms", "napari_anonavila.head", "napari_anonavila.detector",
        "napari_anonavila.backends", "napari_anonavila.checkpoint", "napari_anonavila.maps",
        "napari_anonavila.metrics", "napari_anonavila.cli", "napari_anonavila.export.tables"]


def test_core_imports_without_qt_or_napari():
    code = (
        "import sys\n"
        "for m in ('napari', 'qtpy', 'magicgui', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'superqt'):\n"
        "    sys.modules[m] = None\n"
        f"import importlib\nfor m in {CORE!r}:\n    importlib.import_module(m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_top_level_import_loads_no_torch():
    code = "import sys, napari_anonavila\nassert 'torch' not in sys.modules, 'torch imported eagerly'\n"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sweep_removes_only_partials_of_dead_processes(tmp_path):
    from napari_anonavila._atomic import partial_prefix, sweep_partials

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    prefix = partial_prefix(tmp_path / "a.csv")  # .a.csv.<host>.<our pid>.
    mine = tmp_path / f"{prefix}x1.partial"
    theirs = tmp_path / f"{prefix.replace(f'.{os.getpid()}.', f'.{dead}.')}x2.partial"
    other_host = tmp_path / ".a.csv.otherhost.1.x3.partial"
    for p in (mine, theirs, other_host):
        p.write_text("x")
    assert sweep_partials(tmp_path) == 1
    assert mine.exists() and other_host.exists() and not theirs.exists()


def test_the_suite_cannot_reach_the_network(no_network):
    """The suite-wide guard: a connection off this machine fails loudly and is recorded."""
    import socket

    import pytest

    with pytest.raises(RuntimeError, match="reach the network"), socket.socket() as s:
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routable
    assert no_network == [("192.0.2.1", 443)]
