"""A detector as plain data: what a checkpoint file holds, and what :class:`~napari_anonavila.detector.Detector`
builds itself from. Tensors, term pools, a calibration and metadata; no model objects, no Detector."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..calibration import Calibration
    from ..terms import TermPools

__all__ = ["DetectorState"]


@dataclass
class DetectorState:
    """Everything a fitted detector is besides its image model.

    ``backend_spec`` names the image model to attach ('' when the file names none: a head-only import);
    ``backend_id`` identifies the weights the text embeddings came from. ``mlp`` is the MLP's state dict (keys
    ``linear1.weight`` ... ``linear3.bias``); ``logit_scale_exp`` is None when the file has none (the backend's is
    used then).
    """

    backend_spec: str
    backend_id: str
    pools: TermPools
    normal_text: torch.Tensor
    abnormal_text: torch.Tensor
    logit_scale_exp: float | None
    mlp: dict[str, torch.Tensor]
    centroids: tuple[torch.Tensor, torch.Tensor]
    reference: torch.Tensor | None = None
    mode: str = "sum"
    calibration: Calibration | None = None
    info: dict = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        return int(self.normal_text.shape[1])
