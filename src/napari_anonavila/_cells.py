"""Text cells written to files people open in spreadsheets: never a formula."""

from __future__ import annotations

__all__ = ["safe_cell"]

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """A cell a spreadsheet will not run: text starting with ``= + - @`` (or a tab or carriage return) gets a
    leading apostrophe (OWASP's advice for CSV injection), unless it is a number such as ``-0.5``."""
    if not isinstance(value, str) or not value.startswith(_FORMULA):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value
