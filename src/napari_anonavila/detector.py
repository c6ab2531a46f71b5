"""The Detector facade: backend + term pools + text embeddings + MLP + centroids. It delegates; no loops here."""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .backends import VLMBackend, get_backend
from .checkpoint import checkpoint_kind, read_checkpoint, read_official, write_checkpoint
from .errors import CheckpointError, NonFiniteError, TermPoolError
from .head import MLP
from .patches import iter_image_batches, list_images
from .progress import Progress, ProgressCallback, drain
from .scoring import PatchScores, ScoreMode, score_batch
from .terms import TermPools
from .training import TrainConfig, iter_fit_mlp

__all__ = ["HOLDOUT", "Detector", "ImagesLike", "holdout_split"]

ImagesLike = Any  # (N, D) embeddings, a folder path, or a sequence of RGB arrays / PIL images
_MAX_REFERENCE = 20_000


HOLDOUT = 0.2  # part of the normal reference held out for the centroids when no centroid set is given


def holdout_split(n: int, groups: Sequence | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(training rows, centroid rows, record): whole groups held out when there are several, else rows; seeded.

    Too few rows to hold any out (fewer than 5) fall back to the training rows, with a warning.
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    record = {"fraction": fraction, "seed": seed}
    names = list(dict.fromkeys(groups)) if groups is not None else []
    if len(names) >= 2:
        k = min(len(names) - 1, max(1, round(fraction * len(names))))
        held = set(rng.permutation(len(names))[:k].tolist())
        held_names = [names[i] for i in sorted(held)]
        mask = np.isin(np.asarray([names.index(g) for g in groups]), sorted(held))
        return rows[~mask], rows[mask], {**record, "kind": "held-out slides", "held_out": [str(g) for g in held_names]}
    if n < 5:
        warnings.warn(f"only {n} normal patches: too few to hold any out, so the centroids come from the training "
                      "patches (give more normal tissue, or a separate centroid set)", UserWarning, stacklevel=3)
        return rows, rows, {**record, "kind": "training patches (too few to hold out)"}
    k = min(n - 2, max(1, round(fraction * n)))
    perm = rng.permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k]), {**record, "kind": "held-out patches"}


def check_embeddings(x: np.ndarray | torch.Tensor, dim: int, what: str = "embeddings") -> torch.Tensor:
    """A finite, non-zero (N, dim) float tensor of unit rows, or a ValueError naming the problem."""
    t = x.float() if isinstance(x, torch.Tensor) else torch.tensor(np.asarray(x), dtype=torch.float32)
    if t.ndim != 2 or t.shape[1] != dim:
        raise ValueError(f"{what}: expected shape (N, {dim}), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what}: {int((~torch.isfinite(t)).any(1).sum())} row(s) hold NaN or inf")
    norms = t.norm(dim=1)
    if (norms == 0).any():
        raise ValueError(f"{what}: {int((norms == 0).sum())} row(s) have zero norm")
    if bool(((norms - 1).abs() < 1e-5).all()):  # unit vectors already (our encoders'): kept bit for bit
        return t
    return torch.nn.functional.normalize(t, dim=1)


