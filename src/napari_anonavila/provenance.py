"""Provenance: which slide, model, terms, settings and software produced a result."""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata
from pathlib import Path

__all__ = ["package_versions", "provenance", "slide_record"]

_PACKAGES = ("napari-anonavila", "torch", "open_clip_torch", "openslide-python", "openslide-bin", "tifffile",
             "numpy", "dask", "conch-fork")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def slide_record(slide) -> dict:
    """An open slide as a result records it: its description, its absolute resolved path (a result reopens from
    any working folder) and its content fingerprint (the same slide, wherever it is found later)."""
    return {**slide.describe(), "path": str(Path(slide.path).resolve()), "fingerprint_sha256": slide.fingerprint()}


def provenance(slide: dict, grid, mode: str, calibration, detector, *, checkpoint: dict | None = None) -> dict:
    """A JSON-ready record of everything that determines a result: the ``slide`` (:func:`slide_record`), its patch
    ``grid``, the score ``mode``, the ``calibration`` and the ``detector`` (model, terms, training record)."""
    backend = detector.backend
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "slide": dict(slide),
        "model": detector.describe(),
        "demo_model": detector.is_demo,
        "backend": {"spec": detector.backend_spec, "id": detector.backend_id,
                    "logit_scale_exp": detector.logit_scale_exp,
                    "precision": getattr(backend, "precision", None),
                    "numerics": getattr(backend, "numerics", None)},
        "checkpoint": checkpoint,
        "term_pools": detector.pools.to_dict(),
        "scoring_mode": mode,
        "calibration": calibration.to_dict() if calibration is not None else None,
        "grid": {**grid.key(), "patch_size_um": grid.patch_size_um, "mpp": grid.mpp},
        "detector_info": detector.info,
        "versions": package_versions(),
    }
