"""Checkpoint files: our own safetensors + JSON format, and the authors' ``.pth`` layout for import.

Neither path can run code from the file: safetensors holds tensors only, and ``.pth`` files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import torch

from .._atomic import atomic_write, check_writable
from ..errors import CheckpointError

__all__ = ["FORMAT", "FORMAT_VERSION", "checkpoint_kind", "read_checkpoint", "read_official", "write_checkpoint"]

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


_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_MAX_DIM = 4096
_MAX_META_CHARS = 16 << 20


def _expected_shapes(d: int) -> dict[str, tuple[int, ...]]:
    return {"mlp.linear1.weight": (d, 2 * d), "mlp.linear1.bias": (d,), "mlp.linear2.weight": (d // 2, d),
            "mlp.linear2.bias": (d // 2,), "mlp.linear3.weight": (d // 4, d // 2), "mlp.linear3.bias": (d // 4,)}


def _check_header(path: Path, shapes: dict[str, list[int]], dtypes: dict[str, str], meta: dict) -> int:
    """Every tensor's name, shape and dtype, checked from the header before any tensor is read; returns D."""
    need = [*_expected_shapes(4), "text.normal", "text.abnormal", "centroid.normal", "centroid.abnormal"]
    missing = [k for k in need if k not in shapes]
    if missing:
        raise CheckpointError(f"{path}: checkpoint content is incomplete (missing {', '.join(missing[:4])})")
    bad = [k for k, t in dtypes.items() if t not in _FLOAT_DTYPES]
    if bad:
        raise CheckpointError(f"{path}: tensor {bad[0]} has dtype {dtypes[bad[0]]}; expected floating point")
    tn, ta = shapes["text.normal"], shapes["text.abnormal"]
    if len(tn) != 2 or len(ta) != 2 or tn[1] != ta[1] or min(tn[0], ta[0]) < 1:
        raise CheckpointError(f"{path}: text embeddings have shapes {tn} and {ta}; expected (n_normal, D) and "
                              "(n_abnormal, D)")
    d = int(tn[1])
    if not 4 <= d <= _MAX_DIM or d % 4:
        raise CheckpointError(f"{path}: embedding size D={d} is not a multiple of 4 in 4..{_MAX_DIM}")
    if meta.get("embed_dim") != d:
        raise CheckpointError(f"{path}: metadata says embed_dim {meta.get('embed_dim')!r}, but the tensors are {d}-d")
    expected = {**_expected_shapes(d), "centroid.normal": (d // 4,), "centroid.abnormal": (d // 4,)}
    for k, shape in expected.items():
        got = tuple(shapes[k])
        if got != shape and not (k.startswith("centroid") and got == (1, d // 4)):
            raise CheckpointError(f"{path}: {k} has shape {got}, expected {shape} for D={d}")
    ref = shapes.get("reference")
    if ref is not None and (len(ref) != 2 or ref[1] != d):
        raise CheckpointError(f"{path}: reference has shape {ref}, expected (N, {d})")
    for k, cols in (("calibration.patches", 4), ("calibration.slides", 3)):
        got = shapes.get(k)
        if got is not None and (len(got) != 2 or got[1] != cols or got[0] > 1 << 24):
            raise CheckpointError(f"{path}: {k} has shape {got}, expected (N, {cols})")
    per_patch, patches = shapes.get("calibration.patch_slides"), shapes.get("calibration.patches")
    if per_patch is not None and (patches is None or list(per_patch) != [patches[0]]):
        raise CheckpointError(f"{path}: calibration.patch_slides has shape {per_patch}, expected "
                              f"({patches and patches[0]},)")
    return d


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read our checkpoint, checked: names, shapes and dtypes from the header first, then every value finite.

    Raises CheckpointError naming the file for anything else.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            names = list(fh.keys())
            shapes = {k: list(fh.get_slice(k).get_shape()) for k in names}
            dtypes = {k: str(fh.get_slice(k).get_dtype()) for k in names}
            if header.get("format") != FORMAT:
                raise CheckpointError(f"{path}: safetensors file without napari-anonavila metadata "
                                      f"(format={header.get('format')!r})")
            version = int(header.get("format_version", "0")) if str(header.get("format_version", "0")).isdigit() \
                else FORMAT_VERSION + 1
            if version > FORMAT_VERSION:
                raise CheckpointError(f"{path}: checkpoint format {header.get('format_version')} is newer than this "
                                      f"version reads ({FORMAT_VERSION}); upgrade napari-anonavila")
            meta = _parse_meta(path, header.get("meta"))
            dim = _check_header(path, shapes, dtypes, meta)
            # the calibration's reference scores stay float64 (scores of 1e-5..1e-3 are compared exactly)
            tensors = {k: fh.get_tensor(k) if k.startswith("calibration.") else fh.get_tensor(k).float()
                       for k in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        if isinstance(err, CheckpointError):
            raise
        hint = " (an authors' .pth checkpoint? Detector.load reads both)" if _is_zip(path) else ""
        raise CheckpointError(f"{path}: not a napari-anonavila checkpoint: {err}{hint}") from err
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: tensor {k} holds NaN or infinite values; the file is damaged or was "
                                  "written by a diverged training")
    scale = meta.get("logit_scale_exp")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        raise CheckpointError(f"{path}: logit_scale_exp {scale!r} is not a positive finite number")
    check_logit_scale(path, float(scale))
    check_centroids(path, tensors["centroid.normal"], tensors["centroid.abnormal"])
    meta["embed_dim"] = dim
    return tensors, meta


def _parse_meta(path: Path, text) -> dict:
    if not isinstance(text, str) or len(text) > _MAX_META_CHARS:
        raise CheckpointError(f"{path}: checkpoint metadata is missing or too large")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({type(err).__name__})") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is not a JSON object")
    return meta


def checkpoint_kind(path: str | os.PathLike) -> str:
    """``"ours"`` (safetensors) or ``"authors"`` (a torch file), told from the bytes, never from the extension."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({err.strerror or err})") from err
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30:
        return "ours"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip, or the legacy pickle format
        return "authors"
    raise CheckpointError(f"{path}: not a checkpoint this tool reads (neither a napari-anonavila .safetensors nor "
                          "an authors' Ano-NAViLa .pth)")


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
    for k, shape in ((f"MLP.{k[4:]}", v) for k, v in _expected_shapes(d).items()):
        if tuple(state[k].shape) != shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(state[k].shape)}, expected {shape} for D={d}")
    for k in ("normal_img_normal_text_centroid", "normal_img_abnormal_text_centroid"):
        if state[k].numel() != d // 4:
            raise CheckpointError(f"{path}: {k} has {state[k].numel()} values, expected {d // 4} for D={d}")


LOGIT_SCALE_RANGE = (1e-2, 1e3)  # exp(logit_scale): CLIP starts at 1 / 0.07 = 14.3 and clamps at 100


def check_logit_scale(path, scale_exp: float) -> None:
    """A softmax temperature in a range a trained model can have; else CheckpointError."""
    lo, hi = LOGIT_SCALE_RANGE
    if not lo <= scale_exp <= hi:
        raise CheckpointError(f"{path}: the logit scale exp(logit_scale) = {scale_exp:.4g} lies outside "
                              f"{lo:g}..{hi:g}; the file is damaged or not from a trained vision-language model")


def check_centroids(path, normal: torch.Tensor, abnormal: torch.Tensor) -> None:
    """Centroids that were computed: a zero vector has no direction (every distance would be NaN)."""
    for name, c in (("normal", normal), ("abnormal", abnormal)):
        if float(c.float().norm()) == 0:
            raise CheckpointError(f"{path}: the {name} centroid is all zeros: the centroids were never computed (an "
                                  "authors' training checkpoint saved before prepare_centroids; use the file with "
                                  "centroids, e.g. their model_with_centroids.pth)")


def read_official(path: str | os.PathLike) -> dict:
    """Read the authors' ``torch.save({'model_state': ...})`` file (``module.`` prefixes and VLM weights optional).

    Returns the parts we use: ``mlp`` (state dict), ``normal_text``, ``abnormal_text``, ``centroid_normal``,
    ``centroid_abnormal``, ``logit_scale_exp`` (None without ``VLM.logit_scale``), ``has_vlm`` (CONCH's weights
    are in the file, not only its logit scale: a head-only file has the MLP, text embeddings, centroids and
    ``VLM.logit_scale``) and ``vlm_state`` (the ``VLM.*`` tensors without the prefix).
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
    used = [*need, *(["VLM.logit_scale"] if "VLM.logit_scale" in state else [])]
    broken = [k for k in used if not torch.is_floating_point(state[k]) or not torch.isfinite(state[k]).all()]
    if broken:
        raise CheckpointError(f"{path}: tensor {broken[0]} is not finite floating point (NaN, infinite or integer); "
                              "the file is damaged")
    check_centroids(path, state["normal_img_normal_text_centroid"], state["normal_img_abnormal_text_centroid"])
    if "VLM.logit_scale" in state:
        check_logit_scale(path, float(state["VLM.logit_scale"].float().exp().reshape(-1)[0]))
    return {
        "mlp": {k: state[f"MLP.{k}"].float() for k in _MLP_KEYS},
        "normal_text": state["normal_text_embs"].float(),
        "abnormal_text": state["abnormal_text_embs"].float(),
        "centroid_normal": state["normal_img_normal_text_centroid"].float().reshape(-1),
        "centroid_abnormal": state["normal_img_abnormal_text_centroid"].float().reshape(-1),
        "logit_scale_exp": float(state["VLM.logit_scale"].float().exp().reshape(-1)[0])
        if "VLM.logit_scale" in state else None,
        "has_vlm": any(k.startswith("VLM.") and k != "VLM.logit_scale" for k in state),
        "vlm_state": {k[4:]: v for k, v in state.items() if k.startswith("VLM.")},
    }
