"""The original (embedding / condensation) Influencer loss for point-embedding models."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from influencerformer.utils import float32_no_autocast


def _validate(embeddings: Tensor, betas: Tensor, instance_ids: Tensor) -> None:
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (N, D); got shape {tuple(embeddings.shape)}")
    n = embeddings.shape[0]
    if betas.shape != (n,):
        raise ValueError(f"betas must be (N,) = ({n},); got shape {tuple(betas.shape)}")
    if instance_ids.shape != (n,):
        raise ValueError(f"instance_ids must be (N,) = ({n},); got shape {tuple(instance_ids.shape)}")
    if instance_ids.is_floating_point():
        raise ValueError(f"instance_ids must be integers; got dtype {instance_ids.dtype}")
    if bool((instance_ids < 0).any()):
        raise ValueError("instance_ids must be >= 0 (0 is background)")


@float32_no_autocast
def condensation_influencer_loss(
    embeddings: Tensor,
    betas: Tensor,
    instance_ids: Tensor,
    *,
    attr_weight: float = 1.0,
    rep_weight: float = 1.0,
    beta_weight: float = 1.0,
    rep_margin: float = 1.0,
) -> Dict[str, Tensor]:
    """Influencer loss in embedding space.

    Args:
        embeddings: (N, D) point embeddings.
        betas: (N,) influencer-ness *logits* (the probability is ``sigmoid(betas)``).
        instance_ids: (N,) int, 0 = background, any positive id = instance.
    Each instance's influencer is its highest-beta point. Attractive: mean over the instance's
    points of the squared distance to its influencer, averaged over instances. Repulsive:
    ``max(0, margin - ||x_k - x_l||)`` between influencers, averaged over ordered pairs.
    Beta: BCE with instance points -> 1, background -> 0.
    Returns a dict with ``loss`` and detached ``attractive``, ``repulsive``, ``beta``.
    """
    _validate(embeddings, betas, instance_ids)
    zero = embeddings.sum() * 0.0
    foreground = instance_ids > 0
    beta_term = F.binary_cross_entropy_with_logits(betas, foreground.float()) if betas.numel() else zero

    fg_index = foreground.nonzero().squeeze(1)
    if fg_index.numel() == 0:
        attractive = repulsive = zero
    else:
        _, inst = torch.unique(instance_ids[fg_index], return_inverse=True)  # contiguous 0..K-1
        num_inst = int(inst.max()) + 1
        # Influencer of each instance = its highest-beta point: sort by beta, first of each id wins.
        order = torch.argsort(betas[fg_index], descending=True, stable=True)
        position = torch.empty_like(order)
        position[order] = torch.arange(order.numel(), device=order.device)
        first = torch.full((num_inst,), order.numel(), dtype=torch.long, device=order.device)
        first = first.scatter_reduce(0, inst, position, reduce="amin")
        influencers = embeddings[fg_index[order[first]]]  # (K, D)

        sq_dist = (embeddings[fg_index] - influencers[inst]).pow(2).sum(dim=1)
        per_inst = torch.zeros(num_inst, device=embeddings.device).index_add(0, inst, sq_dist)
        counts = torch.bincount(inst, minlength=num_inst).to(per_inst.dtype)
        attractive = (per_inst / counts).mean()
        if num_inst > 1:
            diff = influencers[:, None, :] - influencers[None, :, :]
            dist = (diff.pow(2).sum(-1) + 1e-12).sqrt()
            off = ~torch.eye(num_inst, dtype=torch.bool, device=embeddings.device)
            repulsive = F.relu(rep_margin - dist)[off].mean()
        else:
            repulsive = zero
    loss = attr_weight * attractive + rep_weight * repulsive + beta_weight * beta_term
    return {"loss": loss, "attractive": attractive.detach(), "repulsive": repulsive.detach(),
            "beta": beta_term.detach()}


class CondensationInfluencerLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`condensation_influencer_loss`."""

    def __init__(self, *, attr_weight: float = 1.0, rep_weight: float = 1.0, beta_weight: float = 1.0,
                 rep_margin: float = 1.0):
        super().__init__()
        self.kwargs = dict(attr_weight=attr_weight, rep_weight=rep_weight, beta_weight=beta_weight,
                           rep_margin=rep_margin)

    def forward(self, embeddings: Tensor, betas: Tensor, instance_ids: Tensor) -> Dict[str, Tensor]:
        return condensation_influencer_loss(embeddings, betas, instance_ids, **self.kwargs)
