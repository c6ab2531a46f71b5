"""GUI tests: a real napari window (under Xvfb in CI, started by pytest-xvfb)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    skip = pytest.mark.skip(reason="no display: install Xvfb (scripts/test.sh does, as root) for the napari tests")
    for item in items:
        if "tests/napari" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def wait_worker(qtbot, widget, timeout=120_000):
    """Wait until the widget's worker is gone (finished, errored or aborted)."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)
