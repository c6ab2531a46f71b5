"""The authors' ``.pth`` as a Detector: MLP, text embeddings and centroids used exactly as stored.

A released checkpoint holds all of CONCH under ``VLM.*``, so the file alone is a complete detector. A head-only
file (MLP, text embeddings, centroids and ``VLM.logit_scale``: the part that can be shared without CONCH's
licence-bound weights) imports as well; scoring images then needs a backend.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import CheckpointError
from .files import read_official

if TYPE_CHECKING:
    from ..backends import VLMBackend
    from ..detector import Detector
    from ..terms import TermPools

__all__ = ["HEAD_ONLY", "import_authors", "name_imported_terms"]

HEAD_ONLY = "authors-head"  # backend id of a detector imported from a head-only file


def import_authors(cls: type[Detector], path: str | os.PathLike, *, backend: str | VLMBackend | None = None,
                   pools: TermPools | None = None, device: str | None = None, precision: str = "float32",
                   attach_backend: bool = True) -> Detector:
    """Import an authors' checkpoint (see :meth:`Detector.from_official_checkpoint`)."""
    from ..backends import BackendSpec, VLMBackend, get_backend, resolve_device
    from ..backends.base import sha256_file
    from ..backends.conch import ConchBackend
    from ..head import MLP

    ck = read_official(path)
    path = Path(path)
    vlm = None
    if isinstance(backend, VLMBackend):
        vlm = backend
    elif backend is not None:
        vlm = get_backend(backend, device, precision=precision)
    elif ck["has_vlm"] and attach_backend:
        vlm = ConchBackend(BackendSpec("conch", "conch_ViT-B-16", str(path)), resolve_device(device),
                           precision=precision, state=ck["vlm_state"], weights_sha256=sha256_file(path))
    ck.pop("vlm_state", None)
    scale = ck["logit_scale_exp"] if ck["logit_scale_exp"] is not None else getattr(vlm, "logit_scale_exp", None)
    if scale is None:
        raise CheckpointError(f"{path}: has no VLM.logit_scale; pass backend=... (CLI: --backend) to take the logit "
                              "scale from it")
    dim = ck["normal_text"].shape[1]
    if vlm is not None and vlm.embed_dim != dim:
        raise CheckpointError(f"{path}: {dim}-d embeddings, but backend {vlm.spec} gives {vlm.embed_dim}-d")
    if pools is not None:
        n_n, n_a = ck["normal_text"].shape[0], ck["abnormal_text"].shape[0]
        if (n_n, n_a) != (len(pools.normal), len(pools.abnormal)):
            raise CheckpointError(f"{path}: stores {n_n} normal / {n_a} abnormal text embeddings, but the term "
                                  f"pools have {len(pools.normal)} / {len(pools.abnormal)}")
        unnamed = {}
    else:
        pools, unnamed = name_imported_terms(ck["normal_text"], ck["abnormal_text"], vlm)
        if sum(unnamed.values()):
            why = "" if vlm is not None else " (a head-only file: no model to encode the shipped prompts with)"
            warnings.warn(f"{path.name}: {ck['normal_text'].shape[0]} normal / {ck['abnormal_text'].shape[0]} "
                          f"abnormal text embeddings are used as stored; {unnamed['normal']} normal and "
                          f"{unnamed['abnormal']} abnormal terms could not be named from the shipped pools{why} and "
                          "are shown as 'normal term N' / 'abnormal term N'", UserWarning, stacklevel=3)
    mlp = MLP(dim)
    try:
        mlp.load_state_dict(ck["mlp"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: MLP weights do not fit a {dim}-d model ({err})") from err
    if vlm is not None:
        spec, backend_id = str(vlm.spec), vlm.id
    elif ck["has_vlm"]:
        spec, backend_id = f"conch:{path}", f"conch:conch_ViT-B-16:{sha256_file(path)}"
    else:
        spec, backend_id = "", HEAD_ONLY
    return cls(backend=vlm, backend_spec=spec, backend_id=backend_id, pools=pools, normal_text=ck["normal_text"],
               abnormal_text=ck["abnormal_text"], logit_scale_exp=scale, mlp=mlp,
               centroids=(ck["centroid_normal"], ck["centroid_abnormal"]),
               info={"imported_from": str(path), "had_vlm_weights": ck["has_vlm"], "unnamed_terms": unnamed,
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
