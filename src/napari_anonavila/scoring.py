"""Centroids and patch anomaly scores from text-augmented embeddings; the term explanation per patch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .head import MLP, pool_embeddings, term_weights
from .options import ScoreMode

__all__ = ["PatchScores", "ScoreMode", "score_batch"]


@dataclass(frozen=True)
class PatchScores:
    """Per-patch results, row i for patch i.

    ``d_normal``/``d_abnormal`` are ``1 - cos(h, c)`` against the normal centroids (in zero-shot mode,
    ``1 - max_k cos(v, t_k)`` per pool). ``top_*_idx`` index the pool's terms, best first, with their
    softmax weights in ``top_*_w``.
    """

    d_normal: np.ndarray
    d_abnormal: np.ndarray
    score: np.ndarray
    top_normal_idx: np.ndarray
    top_normal_w: np.ndarray
    top_abnormal_idx: np.ndarray
    top_abnormal_w: np.ndarray

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @classmethod
    def concat(cls, parts: list[PatchScores], top_k: int = 3) -> PatchScores:
        """Stack results of consecutive batches (an empty list gives an empty result)."""
        if not parts:
            z, zi = np.zeros(0, np.float32), np.zeros((0, top_k), np.int64)
            return cls(z, z, z, zi, zi.astype(np.float32), zi, zi.astype(np.float32))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))


def _combine(d_n: torch.Tensor, d_a: torch.Tensor, mode: ScoreMode) -> torch.Tensor:
    if mode is ScoreMode.SUM:
        return d_n + d_a
    if mode is ScoreMode.MAX:
        return torch.maximum(d_n, d_a)
    return torch.sqrt(d_n**2 + d_a**2)


def _top(w: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    vals, idx = torch.topk(w, min(k, w.shape[1]), dim=1)
    return idx.cpu().numpy(), vals.float().cpu().numpy()


@torch.no_grad()
def score_batch(
    img_embs: torch.Tensor,
    normal_text: torch.Tensor,
    abnormal_text: torch.Tensor,
    logit_scale_exp: float,
    *,
    mlp: MLP | None,
    centroids: tuple[torch.Tensor, torch.Tensor] | None,
    mode: ScoreMode = ScoreMode.SUM,
    top_k: int = 3,
) -> PatchScores:
    """Score one batch of L2-normalised image embeddings (B, D).

    Zero-shot mode needs neither ``mlp`` nor ``centroids``: the score is the softmax probability mass on
    the abnormal pool over both pools together.
    """
    # The head runs in float32 (its (B, K, D) tensor is the cost); the distances 1 - cos(h, c) run in float64,
    # because scores are often 1e-5..1e-3. Scores then agree across batchings to about 1e-8 absolute.
    v = F.normalize(img_embs.float(), dim=-1)
    normal_text, abnormal_text = normal_text.float(), abnormal_text.float()
    w_n = term_weights(v, normal_text, logit_scale_exp)
    w_a = term_weights(v, abnormal_text, logit_scale_exp)
    if mode is ScoreMode.ZERO_SHOT:
        cos_n = v @ F.normalize(normal_text, dim=-1).T
        cos_a = v @ F.normalize(abnormal_text, dim=-1).T
        p = torch.softmax(logit_scale_exp * torch.cat([cos_n, cos_a], dim=1), dim=1)
        score = p[:, cos_n.shape[1] :].sum(dim=1)
        d_n, d_a = 1 - cos_n.max(dim=1).values, 1 - cos_a.max(dim=1).values
    else:
        if mlp is None or centroids is None:
            raise ValueError(f"score mode {mode.value!r} needs a trained MLP and centroids; fit the detector first")
        h_n = pool_embeddings(v, normal_text, w_n, mlp)
        h_a = pool_embeddings(v, abnormal_text, w_a, mlp)
        d_n = 1 - F.cosine_similarity(h_n.double(), centroids[0].double().reshape(1, -1), dim=-1)
        d_a = 1 - F.cosine_similarity(h_a.double(), centroids[1].double().reshape(1, -1), dim=-1)
        score = _combine(d_n, d_a, mode)
    tn_i, tn_w = _top(w_n, top_k)
    ta_i, ta_w = _top(w_a, top_k)
    return PatchScores(
        d_n.cpu().numpy(), d_a.cpu().numpy(), score.cpu().numpy(), tn_i, tn_w, ta_i, ta_w
    )
