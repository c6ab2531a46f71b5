"""The project's error types: one base, each also a matching built-in so callers can catch either."""

from __future__ import annotations

__all__ = [
    "AnonavilaError",
    "BackendUnavailableError",
    "CancelledError",
    "CheckpointError",
    "GridError",
    "InputFileError",
    "MissingMppWarning",
    "NonFiniteError",
    "OutputExistsError",
    "SlideReadError",
    "TermPoolError",
]


class AnonavilaError(Exception):
    """Base of every error this package raises on purpose. The CLI turns it into exit code 2."""


class TermPoolError(AnonavilaError, ValueError):
    """A term pool is empty, malformed, or its file cannot be parsed."""


class CheckpointError(AnonavilaError, ValueError):
    """A checkpoint is not ours, is truncated, or does not match the backend."""


class BackendUnavailableError(AnonavilaError, ImportError):
    """An optional package or a weights file needed by a VLM backend is missing."""


class SlideReadError(AnonavilaError, OSError):
    """A slide file cannot be opened or decoded."""


class GridError(AnonavilaError, ValueError):
    """A patch grid cannot be laid on a slide (for example a patch larger than the slide)."""


class InputFileError(AnonavilaError, ValueError):
    """A user-given input file (CSV, patch name, labels) is malformed."""


class OutputExistsError(AnonavilaError, FileExistsError):
    """An output exists and overwriting was not asked for."""


class NonFiniteError(AnonavilaError, ValueError):
    """Numbers that must be finite are NaN or infinite (training diverged, or a model or file is damaged)."""


class CancelledError(AnonavilaError):
    """Long work was cancelled by the caller; nothing partial was written."""


class MissingMppWarning(UserWarning):
    """A slide has no microns-per-pixel metadata; sizes fall back to pixels."""
