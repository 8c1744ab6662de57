"""Mask losses and pairwise mask costs of the Mask2Former recipe (dice + sigmoid BCE).

Inputs are logits; targets are in [0, 1] (soft values appear where GT masks are sampled
bilinearly). Rows are masks, columns points.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
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


class _PointStatistics(torch.autograd.Function):
    """``(rows @ logsigmoid(z)^T, rows @ z^T[, rows @ sigmoid(z)^T])`` for constant (B, R, P) rows.

    Every quantity the matcher-free losses read from the (B, M, P) mask logits is a weighted mean
    over points of ``log s``, ``z`` or ``s`` (``softplus(z) = z - log s``): fused, the M x P work is
    one ``logsigmoid`` (and ``sigmoid``) and a matrix product per statistic, forward and backward,
    and only ``z`` is saved for backward.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, rows: Tensor, with_sigmoid: bool):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, rows)
        stats = (rows @ F.logsigmoid(logits).transpose(-1, -2), rows @ logits.transpose(-1, -2))
        if with_sigmoid:
            stats += (rows @ torch.sigmoid(logits).transpose(-1, -2),)
        return stats

    @staticmethod
    def backward(ctx, grad_log: Optional[Tensor], grad_lin: Optional[Tensor], grad_sig: Optional[Tensor] = None):
        logits, rows = ctx.saved_tensors
        grad = None if grad_lin is None else grad_lin.transpose(-1, -2) @ rows
        if grad_log is not None or grad_sig is not None:
            sig_neg = torch.sigmoid(-logits)  # d logsigmoid(z) / dz
            if grad_log is not None:
                through = grad_log.transpose(-1, -2) @ rows
                grad = sig_neg * through if grad is None else grad.addcmul_(sig_neg, through)
            if grad_sig is not None:
                through = grad_sig.transpose(-1, -2) @ rows
                ds = sig_neg - sig_neg * sig_neg  # ds/dz = s (1 - s)
                grad = ds * through if grad is None else grad.addcmul_(ds, through)
        return grad, None, None


def point_statistics(logits: Tensor, rows: Tensor, with_sigmoid: bool = False) -> Tuple[Tensor, ...]:
    """(B, M, P) mask logits, (B, R, P) point weights -> (B, R, M) weighted sums of ``log s``, ``z``
    (and ``s`` with ``with_sigmoid``), differentiable in the logits."""
    return _PointStatistics.apply(logits, rows.detach(), with_sigmoid)


def pair_mask_costs(mean_softplus: Tensor, instance_logit_mean: Tensor, instance_prob_mean: Optional[Tensor],
                    prob_total: Optional[Tensor], areas: Tensor, num_points: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """Mask2Former's per-pair BCE and dice of every query against every instance, from statistics.

    Args:
        mean_softplus: (..., Q) ``mean_p softplus(z_qp)`` over all points.
        instance_logit_mean, instance_prob_mean: (..., K, Q) means of ``z`` and ``s`` over each
            instance's points; prob_total: (..., Q) ``sum_p s_qp``.
        areas: (..., K, 1) point count of each instance; num_points: (..., 1, 1) points in all.
    Returns:
        (..., K, Q) BCE ``mean_p BCE(z_qp, M_kp) = mean softplus - |k| / P * mean_{p in k} z`` and
        (when the probabilities are given) dice ``1 - (2 |s M| + 1) / (|s| + |M| + 1)``.
    """
    bce = mean_softplus[..., None, :] - areas / num_points * instance_logit_mean
    if instance_prob_mean is None:
        return bce, None
    overlap = areas * instance_prob_mean
    dice = 1.0 - (2.0 * overlap + 1.0) / (prob_total[..., None, :] + areas + 1.0)
    return bce, dice
