"""Checkpoints: the file formats (ours and the authors'), and a Detector saved to and read from them.

``files`` reads and writes the bytes, checked, never running code from a file; ``detector_io`` turns our files into
a Detector and back; ``authors`` imports the authors' ``.pth`` (complete, or head-only).
"""

from .authors import HEAD_ONLY, import_authors, name_imported_terms
from .detector_io import load_detector, save_detector
from .files import FORMAT, FORMAT_VERSION, checkpoint_kind, read_checkpoint, read_official, write_checkpoint

__all__ = ["FORMAT", "FORMAT_VERSION", "HEAD_ONLY", "checkpoint_kind", "import_authors", "load_detector",
           "name_imported_terms", "read_checkpoint", "read_official", "save_detector", "write_checkpoint"]
