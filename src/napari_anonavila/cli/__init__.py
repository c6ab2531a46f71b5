"""The ``anonavila`` console script: argparse root, logging, and error reporting (exit code 2)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from .. import __version__
from ..errors import AnonavilaError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from . import batch, calibrate, evaluate, export, localise, patches, slides

    parser = argparse.ArgumentParser(
        prog="anonavila",
        description="Text-grounded anomaly detection for pathology images (Ano-NAViLa).",
    )
    parser.add_argument("--version", action="version", version=f"napari-anonavila {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (slides, patches, calibrate, evaluate, localise, export, batch):
        module.add_commands(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 2 for our errors and bad arguments, 130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), format="%(levelname)s %(name)s: %(message)s")
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # our warnings are messages for the user, shown once each
        warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except (AnonavilaError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, file too large, permissions: nothing partial was kept
        print(f"error: {err.strerror or err} ({err.filename or 'output'}); earlier outputs are unchanged",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial outputs were written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
