"""Training of the MLP on normal image embeddings (METHOD.md: Adam, summed gradient accumulation)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict, dataclass

import torch

from .errors import NonFiniteError
from .head import MLP, contrastive_loss, text_augmented_embeddings
from .progress import Progress

__all__ = ["TrainConfig", "iter_fit_mlp"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. The authors' values: lr 1e-3, batch 100, 100 accumulated batches, 1 epoch."""

    epochs: int = 1
    batch_size: int = 100
    lr: float = 1e-3
    accumulate: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (the loss compares pairs), got {self.batch_size}")
        if self.epochs < 1 or self.accumulate < 1:
            raise ValueError("epochs and accumulate must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)


def iter_fit_mlp(
    img_embs: torch.Tensor,
    normal_text: torch.Tensor,
    abnormal_text: torch.Tensor,
    logit_scale_exp: float,
    config: TrainConfig,
    *,
    mlp: MLP | None = None,
) -> Generator[Progress, None, tuple[MLP, list[float]]]:
    """Train rho on normal embeddings (N, D); yield Progress per batch; return (mlp, per-batch losses).

    Gradients are summed over ``accumulate`` batches before each Adam step; a trailing partial group is
    stepped at the end of each epoch. A final batch of one image is dropped (the loss needs pairs).
    """
    n, dim = img_embs.shape
    if n < 2:
        raise ValueError(f"training needs at least 2 normal images, got {n}")
    gen = torch.Generator().manual_seed(config.seed)
    if mlp is None:
        torch.manual_seed(config.seed)
        mlp = MLP(dim)
    device = img_embs.device
    mlp = mlp.to(device).train()
    opt = torch.optim.Adam(mlp.parameters(), lr=config.lr)
    starts = [s for s in range(0, n, config.batch_size) if min(config.batch_size, n - s) >= 2]
    total = config.epochs * len(starts)
    losses: list[float] = []
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen).to(device)
        opt.zero_grad(set_to_none=True)
        for i, s in enumerate(starts):
            idx = order[s : s + config.batch_size]
            h_n, h_a = text_augmented_embeddings(img_embs[idx], normal_text, abnormal_text, logit_scale_exp, mlp)
            loss = contrastive_loss(h_n, h_a)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"training diverged: the loss is {float(loss)} at batch {len(losses) + 1} of "
                                     f"epoch {epoch + 1} (learning rate {config.lr:g}); lower the learning rate "
                                     "(--lr) or check the normal images; nothing was saved")
            loss.backward()
            losses.append(float(loss.detach()))
            if (i + 1) % config.accumulate == 0 or i + 1 == len(starts):
                opt.step()
                opt.zero_grad(set_to_none=True)
                if not all(torch.isfinite(p).all() for p in mlp.parameters()):
                    raise NonFiniteError(f"training diverged: the MLP weights became NaN or infinite at batch "
                                         f"{len(losses)} (learning rate {config.lr:g}); lower the learning rate "
                                         "(--lr); nothing was saved")
            yield Progress("train", epoch * len(starts) + i + 1, total, {"loss": losses[-1], "epoch": epoch})
    return mlp.eval(), losses
