"""Mask losses and pairwise mask costs of the Mask2Former recipe (dice + sigmoid BCE).

Inputs are logits; targets are in [0, 1] (soft values appear where GT masks are sampled
bilinearly). Rows are masks, columns points.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def sigmoid_ce_loss(logits: Tensor, targets: Tensor, num_masks: float | Tensor) -> Tensor:
    """Sigmoid BCE, averaged over points, summed over masks, divided by ``num_masks``. (N, P)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(dim=1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float | Tensor) -> Tensor:
    """``1 - (2|X∩Y| + 1) / (|X| + |Y| + 1)`` on soft masks, summed over masks / ``num_masks``. (N, P)."""
    probs = logits.sigmoid()
    numerator = 2.0 * (probs * targets).sum(dim=1)
    denominator = probs.sum(dim=1) + targets.sum(dim=1)
    return (1.0 - (numerator + 1.0) / (denominator + 1.0)).sum() / num_masks


def pairwise_sigmoid_ce_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE of every prediction against every target: (N, P) x (M, P) -> (N, M).

    Uses ``softplus(z) - softplus(-z) = z``, so one matmul instead of two.
    """
    num_points = logits.shape[1]
    neg = F.softplus(logits)  # BCE against 0
    return (neg.sum(dim=1, keepdim=True) - logits @ targets.transpose(0, 1)) / num_points


def pairwise_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss of every prediction against every target: (N, P) x (M, P) -> (N, M)."""
    probs = logits.sigmoid()
    numerator = 2.0 * probs @ targets.transpose(0, 1)
    denominator = probs.sum(dim=1, keepdim=True) + targets.sum(dim=1)[None, :]
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)
