"""Checkpoint files: our own safetensors + JSON format, and the authors' ``.pth`` layout for import.

Neither path can run code from the file: safetensors holds tensors only, and ``.pth`` files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import torch

from ._atomic import atomic_write, check_writable
from .errors import CheckpointError

__all__ = ["FORMAT", "FORMAT_VERSION", "read_checkpoint", "read_official", "write_checkpoint"]

FORMAT = "napari-anonavila/detector"
FORMAT_VERSION = 1
_MLP_KEYS = [f"linear{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]


def write_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict, *,
                     overwrite: bool = False) -> Path:
    """Write tensors plus JSON metadata to one ``.safetensors`` file, atomically."""
    from safetensors.torch import save

    path = check_writable(path, overwrite=overwrite)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
    # serialised in memory and written through our own atomic path (safetensors' save_file leaves a stray
    # temporary file behind when the process is killed)
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=header)
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read our checkpoint; raise CheckpointError naming the file for anything else."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        hint = " (an authors' .pth checkpoint? use Detector.from_official_checkpoint)" if _is_zip(path) else ""
        raise CheckpointError(f"{path}: not a napari-anonavila checkpoint: {err}{hint}") from err
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: safetensors file without napari-anonavila metadata (format={header.get('format')!r})"
        )
    version = int(header.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} is newer than this version reads "
                              f"({FORMAT_VERSION}); upgrade napari-anonavila")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({err})") from err
    return tensors, meta


def _is_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _check_official_shapes(path: Path, state: dict) -> None:
    """Text embeddings (n, D) with one D, an MLP for that D, and centroids of D/4 values."""
    tn, ta = state["normal_text_embs"], state["abnormal_text_embs"]
    if tn.ndim != 2 or ta.ndim != 2 or tn.shape[1] != ta.shape[1] or tn.shape[0] < 1 or ta.shape[0] < 1:
        raise CheckpointError(f"{path}: text embeddings have shapes {tuple(tn.shape)} and {tuple(ta.shape)}; "
                              "expected (n_normal, D) and (n_abnormal, D)")
    d = tn.shape[1]
    expected = {"MLP.linear1.weight": (d, 2 * d), "MLP.linear1.bias": (d,), "MLP.linear2.weight": (d // 2, d),
                "MLP.linear2.bias": (d // 2,), "MLP.linear3.weight": (d // 4, d // 2), "MLP.linear3.bias": (d // 4,)}
    for k, shape in expected.items():
        if tuple(state[k].shape) != shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(state[k].shape)}, expected {shape} for D={d}")
    for k in ("normal_img_normal_text_centroid", "normal_img_abnormal_text_centroid"):
        if state[k].numel() != d // 4:
            raise CheckpointError(f"{path}: {k} has {state[k].numel()} values, expected {d // 4} for D={d}")


def read_official(path: str | os.PathLike) -> dict:
    """Read the authors' ``torch.save({'model_state': ...})`` file (``module.`` prefixes and VLM weights optional).

    Returns the parts we use: ``mlp`` (state dict), ``normal_text``, ``abnormal_text``, ``centroid_normal``,
    ``centroid_abnormal``, ``logit_scale_exp`` (None without ``VLM.logit_scale``) and ``has_vlm``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refusals and corrupt zips raise many types
        raise CheckpointError(f"{path}: cannot read as a weights-only torch checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); files that need code to load "
                              "are refused") from err
    state = obj.get("model_state", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no 'model_state' dictionary in the checkpoint")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    need = [f"MLP.{k}" for k in _MLP_KEYS] + ["normal_text_embs", "abnormal_text_embs",
                                               "normal_img_normal_text_centroid", "normal_img_abnormal_text_centroid"]
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not an Ano-NAViLa checkpoint; missing {missing[:4]}")
    bad = [k for k in need if not isinstance(state[k], torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries {bad[:4]} are not tensors")
    _check_official_shapes(path, state)
    return {
        "mlp": {k: state[f"MLP.{k}"].float() for k in _MLP_KEYS},
        "normal_text": state["normal_text_embs"].float(),
        "abnormal_text": state["abnormal_text_embs"].float(),
        "centroid_normal": state["normal_img_normal_text_centroid"].float().reshape(-1),
        "centroid_abnormal": state["normal_img_abnormal_text_centroid"].float().reshape(-1),
        "logit_scale_exp": float(state["VLM.logit_scale"].float().exp().reshape(-1)[0])
        if "VLM.logit_scale" in state else None,
        "has_vlm": any(k.startswith("VLM.") for k in state),
    }
