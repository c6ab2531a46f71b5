"""First contact stays light: the CLI's --help and the plugin's menus, reader and sample data do not import torch
(seconds to tens of seconds on a cold disk). Times are measured in bench/bench_first_contact.py, not here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).with_name("anonavila"))


def _modules_after(code: str) -> set[str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    res = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return set(res.stdout.split())


def test_cli_help_does_not_load_torch():
    mods = _modules_after("from napari_anonavila.cli import build_parser\nbuild_parser().format_help()")
    assert "torch" not in mods
    res = subprocess.run([EXE, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "score-slide" in res.stdout and "calibrate" in res.stdout


def test_the_plugins_menus_reader_and_sample_do_not_load_torch_scipy_or_dask_arrays():
    pytest.importorskip("napari")
    mods = _modules_after("import napari, napari.viewer\n"
                          "import napari_anonavila._napari.widgets.panel, napari_anonavila._napari.reader, "
                          "napari_anonavila._napari.sample_data, napari_anonavila._napari.writer, "
                          "napari_anonavila._napari.widgets.cohort\n"
                          "from napari_anonavila.slide import open_slide\n"
                          "from napari_anonavila.sample import write_pyramid_tiff\n"
                          "import numpy, tempfile, os\n"
                          "p = write_pyramid_tiff(os.path.join(tempfile.mkdtemp(), 's.tif'), "
                          "numpy.zeros((512, 512, 3), numpy.uint8), 0.5)\n"
                          "open_slide(p).level_arrays[-1][:8, :8]")
    for heavy in ("torch", "scipy.ndimage", "dask.array", "matplotlib.pyplot"):
        assert heavy not in mods, f"the plugin's first contact (menus, File > Open) imports {heavy} on the UI thread"


def test_the_score_workers_start_loads_what_the_first_result_layers_import():
    """napari imports pandas on the UI thread for the first points layer with features (0.3 s here); the Score
    worker imports it while it loads torch, so drawing the first top-k does not."""
    pytest.importorskip("napari")
    before = _modules_after("import napari, napari_anonavila._napari.workers")
    after = _modules_after("import napari_anonavila._napari.workers as w\nw._detector_class()")
    assert "pandas" not in before and "torch" not in before
    assert {"pandas", "torch"} <= after
