"""``anonavila demo`` and ``anonavila score-slide``: whole slides end to end."""

from __future__ import annotations

import argparse

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the slide commands (filled in with the slide pipeline)."""
