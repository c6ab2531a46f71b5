"""Checkpoints: the file formats (ours and the authors') read and written as plain data.

``files`` reads and writes the bytes, checked, never running code from a file; ``state`` is a detector as plain
data (:class:`DetectorState`); ``detector_io`` turns our files into a state and back; ``authors`` turns the
authors' ``.pth`` (complete, or head-only) into one. :class:`~napari_anonavila.detector.Detector` builds itself from
a state: nothing here imports it.
"""

from .authors import HEAD_ONLY, authors_backend, authors_state, name_imported_terms
from .detector_io import read_state, write_state
from .files import FORMAT, FORMAT_VERSION, checkpoint_kind, read_checkpoint, read_official, write_checkpoint
from .state import DetectorState

__all__ = ["FORMAT", "FORMAT_VERSION", "HEAD_ONLY", "DetectorState", "authors_backend", "authors_state",
           "checkpoint_kind", "name_imported_terms", "read_checkpoint", "read_official", "read_state",
           "write_checkpoint", "write_state"]