class Detector:
    """Ano-NAViLa anomaly detector.

    Build with :meth:`create` (a backend spec and term pools), :meth:`load` or
    :meth:`from_official_checkpoint`; train with :meth:`fit`; score with :meth:`score_embeddings`,
    :meth:`score_images` or :meth:`score_slide`.
    """

    def __init__(self, *, backend: VLMBackend | None, backend_spec: str, backend_id: str, pools: TermPools,
                 normal_text: torch.Tensor, abnormal_text: torch.Tensor, logit_scale_exp: float,
                 mlp: MLP | None = None, centroids: tuple[torch.Tensor, torch.Tensor] | None = None,
                 reference: torch.Tensor | None = None, mode: ScoreMode | str = ScoreMode.SUM,
                 info: dict | None = None) -> None:
        if normal_text.shape[0] != len(pools.normal) or abnormal_text.shape[0] != len(pools.abnormal):
            raise TermPoolError(f"text embeddings ({normal_text.shape[0]}/{abnormal_text.shape[0]}) do not match "
                                f"the term pools ({len(pools.normal)}/{len(pools.abnormal)})")
        self.backend, self.backend_spec, self.backend_id = backend, backend_spec, backend_id
        self.pools, self.normal_text, self.abnormal_text = pools, normal_text.float(), abnormal_text.float()
        self.logit_scale_exp = float(logit_scale_exp)
        self.mlp, self.centroids, self.reference = mlp, centroids, reference
        self.mode = ScoreMode(mode)
        self.info: dict = dict(info or {})

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def create(cls, backend: str | VLMBackend = "demo", pools: TermPools | None = None, *,
               device: str | None = None, mode: ScoreMode | str = ScoreMode.SUM, precision: str = "float32",
               allow_download: bool = False) -> Detector:
        """An untrained detector: text embeddings of ``pools`` (default: the shipped pools) from ``backend``."""
        vlm = get_backend(backend, device, precision=precision, allow_download=allow_download) \
            if isinstance(backend, str) else backend
        pools = pools or TermPools.default()
        return cls(backend=vlm, backend_spec=str(vlm.spec), backend_id=vlm.id, pools=pools,
                   normal_text=vlm.encode_texts(pools.normal), abnormal_text=vlm.encode_texts(pools.abnormal),
                   logit_scale_exp=vlm.logit_scale_exp, mode=mode)

    @property
    def is_demo(self) -> bool:
        """True for the random-weights demo backend, which carries no pathology knowledge."""
        return self.backend_spec.strip() == "demo"

    def describe(self) -> str:
        """One line for people: which model and which term pools, with a clear note for the random demo model."""
        if self.is_demo:
            model = "demo model (random weights, NO pathology knowledge: for trying the tool only)"
        else:
            desc = getattr(self.backend, "description", "") or ""
            model = f"{desc} [{self.backend_spec}]" if desc else self.backend_spec
        return f"{model}; {self.pools.describe()}"

    @property
    def embed_dim(self) -> int:
        return int(self.normal_text.shape[1])

    @property
    def is_fitted(self) -> bool:
        return self.mlp is not None and self.centroids is not None

    def require_backend(self) -> VLMBackend:
        if self.backend is None:
            raise CheckpointError("this detector has no VLM backend attached; pass backend=... when loading "
                                  "to score images (embeddings can be scored without one)")
        return self.backend

    # -- embeddings --------------------------------------------------------------------------------
    def iter_embed(self, images: ImagesLike, *, batch_size: int = 32) -> Generator[Progress, None, torch.Tensor]:
        """Embeddings (N, D) of images, a folder (recursive) or given embeddings; yields Progress per batch."""
        if isinstance(images, (np.ndarray, torch.Tensor)) and np.ndim(images) == 2:
            return check_embeddings(images, self.embed_dim)
        vlm = self.require_backend()
        if isinstance(images, (str, os.PathLike)):
            _, embs = yield from self.iter_embed_files(list_images(images), batch_size=batch_size)
            return embs
        seq: Sequence = list(images)
        out = []
        for s in range(0, len(seq), batch_size):
            out.append(vlm.embed_images(seq[s : s + batch_size]))
            yield Progress("embed", min(s + batch_size, len(seq)), len(seq))
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    def iter_embed_files(self, paths: Sequence[Path], *, batch_size: int = 32
                         ) -> Generator[Progress, None, tuple[list[Path], torch.Tensor]]:
        """Embed image files; unreadable ones are skipped with one warning. Returns (read paths, embeddings)."""
        vlm = self.require_backend()
        read: list[Path] = []
        skipped: list[Path] = []
        out = []
        for ok, imgs, bad in iter_image_batches(list(paths), batch_size):
            skipped += bad
            if imgs:
                read += ok
                out.append(vlm.embed_images(imgs))
            yield Progress("embed", len(read) + len(skipped), len(paths), {"skipped": len(skipped)})
        if skipped:
            warnings.warn(f"skipped {len(skipped)} of {len(paths)} unreadable (or too large) image file(s), "
                          f"e.g. {skipped[0]}",
                          UserWarning, stacklevel=2)
        if not out:
            raise ValueError(f"none of the {len(paths)} image files could be read (e.g. {paths[0] if paths else '-'})")
        return read, torch.cat(out)

    def embed(self, images: ImagesLike, *, batch_size: int = 32, on_progress: ProgressCallback | None = None,
              cancel: threading.Event | None = None) -> torch.Tensor:
        """Drain :meth:`iter_embed`."""
        return drain(self.iter_embed(images, batch_size=batch_size), on_progress, cancel)

    # -- training ----------------------------------------------------------------------------------
    def iter_fit(self, normal: ImagesLike, centroid_set: ImagesLike | None = None, *,
                 config: TrainConfig | None = None, batch_size: int = 32, groups: Sequence | None = None,
                 holdout: float = HOLDOUT) -> Generator[Progress, None, list[float]]:
        """Embed normal images, train the MLP, then fit the centroids on normal images it was not trained on.

        The centroids come from ``centroid_set`` when given; otherwise a seeded ``holdout`` part of ``normal`` is
        held out for them (whole slides or folders when ``groups`` names more than one, else single patches),
        as the paper and the authors do. The split is recorded in ``info["centroid_split"]``.
        """
        config = config or TrainConfig()
        if isinstance(normal, (str, os.PathLike)) and groups is None:
            paths, normal = yield from self.iter_embed_files(list_images(normal, order="walk"), batch_size=batch_size)
            groups = [str(p.parent) for p in paths]
        embs = yield from self.iter_embed(normal, batch_size=batch_size)
        if centroid_set is not None:
            train, ref = embs, (yield from self.iter_embed(centroid_set, batch_size=batch_size))
            split = {"kind": "given centroid set"}
        else:
            train_idx, ref_idx, split = holdout_split(len(embs), groups, holdout, config.seed)
            train, ref = embs[train_idx], embs[ref_idx]
        mlp, losses = yield from iter_fit_mlp(train, self.normal_text, self.abnormal_text, self.logit_scale_exp,
                                              config)
        self.mlp = mlp
        self.fit_centroids(ref)
        self.info.update(train=config.to_dict(), n_train=int(train.shape[0]), n_centroid=int(ref.shape[0]),
                         centroid_split={**split, "n_train": int(train.shape[0]), "n_centroid": int(ref.shape[0])},
                         loss_first=losses[0], loss_last=losses[-1])
        return losses

    def fit(self, normal: ImagesLike, centroid_set: ImagesLike | None = None, *, config: TrainConfig | None = None,
            batch_size: int = 32, on_progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None) -> list[float]:
        """Train on normal images (embeddings, a folder or images); return the per-batch losses."""
        return drain(self.iter_fit(normal, centroid_set, config=config, batch_size=batch_size), on_progress, cancel)

    @torch.no_grad()
    def fit_centroids(self, reference: ImagesLike) -> None:
        """Centroids c^N, c^A: the means of h^N, h^A over normal reference images (kept for term edits)."""
        if self.mlp is None:
            raise ValueError("fit_centroids needs a trained MLP; call fit() first")
        ref = drain(self.iter_embed(reference))
        if ref.shape[0] == 0:
            raise ValueError("the centroid set is empty")
        from .head import text_augmented_embeddings

        parts = [text_augmented_embeddings(ref[s : s + 4096], self.normal_text, self.abnormal_text,
                                           self.logit_scale_exp, self.mlp) for s in range(0, len(ref), 4096)]
        h_n = torch.cat([p[0] for p in parts])
        h_a = torch.cat([p[1] for p in parts])
        self.centroids = (h_n.mean(0), h_a.mean(0))
        if ref.shape[0] > _MAX_REFERENCE:
            keep = torch.randperm(ref.shape[0], generator=torch.Generator().manual_seed(0))[:_MAX_REFERENCE]
            ref = ref[keep.sort().values]
        self.reference = ref

    def set_pools(self, pools: TermPools) -> None:
        """Use new term pools: prompts the detector already has keep their embeddings exactly (imported ones as
        stored); only new prompts are encoded. The centroids are recomputed from the kept reference."""
        known: dict[str, torch.Tensor] = {}
        for prompts, embs in ((self.pools.normal, self.normal_text), (self.pools.abnormal, self.abnormal_text)):
            for p, e in zip(prompts, embs, strict=True):
                known.setdefault(p, e)
        new = [p for p in dict.fromkeys((*pools.normal, *pools.abnormal)) if p not in known]
        if new:  # may fail: change nothing yet
            known.update(zip(new, self.require_backend().encode_texts(new), strict=True))
        texts = (torch.stack([known[p] for p in pools.normal]), torch.stack([known[p] for p in pools.abnormal]))
        old = self.pools
        self.pools, (self.normal_text, self.abnormal_text) = pools, texts
        if self.mlp is not None and self.reference is not None:
            self.fit_centroids(self.reference)
        if pools != old:
            self.info["pools_edited"] = True

    # -- scoring -----------------------------------------------------------------------------------
    def score_embeddings(self, embeddings: np.ndarray | torch.Tensor, *, mode: ScoreMode | str | None = None,
                         top_k: int = 3, chunk: int = 512) -> PatchScores:
        """Anomaly scores and term explanations for image embeddings (N, D)."""
        mode = ScoreMode(mode or self.mode)
        embs = check_embeddings(embeddings, self.embed_dim) if len(embeddings) else torch.zeros(0, self.embed_dim)
        parts = [score_batch(embs[s : s + chunk], self.normal_text, self.abnormal_text, self.logit_scale_exp,
                             mlp=self.mlp, centroids=self.centroids, mode=mode, top_k=top_k)
                 for s in range(0, embs.shape[0], chunk)]
        out = PatchScores.concat(parts, top_k)
        bad = int((~np.isfinite(out.score)).sum())
        if bad:
            raise NonFiniteError(f"{bad} of {len(out)} patch scores are NaN or infinite: the model (MLP, centroids or "
                                 "text embeddings) is damaged; retrain it or load another checkpoint")
        return out

    def score_images(self, images: ImagesLike, *, batch_size: int = 32, mode: ScoreMode | str | None = None,
                     top_k: int = 3, on_progress: ProgressCallback | None = None,
                     cancel: threading.Event | None = None) -> PatchScores:
        """Embed then score images (a folder, a sequence of RGB arrays or PIL images)."""
        embs = self.embed(images, batch_size=batch_size, on_progress=on_progress, cancel=cancel)
        return self.score_embeddings(embs, mode=mode, top_k=top_k)

    def score_slide(self, slide, **kwargs):
        """Score a whole slide (a path or an open Slide); see :func:`napari_anonavila.pipeline.score_slide`."""
        from .pipeline import score_slide

        return score_slide(self, slide, **kwargs)

    def term_names(self, kind: str) -> list[str]:
        """Display names of a pool's terms ('normal' or 'abnormal')."""
        return self.pools.terms(kind)

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write a self-describing, pickle-free checkpoint (``.safetensors``)."""
        if not self.is_fitted:
            raise ValueError("only a fitted detector can be saved; call fit() first")
        if not math.isfinite(self.logit_scale_exp):
            raise NonFiniteError(f"not saved: the logit scale is {self.logit_scale_exp}")
        tensors = {f"mlp.{k}": v for k, v in self.mlp.state_dict().items()}
        tensors.update({"text.normal": self.normal_text, "text.abnormal": self.abnormal_text,
                        "centroid.normal": self.centroids[0], "centroid.abnormal": self.centroids[1]})
        if self.reference is not None:
            tensors["reference"] = self.reference
        broken = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
        if broken:
            raise NonFiniteError(f"not saved: {', '.join(broken)} hold NaN or infinite values (did training diverge?)")
        meta = {"package_version": __version__, "backend_spec": self.backend_spec, "backend_id": self.backend_id,
                "embed_dim": self.embed_dim, "logit_scale_exp": self.logit_scale_exp, "mode": self.mode.value,
                "pools": self.pools.to_dict(), "info": self.info}
        return write_checkpoint(path, tensors, meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str | VLMBackend | None = None, device: str | None = None,
             attach_backend: bool = True, precision: str = "float32", allow_download: bool = False) -> Detector:
        """Load a checkpoint: ours (``.safetensors``) or the authors' (``.pth``), told apart by content.

        The backend comes from ``backend`` or the stored spec (for an authors' file that holds CONCH under
        ``VLM.*``, CONCH is built from the file itself), and must match the weights.
        """
        if checkpoint_kind(path) == "authors":
            return cls.from_official_checkpoint(path, backend=backend, device=device, precision=precision,
                                                attach_backend=attach_backend)
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
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{path}: checkpoint content is incomplete or inconsistent ({err})") from err
        vlm = None
        if backend is not None or attach_backend:
            vlm = get_backend(backend or spec, device, precision=precision, allow_download=allow_download) \
                if not isinstance(backend, VLMBackend) else backend
            if vlm.id != backend_id or vlm.embed_dim != dim:
                raise CheckpointError(f"{path}: trained with backend {backend_id} ({dim}-d), but the given "
                                      f"backend is {vlm.id} ({vlm.embed_dim}-d); pass the backend it was trained with")
        return cls(backend=vlm, backend_spec=spec, backend_id=backend_id, pools=pools,
                   normal_text=texts[0], abnormal_text=texts[1], logit_scale_exp=meta["logit_scale_exp"], mlp=mlp,
                   centroids=cents, reference=tensors.get("reference"), mode=mode,
                   info=meta.get("info") if isinstance(meta.get("info"), dict) else {})

    @classmethod
    def from_official_checkpoint(cls, path: str | os.PathLike, *, backend: str | VLMBackend | None = None,
                                 pools: TermPools | None = None, device: str | None = None,
                                 precision: str = "float32", attach_backend: bool = True) -> Detector:
        """Import the authors' ``.pth``: MLP, text embeddings and centroids used exactly as stored.

        When the file holds CONCH under ``VLM.*`` (the released checkpoints do), CONCH is built from it: the file
        alone is a complete detector. The logit scale is ``VLM.logit_scale`` (else the backend's). Stored text
        embeddings are kept as stored, duplicates included; their terms are named by matching each embedding to
        the shipped prompts encoded by the model, and the rest are named ``normal term 17`` (with a warning).
        ``pools`` gives the names instead (its counts must match).
        """
        from .backends import BackendSpec
        from .backends.conch import ConchBackend

        ck = read_official(path)
        path = Path(path)
        vlm = None
        if isinstance(backend, VLMBackend):
            vlm = backend
        elif backend is not None:
            vlm = get_backend(backend, device, precision=precision)
        elif ck["has_vlm"] and attach_backend:
            from .backends import resolve_device
            from .backends.base import sha256_file

            vlm = ConchBackend(BackendSpec("conch", "conch_ViT-B-16", str(path)), resolve_device(device),
                               precision=precision, state=ck["vlm_state"], weights_sha256=sha256_file(path))
        ck.pop("vlm_state", None)
        scale = ck["logit_scale_exp"] if ck["logit_scale_exp"] is not None else getattr(vlm, "logit_scale_exp", None)
        if scale is None:
            raise CheckpointError(f"{path}: has no VLM.logit_scale; pass backend=... to take the logit scale from it")
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
            pools, unnamed = _name_imported_terms(ck["normal_text"], ck["abnormal_text"], vlm)
            if sum(unnamed.values()):
                warnings.warn(f"{path.name}: {ck['normal_text'].shape[0]} normal / {ck['abnormal_text'].shape[0]} "
                              f"abnormal text embeddings are used as stored; {unnamed['normal']} normal and "
                              f"{unnamed['abnormal']} abnormal terms could not be named from the shipped pools"
                              f"{'' if vlm is not None else ' (no model to encode them with)'} and are shown as "
                              "'normal term N' / 'abnormal term N'", UserWarning, stacklevel=2)
        mlp = MLP(dim)
        try:
            mlp.load_state_dict(ck["mlp"])
        except RuntimeError as err:
            raise CheckpointError(f"{path}: MLP weights do not fit a {dim}-d model ({err})") from err
        return cls(backend=vlm, backend_spec=str(vlm.spec) if vlm else f"conch:{path}" if ck["has_vlm"] else "official",
                   backend_id=vlm.id if vlm else "official", pools=pools, normal_text=ck["normal_text"],
                   abnormal_text=ck["abnormal_text"], logit_scale_exp=scale, mlp=mlp,
                   centroids=(ck["centroid_normal"], ck["centroid_abnormal"]),
                   info={"imported_from": str(path), "had_vlm_weights": ck["has_vlm"], "unnamed_terms": unnamed,
                         "centroid_split": {"kind": "as stored by the authors (held-out normal slides)"}})


def _name_imported_terms(normal: torch.Tensor, abnormal: torch.Tensor, vlm: VLMBackend | None
                         ) -> tuple[TermPools, dict[str, int]]:
    """Pools for stored text embeddings: each named by the shipped prompt whose embedding it is (cos > 0.999).

    Returns the pools (duplicates kept, as stored) and how many terms of each pool stayed unnamed.
    """
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
