"""Our checkpoint file (``.safetensors``: tensors plus JSON metadata, no pickle) to and from a
:class:`DetectorState`."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..errors import CheckpointError, NonFiniteError
from .files import read_checkpoint, write_checkpoint
from .state import DetectorState

__all__ = ["read_state", "write_state"]


def write_state(path: str | os.PathLike, state: DetectorState, *, overwrite: bool = False) -> Path:
    """Write a fitted detector's state: MLP, text embeddings, centroids, normal reference, calibration and
    metadata, atomically. Nothing is written when a value is not finite."""
    from .. import __version__

    if state.logit_scale_exp is None or not math.isfinite(state.logit_scale_exp):
        raise NonFiniteError(f"not saved: the logit scale is {state.logit_scale_exp}")
    tensors = {f"mlp.{k}": v for k, v in state.mlp.items()}
    tensors.update({"text.normal": state.normal_text, "text.abnormal": state.abnormal_text,
                    "centroid.normal": state.centroids[0], "centroid.abnormal": state.centroids[1]})
    if state.reference is not None:
        tensors["reference"] = state.reference
    if state.calibration is not None:
        tensors.update(state.calibration.tensors())
    broken = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if broken:
        raise NonFiniteError(f"not saved: {', '.join(broken)} hold NaN or infinite values (did training diverge?)")
    meta = {"package_version": __version__, "backend_spec": state.backend_spec, "backend_id": state.backend_id,
            "embed_dim": state.embed_dim, "logit_scale_exp": state.logit_scale_exp, "mode": state.mode,
            "pools": state.pools.to_dict(), "info": state.info,
            "calibration_source": state.calibration.source if state.calibration is not None else None,
            "calibration_slide_statistic": state.calibration.slide_statistic if state.calibration is not None
            else None,
            "calibration_normalise": state.calibration.normalise if state.calibration is not None else None}
    return write_checkpoint(path, tensors, meta, overwrite=overwrite)


def read_state(path: str | os.PathLike) -> DetectorState:
    """Read our checkpoint (names, shapes, dtypes and finiteness checked in :func:`read_checkpoint`) as plain data;
    anything inconsistent is a CheckpointError naming the file."""
    from ..calibration import Calibration
    from ..options import ScoreMode
    from ..terms import TermPools

    tensors, meta = read_checkpoint(path)
    try:
        pools = TermPools.from_dict(meta["pools"])
        texts = (tensors["text.normal"], tensors["text.abnormal"])
        if (len(pools.normal), len(pools.abnormal)) != (len(texts[0]), len(texts[1])):
            raise ValueError(f"{len(pools.normal)}/{len(pools.abnormal)} terms for {len(texts[0])}/"
                             f"{len(texts[1])} text embeddings")
        mode = ScoreMode(meta.get("mode", "sum")).value
        return DetectorState(
            backend_spec=str(meta["backend_spec"]), backend_id=str(meta["backend_id"]), pools=pools,
            normal_text=texts[0], abnormal_text=texts[1], logit_scale_exp=float(meta["logit_scale_exp"]),
            mlp={k[4:]: v for k, v in tensors.items() if k.startswith("mlp.")},
            centroids=(tensors["centroid.normal"].reshape(-1), tensors["centroid.abnormal"].reshape(-1)),
            reference=tensors.get("reference"), mode=mode,
            calibration=Calibration.from_tensors(tensors, str(meta.get("calibration_source") or "stored"),
                                                 str(meta.get("calibration_slide_statistic") or "max_eroded"),
                                                 str(meta.get("calibration_normalise") or "reference")),
            info=meta.get("info") if isinstance(meta.get("info"), dict) else {})
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: checkpoint content is incomplete or inconsistent ({err})") from err
