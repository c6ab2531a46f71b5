"""napari's reader preference for the slide formats this plugin reads, so that File > Open does not ask each time."""

from __future__ import annotations

from ..slide import SLIDE_SUFFIXES

__all__ = ["PATTERNS", "prefer_this_reader"]

PLUGIN = "napari-anonavila"
PATTERNS = tuple(f"*{s}" for s in SLIDE_SUFFIXES)


def prefer_this_reader() -> list[str]:
    """Make this plugin napari's reader for the slide patterns the user has not given a reader of their own; return
    the patterns set (none when all were set before: the user's choice is never changed). napari keeps it in its
    settings (Preferences > Plugins, where it can be undone)."""
    try:
        from napari.settings import get_settings

        prefs = get_settings().plugins.extension2reader
    except (ImportError, AttributeError):  # another napari: it asks, as it always did
        return []
    new = [p for p in PATTERNS if p not in prefs]
    if new:
        get_settings().plugins.extension2reader = {**prefs, **dict.fromkeys(new, PLUGIN)}
    return new
