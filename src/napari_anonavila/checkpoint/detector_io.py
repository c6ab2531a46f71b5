"""A Detector to and from our checkpoint file (``.safetensors``: tensors plus JSON metadata, no pickle)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import CheckpointError, NonFiniteError
from .files import read_checkpoint, write_checkpoint

if TYPE_CHECKING:
    from ..backends import VLMBackend
    from ..detector import Detector

__all__ = ["load_detector", "save_detector"]


def save_detector(det: Detector, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a fitted detector: MLP, text embeddings, centroids, normal reference and its metadata, atomically."""
    from .. import __version__

    if not det.is_fitted:
        raise ValueError("only a fitted detector can be saved; call fit() first")
    if not math.isfinite(det.logit_scale_exp):
        raise NonFiniteError(f"not saved: the logit scale is {det.logit_scale_exp}")
    tensors = {f"mlp.{k}": v for k, v in det.mlp.state_dict().items()}
    tensors.update({"text.normal": det.normal_text, "text.abnormal": det.abnormal_text,
                    "centroid.normal": det.centroids[0], "centroid.abnormal": det.centroids[1]})
    if det.reference is not None:
        tensors["reference"] = det.reference
    if det.calibration is not None:
        tensors.update(det.calibration.tensors())
    broken = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if broken:
        raise NonFiniteError(f"not saved: {', '.join(broken)} hold NaN or infinite values (did training diverge?)")
    meta = {"package_version": __version__, "backend_spec": det.backend_spec, "backend_id": det.backend_id,
            "embed_dim": det.embed_dim, "logit_scale_exp": det.logit_scale_exp, "mode": det.mode.value,
            "pools": det.pools.to_dict(), "info": det.info,
            "calibration_source": det.calibration.source if det.calibration is not None else None}
    return write_checkpoint(path, tensors, meta, overwrite=overwrite)


def load_detector(cls: type[Detector], path: str | os.PathLike, *, backend: str | VLMBackend | None = None,
                  device: str | None = None, attach_backend: bool = True, precision: str = "float32",
                  allow_download: bool = False) -> Detector:
    """Read our checkpoint (every tensor checked) and attach the backend it names, or ``backend``, which must match
    the weights it was trained with. A checkpoint made from a head-only file names no backend: it attaches one only
    when ``backend`` is given."""
    from ..backends import VLMBackend, get_backend
    from ..calibration import Calibration
    from ..head import MLP
    from ..scoring import ScoreMode
    from ..terms import TermPools

    tensors, meta = read_checkpoint(path)  # names, shapes, dtypes and finiteness are checked there
    dim = int(meta["embed_dim"])
    try:
        pools = TermPools.from_dict(meta["pools"])
        mlp = MLP(dim)
        mlp.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("mlp.")})
        cents = (tensors["centroid.normal"].reshape(-1), tensors["centroid.abnormal"].reshape(-1))
        texts = (tensors["text.normal"], tensors["text.abnormal"])
        if (len(pools.normal), len(pools.abnormal)) != (len(texts[0]), len(texts[1])):
            raise ValueError(f"{len(pools.normal)}/{len(pools.abnormal)} terms for {len(texts[0])}/"
                             f"{len(texts[1])} text embeddings")
        spec, backend_id = str(meta["backend_spec"]), str(meta["backend_id"])
        mode = ScoreMode(meta.get("mode", "sum"))
        calibration = Calibration.from_tensors(tensors, str(meta.get("calibration_source") or "stored"))
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: checkpoint content is incomplete or inconsistent ({err})") from err
    vlm = None
    if backend is not None or (attach_backend and spec):
        vlm = backend if isinstance(backend, VLMBackend) else get_backend(
            backend or spec, device, precision=precision, allow_download=allow_download)
        if (spec and vlm.id != backend_id) or vlm.embed_dim != dim:
            raise CheckpointError(f"{path}: trained with backend {backend_id} ({dim}-d), but the given backend is "
                                  f"{vlm.id} ({vlm.embed_dim}-d); pass the backend it was trained with")
    return cls(backend=vlm, backend_spec=spec or (str(vlm.spec) if vlm else ""), backend_id=backend_id, pools=pools,
               normal_text=texts[0], abnormal_text=texts[1], logit_scale_exp=meta["logit_scale_exp"], mlp=mlp,
               centroids=cents, reference=tensors.get("reference"), mode=mode, calibration=calibration,
               info=meta.get("info") if isinstance(meta.get("info"), dict) else {})
