"""Mask losses and pairwise mask costs of the Mask2Former recipe (dice + sigmoid BCE).

Inputs are logits; targets are in [0, 1] (soft values appear where GT masks are sampled
bilinearly). Rows are masks, columns points.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

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
    """Row groups of ``(rows @ softplus(z)^T, rows @ z^T[, rows @ sigmoid(z)^T])`` for constant rows.

    Every quantity the matcher-free losses read from the (B, M, P) mask logits is a weighted mean
    over points of ``softplus(z) = -log(1 - s)``, ``z`` or ``s`` (``log s = z - softplus(z)``): fused,
    the M x P work is one ``softplus`` and one ``sigmoid`` forward -- ``s`` is saved, it is both
    statistics' derivative -- and one matrix product per statistic and row group. The outputs are
    split into the row groups of ``group_sizes`` (statistic-major), and backward multiplies only
    the groups that received a gradient: a group only a detached plan reads (the claims, in the
    default criterion) costs no backward product.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, rows: Tensor, group_sizes: Tuple[int, ...], with_sigmoid: bool):
        ctx.set_materialize_grads(False)
        probs = torch.sigmoid(logits)
        ctx.save_for_backward(probs, rows)
        ctx.group_sizes = group_sizes
        stats = [rows @ F.softplus(logits).transpose(-1, -2), rows @ logits.transpose(-1, -2)]
        if with_sigmoid:
            stats.append(rows @ probs.transpose(-1, -2))
        return tuple(part for stat in stats for part in stat.split(group_sizes, dim=-2))

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]):
        probs, rows = ctx.saved_tensors
        sizes = ctx.group_sizes
        starts = [sum(sizes[:g]) for g in range(len(sizes))]

        def used_rows(group_grads) -> Optional[Tuple[Tensor, Tensor]]:  # -> (B, M, R_used) grads, (B, R_used, P) rows
            used = [g for g, grad in enumerate(group_grads) if grad is not None and sizes[g] > 0]
            if not used:
                return None
            if used == list(range(used[0], used[-1] + 1)):  # adjacent groups: a view of the rows
                weights = rows[..., starts[used[0]]:starts[used[-1]] + sizes[used[-1]], :]
            else:
                weights = torch.cat([rows[..., starts[g]:starts[g] + sizes[g], :] for g in used], dim=-2)
            grad = torch.cat([group_grads[g] for g in used], dim=-2) if len(used) > 1 else group_grads[used[0]]
            return grad.transpose(-1, -2), weights

        def accumulate(out: Optional[Tensor], pair: Tuple[Tensor, Tensor]) -> Tensor:
            grad, weights = pair
            if out is None:
                return grad @ weights
            if out.dim() == 3 and grad.shape[0] == weights.shape[0] == out.shape[0]:
                return out.baddbmm_(grad, weights)  # the product added in the GEMM: no (B, M, P) temporary
            return out.add_(grad @ weights)

        # dz = W_lin^T g_lin + s * (W_sp^T g_sp + (1 - s) * W_sig^T g_sig), since d softplus(z) = s and
        # ds = s (1 - s): each (B, M, P) pass in place, the products accumulated into one buffer.
        n = len(sizes)
        softplus_part, linear_part, sigmoid_part = (used_rows(grads[i:i + n]) if i < len(grads) else None
                                                    for i in range(0, 3 * n, n))
        out = None
        if sigmoid_part is not None:
            out = accumulate(None, sigmoid_part)
            out.addcmul_(out, probs, value=-1.0)  # (1 - s) *
        if softplus_part is not None:
            out = accumulate(out, softplus_part)
        if out is not None:
            out.mul_(probs)
        if linear_part is not None:
            out = accumulate(out, linear_part)
        return out, None, None, None


def point_statistics(logits: Tensor, rows: Tensor, group_sizes: Sequence[int],
                     with_sigmoid: bool = False) -> Tuple[Tensor, ...]:
    """(B, M, P) mask logits, (B, R, P) point weights in row groups of ``group_sizes`` -> the groups
    of (B, R, M) weighted sums of ``softplus(z)``, then of ``z`` (and of ``s`` with
    ``with_sigmoid``), differentiable in the logits."""
    if sum(group_sizes) != rows.shape[-2]:
        raise ValueError(f"row groups {tuple(group_sizes)} do not add up to the {rows.shape[-2]} rows")
    return _PointStatistics.apply(logits, rows.detach(), tuple(group_sizes), with_sigmoid)


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
