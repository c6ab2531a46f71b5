"""Training of the MLP on normal image embeddings (METHOD.md: Adam, summed gradient accumulation)."""

from __future__ import annotations

from collections.abc import Generator

import torch

from .errors import NonFiniteError
from .head import MLP, contrastive_loss, text_augmented_embeddings
from .options import TrainConfig
from .progress import Progress

__all__ = ["TrainConfig", "authors_start", "iter_fit_mlp"]


def authors_start(n: int, dim: int, config: TrainConfig, mlp: MLP | None = None
                  ) -> tuple[MLP, list[list[torch.Tensor]]]:
    """The MLP's initial weights and every epoch's batches (row indices), drawn as the authors' trainer draws them.

    Their order: ``torch.manual_seed(seed)``, the MLP built (its Linear layers draw from the global generator), then
    each epoch a ``DataLoader(shuffle=True)`` iterator, whose sampler draws its seed from the same generator. Here
    torch's own DataLoader does the drawing, inside ``fork_rng`` so that the caller's generator is left as it was;
    training draws nothing, so drawing every epoch up front gives the same batches. A final batch of one image is
    dropped (the loss compares pairs; theirs would turn NaN).
    """
    from torch.utils.data import DataLoader

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if mlp is None:
            mlp = MLP(dim)
        loader = DataLoader(range(n), batch_size=config.batch_size, shuffle=True)
        epochs = [[b for b in loader if len(b) >= 2] for _ in range(config.epochs)]
    return mlp, epochs


def iter_fit_mlp(
    img_embs: torch.Tensor,
    normal_text: torch.Tensor,
    abnormal_text: torch.Tensor,
    logit_scale_exp: float,
    config: TrainConfig,
    *,
    mlp: MLP | None = None,
) -> Generator[Progress, None, tuple[MLP, list[float]]]:
    """Train rho on normal embeddings (N, D), rows in the training files' order; yield Progress per batch;
    return (mlp, per-batch losses).

    Initialisation, batches and arithmetic as the authors' trainer (:func:`authors_start`, the per-image form of
    :func:`~napari_anonavila.head.text_augmented_embeddings`), so that the same files and seed give their weights to
    float rounding. Gradients are summed
    over ``accumulate`` batches before each Adam step; a trailing partial group is stepped at the end of each epoch.
    """
    n, dim = img_embs.shape
    if n < 2:
        raise ValueError(f"training needs at least 2 normal images, got {n}")
    mlp, epochs = authors_start(n, dim, config, mlp)
    device = img_embs.device
    mlp = mlp.to(device).train()
    opt = torch.optim.Adam(mlp.parameters(), lr=config.lr)
    total = sum(len(batches) for batches in epochs)
    losses: list[float] = []
    for epoch, batches in enumerate(epochs):
        opt.zero_grad(set_to_none=True)
        for i, idx in enumerate(batches):
            h_n, h_a = text_augmented_embeddings(img_embs[idx.to(device)], normal_text, abnormal_text,
                                                 logit_scale_exp, mlp, per_image=True)
            loss = contrastive_loss(h_n, h_a)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"training diverged: the loss is {float(loss.detach())} at batch "
                                     f"{len(losses) + 1} of epoch {epoch + 1} (learning rate {config.lr:g}); lower the "
                                     "learning rate (--lr) or check the normal images; nothing was saved")
            loss.backward()
            losses.append(float(loss.detach()))
            if (i + 1) % config.accumulate == 0 or i + 1 == len(batches):
                opt.step()
                opt.zero_grad(set_to_none=True)
                if not all(torch.isfinite(p).all() for p in mlp.parameters()):
                    raise NonFiniteError(f"training diverged: the MLP weights became NaN or infinite at batch "
                                         f"{len(losses)} (learning rate {config.lr:g}); lower the learning rate "
                                         "(--lr); nothing was saved")
            yield Progress("train", len(losses), total, {"loss": losses[-1], "epoch": epoch})
    return mlp.eval(), losses
