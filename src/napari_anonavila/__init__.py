"""napari-anonavila: text-grounded anomaly detection for whole-slide pathology images (Ano-NAViLa).

The package follows the data path:

- ``slide``: whole-slide files -> lazy multiscale arrays (OpenSlide, tifffile)
- ``grid``: tissue mask and the patch grid in level-0 pixels and microns
- ``backends``: frozen vision-language models -> normalised image and text embeddings
- ``terms``: the normal and abnormal term pools
- ``head``, ``training``, ``scoring``, ``detector``, ``checkpoint``: the Ano-NAViLa method
- ``pipeline``, ``embcache``: streaming whole-slide scoring with an embedding cache
- ``maps``, ``metrics``: heatmaps, slide scores, evaluation
- ``cli``: the ``anonavila`` command; ``_napari``: the napari plugin (the only Qt/napari code)

The top level is lazy: ``import napari_anonavila`` loads no torch until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Detector", "PatchScores", "ScoreMode", "SlideResult", "TermPools", "TrainConfig", "__version__",
           "open_result", "open_slide"]

_LAZY = {
    "Detector": "napari_anonavila.detector",
    "PatchScores": "napari_anonavila.scoring",
    "ScoreMode": "napari_anonavila.scoring",
    "SlideResult": "napari_anonavila.result",
    "open_result": "napari_anonavila.export.result_folder",
    "TermPools": "napari_anonavila.terms",
    "TrainConfig": "napari_anonavila.training",
    "open_slide": "napari_anonavila.slide",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_anonavila' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
