"""The Detector facade: backend + term pools + text embeddings + MLP + centroids. It delegates; no loops here."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backends import VLMBackend, get_backend
from .calibration import MIN_CALIBRATION, Calibration, loo_distances, mode_scores
from .checkpoint import (
    DetectorState,
    authors_backend,
    authors_state,
    checkpoint_kind,
    read_official,
    read_state,
    write_state,
)
from .errors import CheckpointError, NonFiniteError, TermPoolError
from .head import MLP
from .patches import iter_image_batches, list_images
from .progress import Progress, ProgressCallback, drain
from .scoring import PatchScores, ScoreMode, score_batch
from .splits import HOLDOUT, holdout_split
from .terms import TermPools
from .training import TrainConfig, iter_fit_mlp

__all__ = ["Detector", "ImagesLike"]

ImagesLike = Any  # (N, D) embeddings, a folder path, or a sequence of RGB arrays / PIL images
_MAX_REFERENCE = 20_000
_HEAD_BYTES = 256 << 20


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
                 info: dict | None = None, calibration: Calibration | None = None) -> None:
        if normal_text.shape[0] != len(pools.normal) or abnormal_text.shape[0] != len(pools.abnormal):
            raise TermPoolError(f"text embeddings ({normal_text.shape[0]}/{abnormal_text.shape[0]}) do not match "
                                f"the term pools ({len(pools.normal)}/{len(pools.abnormal)})")
        self.backend, self.backend_spec, self.backend_id = backend, backend_spec, backend_id
        self.pools, self.normal_text, self.abnormal_text = pools, normal_text.float(), abnormal_text.float()
        self.logit_scale_exp = float(logit_scale_exp)
        self.mlp, self.centroids, self.reference = mlp, centroids, reference
        self.calibration: Calibration | None = calibration
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
        """The image model, or a one-line error saying how to attach one."""
        if self.backend is None:
            raise self.no_backend_error()
        return self.backend

    def no_backend_error(self) -> CheckpointError:
        """The error for work that needs the image model when none is attached."""
        source = self.info.get("imported_from")
        what = (f"{source} holds the head only (MLP, text embeddings, centroids), no image model" if source and
                not self.info.get("had_vlm_weights") else "this detector has no image model attached")
        return CheckpointError(f"{what}; to score images give the model it was trained with: --backend "
                               "conch:/path/to/pytorch_model.bin (API: backend=...); embeddings score without one")

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

        The centroids come from ``centroid_set`` when given (the authors' way: train on all, centroids from their
        validation images); otherwise a seeded ``holdout`` part of ``normal`` is held out for them, in whole
        ``groups`` (slides, folders, drawn regions or tissue blocks: :mod:`napari_anonavila.splits`), single
        patches only when there is one group. The split is recorded in ``info["centroid_split"]``.
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
        before = (self.mlp, self.centroids, self.reference, self.calibration)
        self.mlp = mlp
        try:
            self.fit_centroids(ref)
            if not all(torch.isfinite(c).all() for c in self.centroids):
                raise NonFiniteError(f"training diverged: the trained MLP gives NaN or infinite embeddings of the "
                                     f"normal images (learning rate {config.lr:g}); lower the learning rate (--lr); "
                                     "nothing was saved")
        except BaseException:
            self.mlp, self.centroids, self.reference, self.calibration = before  # the model as it was
            raise
        self.info.update(train=config.to_dict(), n_train=int(train.shape[0]), n_centroid=int(ref.shape[0]),
                         centroid_split={**split, "n_train": int(train.shape[0]), "n_centroid": int(ref.shape[0])},
                         loss_first=losses[0], loss_last=losses[-1],
                         calibration_outcome=self.calibration_outcome(int(ref.shape[0]), before[3] is not None))
        return losses

    def calibration_outcome(self, n_held_out: int, had_calibration: bool) -> str:
        """What training did to the calibration, in a sentence for people (the Retrain panel, ``train``)."""
        if self.calibration is not None:
            return f"recalibrated on the {n_held_out} held-out normal patches"
        was = "; the previous calibration was made with the old MLP and no longer applies" if had_calibration else ""
        return (f"UNCALIBRATED: only {n_held_out} normal patches were held out, and a reference needs "
                f"{MIN_CALIBRATION}{was}. Draw a larger normal region (or more regions), or use Calibrate only "
                "(CLI: anonavila calibrate) on normal tissue the model has not seen")

    def fit(self, normal: ImagesLike, centroid_set: ImagesLike | None = None, *, config: TrainConfig | None = None,
            batch_size: int = 32, groups: Sequence | None = None, on_progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None) -> list[float]:
        """Train on normal images (embeddings, a folder or images); return the per-batch losses. ``groups``
        names each row's hold-out group (see :meth:`iter_fit`)."""
        return drain(self.iter_fit(normal, centroid_set, config=config, batch_size=batch_size, groups=groups),
                     on_progress, cancel)

    @torch.no_grad()
    def fit_centroids(self, reference: ImagesLike) -> None:
        """Centroids c^N, c^A: the means of h^N, h^A over normal reference images (kept for term edits), and the
        calibration: every reference patch scored against the centroids made without it (leave-one-out)."""
        if self.mlp is None:
            raise ValueError("fit_centroids needs a trained MLP; call fit() first")
        ref = drain(self.iter_embed(reference))
        if ref.shape[0] == 0:
            raise ValueError("the centroid set is empty")
        from .head import text_augmented_embeddings

        rows = self._rows_per_chunk(4096)
        parts = [text_augmented_embeddings(ref[s : s + rows], self.normal_text, self.abnormal_text,
                                           self.logit_scale_exp, self.mlp) for s in range(0, len(ref), rows)]
        h_n = torch.cat([p[0] for p in parts])
        h_a = torch.cat([p[1] for p in parts])
        self.centroids = (h_n.mean(0), h_a.mean(0))
        keep = torch.arange(ref.shape[0])
        if ref.shape[0] > _MAX_REFERENCE:
            keep = torch.randperm(ref.shape[0], generator=torch.Generator().manual_seed(0))[:_MAX_REFERENCE].sort()[0]
        self.calibration = None
        if ref.shape[0] >= MIN_CALIBRATION:
            d_n, d_a = loo_distances(h_n, self.centroids[0]), loo_distances(h_a, self.centroids[1])
            zero_shot = self.score_embeddings(ref[keep], mode=ScoreMode.ZERO_SHOT, top_k=1).score
            table = mode_scores(d_n[keep.numpy()], d_a[keep.numpy()], zero_shot)
            try:
                self.calibration = Calibration(table, f"{len(ref)} held-out normal patches, each against the "
                                                      "centroids made without it")
            except ValueError as err:  # a degenerate reference: the model is fitted, but uncalibrated
                warnings.warn(f"no calibration from the held-out patches: {err}", UserWarning, stacklevel=3)
        self.reference = ref[keep]

    def _rows_per_chunk(self, rows: int) -> int:
        """Image rows per head pass: its (rows, terms, D) tensor stays under about 256 MB for any pool size."""
        terms = max(len(self.pools.normal), len(self.pools.abnormal))
        return max(1, min(rows, _HEAD_BYTES // (terms * self.embed_dim * 4)))

    def reference_scores(self, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """(n, 4) scores of normal embeddings in every mode (``calibration.MODES``), for :meth:`calibrate`."""
        s = self.score_embeddings(embeddings, mode=ScoreMode.SUM, top_k=1)
        zero_shot = self.score_embeddings(embeddings, mode=ScoreMode.ZERO_SHOT, top_k=1).score
        return mode_scores(s.d_normal, s.d_abnormal, zero_shot)

    def calibrate(self, patch_scores: np.ndarray, source: str, slide_scores: np.ndarray | None = None,
                  patch_slides: np.ndarray | None = None, slide_statistic: str = "top1",
                  normalise: str = "reference") -> None:
        """Set the normal reference: :meth:`reference_scores` of normal tissue this detector never saw (neither
        trained on nor used for its centroids); optionally each normal slide's ``slide_statistic`` per mode (the
        top-1% mean: its slide scores) and each patch's slide (``patch_slides``, -1 for patches of a folder), which
        gives the leave-one-slide-out check (``info["reference_check"]``). ``normalise="slide"``: each slide on its
        own scale (:class:`~napari_anonavila.calibration.Calibration`)."""
        self.calibration = Calibration(patch_scores, source, slide_scores, patch_slides, slide_statistic, normalise)
        self.info["calibration"] = self.calibration.describe()
        self.info["reference_check"] = self.calibration.check(self.mode.value)
        self.info["reference_limits"] = self.calibration.limits()

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
        elif pools != old and self.calibration is not None:
            self.calibration = None  # its reference scores were made with the old terms
            warnings.warn("the calibration was made with the old term pools and is dropped: calibrate again "
                          "(anonavila calibrate, or Retrain > Calibrate) for z and p-values", UserWarning, stacklevel=2)
        if pools != old:
            self.info["pools_edited"] = True

    # -- scoring -----------------------------------------------------------------------------------
    def score_embeddings(self, embeddings: np.ndarray | torch.Tensor, *, mode: ScoreMode | str | None = None,
                         top_k: int = 3, chunk: int = 512) -> PatchScores:
        """Anomaly scores and term explanations for image embeddings (N, D)."""
        mode = ScoreMode(mode or self.mode)
        embs = check_embeddings(embeddings, self.embed_dim) if len(embeddings) else torch.zeros(0, self.embed_dim)
        chunk = self._rows_per_chunk(chunk)
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

    # -- persistence: checkpoint/ reads and writes plain data; the Detector builds itself from it --------------
    def state(self) -> DetectorState:
        """This fitted detector as plain data (what a checkpoint holds)."""
        if not self.is_fitted:
            raise ValueError("only a fitted detector can be saved; call fit() first")
        return DetectorState(self.backend_spec, self.backend_id, self.pools, self.normal_text, self.abnormal_text,
                             self.logit_scale_exp, self.mlp.state_dict(), self.centroids, self.reference,
                             self.mode.value, self.calibration, dict(self.info))

    @classmethod
    def from_state(cls, state: DetectorState, backend: VLMBackend | None = None, *, path=None) -> Detector:
        """A detector from plain data, with ``backend`` attached (or none); ``path`` names the file in errors."""
        mlp = MLP(state.embed_dim)
        try:
            mlp.load_state_dict(state.mlp)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: MLP weights do not fit a {state.embed_dim}-d model ({err})") from err
        return cls(backend=backend, backend_spec=state.backend_spec or (str(backend.spec) if backend else ""),
                   backend_id=state.backend_id, pools=state.pools, normal_text=state.normal_text,
                   abnormal_text=state.abnormal_text, logit_scale_exp=state.logit_scale_exp, mlp=mlp,
                   centroids=state.centroids, reference=state.reference, mode=state.mode, info=state.info,
                   calibration=state.calibration)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write a self-describing, pickle-free checkpoint (``.safetensors``)."""
        return write_state(path, self.state(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str | VLMBackend | None = None, device: str | None = None,
             attach_backend: bool = True, precision: str = "float32", allow_download: bool = False) -> Detector:
        """Load a checkpoint: ours (``.safetensors``) or the authors' (``.pth``), told apart by content.

        The backend comes from ``backend`` or the stored spec (for an authors' file that holds CONCH under
        ``VLM.*``, CONCH is built from the file itself), and must match the weights. A checkpoint made from a
        head-only file names no backend: it attaches one only when ``backend`` is given.
        """
        if checkpoint_kind(path) == "authors":
            return cls._from_authors(path, backend=backend, device=device, precision=precision,
                                     attach_backend=attach_backend)
        state = read_state(path)
        vlm = None
        if backend is not None or (attach_backend and state.backend_spec):
            vlm = backend if isinstance(backend, VLMBackend) else get_backend(
                backend or state.backend_spec, device, precision=precision, allow_download=allow_download)
            if (state.backend_spec and vlm.id != state.backend_id) or vlm.embed_dim != state.embed_dim:
                raise CheckpointError(f"{path}: trained with backend {state.backend_id} ({state.embed_dim}-d), but "
                                      f"the given backend is {vlm.id} ({vlm.embed_dim}-d); pass the backend it was "
                                      "trained with")
        return cls.from_state(state, vlm, path=path)

    @classmethod
    def from_official_checkpoint(cls, path: str | os.PathLike, *, backend: str | VLMBackend | None = None,
                                 pools: TermPools | None = None, device: str | None = None,
                                 precision: str = "float32", attach_backend: bool = True) -> Detector:
        """Import the authors' ``.pth``: MLP, text embeddings and centroids used exactly as stored.

        When the file holds CONCH under ``VLM.*`` (the released checkpoints do), CONCH is built from it: the file
        alone is a complete detector. A head-only file (MLP, text embeddings, centroids, ``VLM.logit_scale``)
        imports without an image model: ``backend`` attaches one. The logit scale is ``VLM.logit_scale`` (else the
        backend's). Stored text embeddings are kept as stored, duplicates included; their terms are named by
        matching each embedding to the shipped prompts encoded by the model, and the rest are named
        ``normal term 17`` (with a warning). ``pools`` gives the names instead (its counts must match).
        """
        return cls._from_authors(path, backend=backend, pools=pools, device=device, precision=precision,
                                 attach_backend=attach_backend)

    @classmethod
    def _from_authors(cls, path, *, backend=None, pools=None, device=None, precision="float32",
                      attach_backend=True) -> Detector:
        parts = read_official(path)
        vlm = authors_backend(path, parts, backend=backend, device=device, precision=precision,
                              attach_backend=attach_backend)
        return cls.from_state(authors_state(path, parts, vlm, pools), vlm, path=path)
