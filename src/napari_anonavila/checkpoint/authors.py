"""The authors' ``.pth`` as a :class:`DetectorState`: MLP, text embeddings and centroids used exactly as stored.

A released checkpoint holds all of CONCH under ``VLM.*``, so the file alone is a complete detector
(:func:`authors_backend` builds CONCH from it). A head-only file (MLP, text embeddings, centroids and
``VLM.logit_scale``: the part that can be shared without CONCH's licence-bound weights) imports as well; scoring
images then needs a backend.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import CheckpointError
from .state import DetectorState

if TYPE_CHECKING:
    from ..backends import VLMBackend
    from ..terms import TermPools

__all__ = ["HEAD_ONLY", "authors_backend", "authors_state", "name_imported_terms"]

HEAD_ONLY = "authors-head"  # backend id of a detector imported from a head-only file


def authors_backend(path: str | os.PathLike, parts: dict, *, backend: str | VLMBackend | None = None,
                    device: str | None = None, precision: str = "float32", attach_backend: bool = True
                    ) -> VLMBackend | None:
    """The image model for an authors' file read by :func:`~.files.read_official` (``parts``): ``backend`` when
    given, else CONCH built from the file's own ``VLM.*`` weights, else None (a head-only file)."""
    from ..backends import BackendSpec, VLMBackend, get_backend, resolve_device
    from ..backends.base import sha256_file
    from ..backends.conch import ConchBackend

    if isinstance(backend, VLMBackend):
        return backend
    if backend is not None:
        return get_backend(backend, device, precision=precision)
    if parts["has_vlm"] and attach_backend:
        return ConchBackend(BackendSpec("conch", "conch_ViT-B-16", str(path)), resolve_device(device),
                            precision=precision, state=parts["vlm_state"], weights_sha256=sha256_file(path))
    return None


def authors_state(path: str | os.PathLike, parts: dict, vlm: VLMBackend | None, pools: TermPools | None = None
                  ) -> DetectorState:
    """The detector an authors' file describes, with ``vlm`` attached (or None), as plain data. ``pools`` names the
    stored text embeddings (counts must match); else the shipped pools do (:func:`name_imported_terms`)."""
    from ..backends.base import sha256_file

    path = Path(path)
    scale = parts["logit_scale_exp"] if parts["logit_scale_exp"] is not None else getattr(vlm, "logit_scale_exp",
                                                                                        None)
    if scale is None:
        raise CheckpointError(f"{path}: has no VLM.logit_scale; pass backend=... (CLI: --backend) to take the logit "
                              "scale from it")
    dim = parts["normal_text"].shape[1]
    if vlm is not None and vlm.embed_dim != dim:
        raise CheckpointError(f"{path}: {dim}-d embeddings, but backend {vlm.spec} gives {vlm.embed_dim}-d")
    if pools is not None:
        n_n, n_a = parts["normal_text"].shape[0], parts["abnormal_text"].shape[0]
        if (n_n, n_a) != (len(pools.normal), len(pools.abnormal)):
            raise CheckpointError(f"{path}: stores {n_n} normal / {n_a} abnormal text embeddings, but the term "
                                  f"pools have {len(pools.normal)} / {len(pools.abnormal)}")
        unnamed = {}
    else:
        pools, unnamed = name_imported_terms(parts["normal_text"], parts["abnormal_text"], vlm)
        if sum(unnamed.values()):
            why = "" if vlm is not None else " (a head-only file: no model to encode the shipped prompts with)"
            warnings.warn(f"{path.name}: {parts['normal_text'].shape[0]} normal / {parts['abnormal_text'].shape[0]} "
                          f"abnormal text embeddings are used as stored; {unnamed['normal']} normal and "
                          f"{unnamed['abnormal']} abnormal terms could not be named from the shipped pools{why} and "
                          "are shown as 'normal term N' / 'abnormal term N'", UserWarning, stacklevel=4)
    if vlm is not None:
        spec, backend_id = str(vlm.spec), vlm.id
    elif parts["has_vlm"]:
        spec, backend_id = f"conch:{path}", f"conch:conch_ViT-B-16:{sha256_file(path)}"
    else:
        spec, backend_id = "", HEAD_ONLY
    return DetectorState(
        backend_spec=spec, backend_id=backend_id, pools=pools, normal_text=parts["normal_text"],
        abnormal_text=parts["abnormal_text"], logit_scale_exp=float(scale), mlp=parts["mlp"],
        centroids=(parts["centroid_normal"], parts["centroid_abnormal"]),
        info={"imported_from": str(path), "had_vlm_weights": parts["has_vlm"], "unnamed_terms": unnamed,
              "centroid_split": {"kind": "as stored by the authors (their validation normal images)"}})


def name_imported_terms(normal: torch.Tensor, abnormal: torch.Tensor, vlm: VLMBackend | None
                        ) -> tuple[TermPools, dict[str, int]]:
    """Pools for stored text embeddings: each named by the shipped prompt whose embedding it is (cos > 0.999).

    Returns the pools (duplicates kept, as stored) and how many terms of each pool stayed unnamed.
    """
    from ..terms import TermPools

    shipped = TermPools.default()
    out, unnamed = {}, {}
    for kind, stored in (("normal", normal), ("abnormal", abnormal)):
        prompts = list(getattr(shipped, kind))
        names = [None] * len(stored)
        if vlm is not None:
            ref = torch.nn.functional.normalize(vlm.encode_texts(prompts), dim=1)
            sim = torch.nn.functional.normalize(stored.float(), dim=1) @ ref.T
            best, idx = sim.max(dim=1)
            names = [prompts[int(i)] if float(b) > 0.999 else None for b, i in zip(best, idx, strict=True)]
        unnamed[kind] = sum(n is None for n in names)
        out[kind] = tuple(n if n is not None else f"{kind} term {i + 1}" for i, n in enumerate(names))
    domain = f"{shipped.domain} (as stored in the authors' checkpoint)"
    return TermPools(out["normal"], out["abnormal"], shipped.template, "authors' checkpoint", domain, True), unnamed
