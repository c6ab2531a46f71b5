"""The trainable part of Ano-NAViLa: the MLP rho, text-augmented embeddings and the contrastive loss.

Shapes: B images, K terms of a pool, D the VLM embedding size. Every function is batched (no Python loop
over images) and pure torch, so it runs on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "contrastive_loss", "pool_embeddings", "term_weights", "text_augmented_embeddings"]


class MLP(nn.Module):
    """rho: Linear(2D, D) -> ReLU -> Linear(D, D/2) -> ReLU -> Linear(D/2, D/4); 689,024 parameters at D=512."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 4:
            raise ValueError(f"MLP dim must be a positive multiple of 4, got {dim}")
        self.dim = dim
        self.linear1 = nn.Linear(2 * dim, dim)
        self.linear2 = nn.Linear(dim, dim // 2)
        self.linear3 = nn.Linear(dim // 2, dim // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply rho to concatenated (image, scaled text) vectors of size 2D."""
        return self.linear3(F.relu(self.linear2(F.relu(self.linear1(x)))))


def term_weights(img_embs: torch.Tensor, text_embs: torch.Tensor, logit_scale_exp: float | torch.Tensor
                 ) -> torch.Tensor:
    """Softmax over a pool of ``logit_scale_exp * cos(v, t_k)``: the (B, K) term weights w."""
    cos = F.normalize(img_embs, dim=-1) @ F.normalize(text_embs, dim=-1).T
    return torch.softmax(logit_scale_exp * cos, dim=-1)


def pool_embeddings(img_embs: torch.Tensor, text_embs: torch.Tensor, weights: torch.Tensor, mlp: MLP
                    ) -> torch.Tensor:
    """h = mean_k rho([v; exp(w_k) t_k]) for one pool, computed without materialising the concatenation.

    The first layer splits, ``W1 [v; c t] + b1 = (W1_v v + b1) + c (W1_t t)``, so ``W1_t t`` is computed once
    per term; the last layer is affine, so it commutes with the mean over terms. Computes in the dtype of
    ``img_embs``.
    """
    d, dt = img_embs.shape[-1], img_embs.dtype
    w1 = mlp.linear1.weight.to(dt)
    img_part = torch.addmm(mlp.linear1.bias.to(dt), img_embs, w1[:, :d].T)  # (B, D)
    term_part = text_embs.to(dt) @ w1[:, d:].T  # (K, D)
    # one fused pass over the (B, K, D) tensor, then ReLU in place: this tensor dominates memory traffic
    hidden = torch.addcmul(img_part[:, None, :], torch.exp(weights.to(dt))[:, :, None], term_part[None, :, :])
    hidden = F.relu(hidden, inplace=not hidden.requires_grad)
    b, k, _ = hidden.shape
    hidden = torch.addmm(mlp.linear2.bias.to(dt), hidden.view(b * k, d), mlp.linear2.weight.to(dt).T)  # (B*K, D/2)
    hidden = F.relu(hidden, inplace=not hidden.requires_grad)
    return F.linear(hidden.view(b, k, -1).mean(dim=1), mlp.linear3.weight.to(dt), mlp.linear3.bias.to(dt))


def text_augmented_embeddings(
    img_embs: torch.Tensor,
    normal_text_embs: torch.Tensor,
    abnormal_text_embs: torch.Tensor,
    logit_scale_exp: float | torch.Tensor,
    mlp: MLP,
    *,
    per_image: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(h_normal, h_abnormal)``, each (B, D/4), for L2-normalised image embeddings (B, D).

    ``per_image=True`` computes as the authors' code does, image by image with the concatenation materialised; it
    is slower and used for training, whose weights then match theirs to float rounding (a matrix product's rounding
    depends on how many rows it has, and Adam amplifies it). The default batched form is equivalent to float
    rounding and several times faster; scores use it.
    """
    if img_embs.ndim != 2:
        raise ValueError(f"img_embs must be (B, D), got shape {tuple(img_embs.shape)}")
    if per_image:
        return _authors_form(img_embs, normal_text_embs, logit_scale_exp, mlp), _authors_form(
            img_embs, abnormal_text_embs, logit_scale_exp, mlp)
    out = []
    for text in (normal_text_embs, abnormal_text_embs):
        w = term_weights(img_embs, text, logit_scale_exp)
        out.append(pool_embeddings(img_embs, text, w, mlp))
    return out[0], out[1]


def _authors_form(img_embs: torch.Tensor, text: torch.Tensor, logit_scale_exp: float | torch.Tensor, mlp: MLP
                  ) -> torch.Tensor:
    """One pool, with the authors' operations in their order: a (K, 2D) concatenation and an MLP pass per image."""
    weights = (img_embs @ text.T * logit_scale_exp).softmax(dim=-1)
    rows = []
    for i in range(img_embs.shape[0]):
        x = torch.cat((img_embs[i].unsqueeze(0).repeat(text.shape[0], 1), text * torch.exp(weights[i].unsqueeze(1))),
                      dim=1)
        rows.append(torch.mean(mlp(x), dim=0, keepdim=True))
    return torch.cat(rows, dim=0)


def _mean_exp_cos(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of exp(cos) over pairs: all (i, j) of ``a`` x ``b``, or the strict upper triangle of ``a`` x ``a``."""
    other = a if b is None else b
    cos = F.cosine_similarity(a.unsqueeze(1), other.unsqueeze(0), dim=-1)
    if b is None:
        iu = torch.triu_indices(len(a), len(a), offset=1, device=a.device)
        cos = cos[iu[0], iu[1]]
    return torch.mean(torch.exp(cos))


def contrastive_loss(h_normal: torch.Tensor, h_abnormal: torch.Tensor) -> torch.Tensor:
    """-log((S_NN + S_AA) / (S_NN + S_AA + S_NA)) over a batch of B >= 2 normal images (METHOD.md), with the
    authors' cosine similarities (``F.cosine_similarity`` over broadcast pairs)."""
    b = h_normal.shape[0]
    if b < 2:
        raise ValueError(f"contrastive_loss needs a batch of at least 2 images, got {b}")
    s_nn, s_aa, s_na = _mean_exp_cos(h_normal), _mean_exp_cos(h_abnormal), _mean_exp_cos(h_normal, h_abnormal)
    return -torch.log((s_nn + s_aa) / (s_nn + s_aa + s_na))
