"""Provenance: which slide, model, terms, settings and software produced a result."""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata

__all__ = ["package_versions", "provenance"]

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


def provenance(result, detector, *, slide_fingerprint: str, checkpoint: dict | None = None) -> dict:
    """A JSON-ready record of everything that determines ``result``."""
    grid = result.grid
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "slide": {**result.slide, "fingerprint_sha256": slide_fingerprint},
        "model": detector.describe(),
        "demo_model": detector.is_demo,
        "backend": {"spec": detector.backend_spec, "id": detector.backend_id,
                    "logit_scale_exp": detector.logit_scale_exp,
                    "precision": getattr(detector.backend, "precision", None),
                    "numerics": getattr(detector.backend, "numerics", None)},
        "checkpoint": checkpoint,
        "term_pools": detector.pools.to_dict(),
        "scoring_mode": result.mode,
        "calibration": result.calibration.to_dict() if result.calibration is not None else None,
        "grid": {**grid.key(), "patch_size_um": grid.patch_size_um, "mpp": grid.mpp},
        "detector_info": detector.info,
        "versions": package_versions(),
    }
