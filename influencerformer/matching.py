"""Assignment of queries to ground-truth instances: Mask2Former's Hungarian matcher (the baseline)
and its matcher-free counterpart, a soft Sinkhorn plan computed on the device."""
from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from influencerformer.losses.mask import pairwise_dice_cost, pairwise_sigmoid_ce_cost
from influencerformer.point_sampling import point_sample
from influencerformer.utils import float32_no_autocast


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to GT instances by minimum total cost.

    Cost of query q for instance k: ``cost_class * -softmax(logits_q)[label_k]
    + cost_mask * BCE(q, k) + cost_dice * dice(q, k)``, the mask costs on ``num_points``
    points drawn uniformly at random (shared by predictions and targets, bilinear sampling);
    point-form inputs use all their points. Solved per image with
    ``scipy.optimize.linear_sum_assignment`` on the CPU, in float32 even under autocast.
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 12544):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matcher costs are 0")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, pred_masks: Tensor, labels: Tensor, target_masks: Tensor) -> Tensor:
        """(Q, K) cost for one image. ``pred_masks``/``target_masks``: (Q, P)/(K, P) on the same points."""
        cost_class = -logits.softmax(dim=-1)[:, labels]
        return (self.cost_mask * pairwise_sigmoid_ce_cost(pred_masks, target_masks)
                + self.cost_class * cost_class
                + self.cost_dice * pairwise_dice_cost(pred_masks, target_masks))

    def sample_points(self, pred_masks: Tensor, target_masks: Tensor) -> Tuple[Tensor, Tensor]:
        """Dense (Q, H, W) and (K, H', W') -> (Q, P) and (K, P) at shared uniform points."""
        coords = torch.rand(1, self.num_points, 2, device=pred_masks.device)
        tgt = point_sample(target_masks[None], coords)[0]
        out = point_sample(pred_masks[None], coords)[0]
        return out, tgt

    @torch.no_grad()
    @float32_no_autocast
    def forward(self, outputs: Mapping, targets: Sequence[Mapping]) -> List[Tuple[Tensor, Tensor]]:
        """Returns one ``(query_idx, target_idx)`` pair of int64 tensors per image."""
        pred_masks = outputs["pred_masks"]
        point_form = isinstance(pred_masks, (list, tuple))
        indices = []
        for b, tgt in enumerate(targets):
            logits = outputs["pred_logits"][b].float()
            masks = pred_masks[b].float()
            labels, tgt_masks = tgt["labels"], tgt["masks"].float()
            if labels.numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            if not point_form:
                masks, tgt_masks = self.sample_points(masks, tgt_masks)
            cost = self.cost_matrix(logits, masks, labels, tgt_masks)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
                f"num_points={self.num_points}")


def assignment_matrix(indices: Tuple[Tensor, Tensor], num_targets: int, num_queries: int,
                      device=None) -> Tensor:
    """One-hot (K, Q) matrix of a matching."""
    mat = torch.zeros(num_targets, num_queries, device=device)
    q_idx, k_idx = indices
    mat[k_idx.to(mat.device), q_idx.to(mat.device)] = 1.0
    return mat




# The log mass of a padded plan row or column. Finite, not -inf: its exponentials underflow to
# exactly 0, and it stays finite through products with the annealed temperatures (which carry a
# gradient when the plan is not detached: an infinite value would make that gradient nan).
PADDING_LOG_MASS = -1e30


def plan_marginals(instance_valid: Tensor, query_valid: Tensor, queries_per_instance: Tensor | float = 1.0):
    """Log row and column masses of the ownership plans of a padded batch.

    Rows are the K_pad instance slots and a dustbin; columns the Q_pad query slots. A real
    instance's row has mass ``max(1, min(m, Q / K))`` (m = ``queries_per_instance``: 1 is the
    one-to-one plan, m > 1 gives each instance about m queries), the dustbin the rest,
    ``Q - K * mass``; every real query has capacity ``max(1, K / Q)``. Padded slots (and a dustbin
    with nothing left) get :data:`PADDING_LOG_MASS`. Everything stays on the device.

    Args:
        instance_valid: (B, K_pad) bool; query_valid: (B, Q_pad) bool.
    Returns:
        ``(log_row (B, K_pad + 1), log_col (B, Q_pad), row_mass (B, K_pad))``; ``row_mass`` is 1 at
        padded rows, so dividing by it is always safe (the number 1.0 for the one-to-one plan).
    """
    num_inst = instance_valid.sum(dim=1, keepdim=True).float()  # (B, 1)
    num_queries = query_valid.sum(dim=1, keepdim=True).float()
    if isinstance(queries_per_instance, Tensor) or queries_per_instance != 1.0:
        per_instance = (queries_per_instance if isinstance(queries_per_instance, Tensor)
                        else torch.full((), queries_per_instance, device=num_inst.device))  # no host-to-device copy
        mass = torch.minimum(per_instance, num_queries / num_inst.clamp(min=1.0)).clamp(min=1.0)  # (B, 1)
        row_mass = torch.where(instance_valid, mass, 1.0)
        log_instance = torch.where(instance_valid, mass.log(), PADDING_LOG_MASS)
        dustbin = num_queries - num_inst * mass  # (B, 1)
    else:  # the one-to-one plan: every instance row has mass 1
        row_mass = 1.0
        log_instance = torch.where(instance_valid, 0.0, PADDING_LOG_MASS)
        dustbin = num_queries - num_inst
    log_row = torch.cat([log_instance, torch.where(dustbin > 1e-6, dustbin.clamp(min=1e-6).log(), PADDING_LOG_MASS)],
                        dim=1)
    capacity = (num_inst / num_queries.clamp(min=1.0)).clamp(min=1.0)
    log_col = torch.where(query_valid, capacity.log(), PADDING_LOG_MASS)
    return log_row, log_col, row_mass


def sinkhorn_plan(scores: Tensor, log_row: Tensor, log_col: Tensor, temperature: float, num_iters: int,
                  anneal: bool = True) -> Tensor:
    """Entropic optimal transport of rows to columns with the given marginals, in the log domain.

    The plan maximises ``<plan, scores> + temperature * entropy`` subject to row sums
    ``exp(log_row)`` and column sums ``exp(log_col)``. Written as alternating ``log_softmax`` over
    columns and rows of the log plan itself -- each normalisation is one fused kernel, so an
    iteration costs 4 operators whatever the batch -- which equals the usual dual-potential
    updates exactly: a softmax ignores the other side's potential, a per-row or per-column
    constant.

    With ``anneal`` (epsilon-scaling, ``num_iters > 2``) the temperature starts at each problem's
    spread of scores and falls geometrically to ``temperature`` over the first iterations (all
    but ``max(2, num_iters // 4)``): early iterations spread the mass while every score is
    comparable, later ones sharpen it, so the plan respects every marginal -- query capacity
    included -- even when the scores span far more than ``num_iters * temperature``. Changing the
    temperature with the potentials held fixed scales the log plan by the ratio of temperatures.

    ``num_iters == 0``: a plain softmax of each row over its columns (no column constraint).

    Args:
        scores: (..., R, C); log_row: (..., R); log_col: (..., C), broadcastable to the scores'
            batch dimensions; padded rows and columns at :data:`PADDING_LOG_MASS`.
    Returns:
        (..., R, C) log plan; rows sum to their mass exactly (the last normalisation is over rows).
    """
    col_padding = (log_col <= PADDING_LOG_MASS / 2)[..., None, :]
    row_padding = (log_row <= PADDING_LOG_MASS / 2)[..., :, None]
    if num_iters <= 0:
        plan = torch.log_softmax(scores.masked_fill(col_padding, PADDING_LOG_MASS) / temperature, dim=-1)
        return plan.masked_fill(row_padding, PADDING_LOG_MASS)
    padding = row_padding | col_padding
    start = scores.masked_fill(row_padding, PADDING_LOG_MASS)
    if anneal and num_iters > 2:
        num_annealed = num_iters - max(2, num_iters // 4)
        spread = (scores.masked_fill(padding, -math.inf).amax(dim=(-2, -1))
                  - scores.masked_fill(padding, math.inf).amin(dim=(-2, -1))).clamp(min=temperature)
        # (num_annealed + 1, ...) temperatures: spread * r^i down to the final one; not detached, so
        # an undetached plan gets the exact gradient of what was computed
        steps = torch.arange(num_annealed, dtype=scores.dtype, device=scores.device).view(-1, *[1] * spread.dim())
        ratio = (temperature / spread) ** (1.0 / max(num_annealed - 1, 1))
        temperatures = torch.cat([(spread * ratio ** steps).clamp(min=temperature),
                                  torch.full_like(spread, temperature)[None]])
        rescale = (temperatures[:-1] / temperatures[1:])[..., None, None]  # eps_{i-1} / eps_i
        log_plan = start / temperatures[0][..., None, None]
    else:
        num_annealed, rescale = 0, None
        log_plan = start / temperature
    log_row, log_col = log_row[..., :, None], log_col[..., None, :]
    if num_annealed:
        # the next iteration's temperature change folded into this one's row step:
        # (log_softmax + log_row) * r = log_softmax * r + log_row * r, one addcmul
        scaled_rows = log_row * rescale  # (num_annealed, ..., R, 1)
    for i in range(num_iters):
        log_plan = torch.log_softmax(log_plan, dim=-2) + log_col
        if i < num_annealed:
            log_plan = torch.addcmul(scaled_rows[i], torch.log_softmax(log_plan, dim=-1), rescale[i])
        else:
            log_plan = torch.log_softmax(log_plan, dim=-1) + log_row
    return log_plan


def check_queries_per_instance(queries_per_instance: float, num_iters: int) -> None:
    """A plan's queries per instance m must be >= 1, and m > 1 needs Sinkhorn iterations."""
    if not queries_per_instance >= 1.0:
        raise ValueError(f"queries_per_instance must be >= 1 (1: one query per instance); got {queries_per_instance}")
    if queries_per_instance != 1.0 and num_iters <= 0:
        raise ValueError("queries_per_instance > 1 needs Sinkhorn iterations (num_iters > 0): a softmax over "
                         "queries cannot give an instance more than one query")


def sinkhorn_ownership(claims: Tensor, dustbin: Tensor, temperature: float, num_iters: int,
                       anneal: bool = True, queries_per_instance: float = 1.0) -> Tensor:
    """The ownership plan of one image: (K, Q) claim scores and a (Q,) dustbin score per query
    (its "no instance") -> the (K + d, Q) log plan, d = 1 when a dustbin row has mass (Q > K).

    Each of the first K rows sums to its mass (1 for the one-to-one plan). See :func:`sinkhorn_plan`
    and :func:`plan_marginals`.
    """
    if claims.dim() != 2 or dustbin.shape != (claims.shape[1],):
        raise ValueError(f"claims must be (K, Q) and the dustbin (Q,); got {tuple(claims.shape)} and "
                         f"{tuple(dustbin.shape)}")
    check_queries_per_instance(queries_per_instance, num_iters)
    num_inst, num_queries = claims.shape
    log_row, log_col, _ = plan_marginals(claims.new_ones(1, num_inst, dtype=torch.bool),
                                         claims.new_ones(1, num_queries, dtype=torch.bool), queries_per_instance)
    plan = sinkhorn_plan(torch.cat([claims, dustbin[None]])[None], log_row, log_col, temperature, num_iters,
                         anneal)[0]
    mass = max(1.0, min(queries_per_instance, num_queries / num_inst)) if num_inst else 1.0
    has_dustbin = num_iters > 0 and num_queries - num_inst * mass > 1e-6
    return plan if has_dustbin else plan[:num_inst]


class SinkhornAssigner(nn.Module):
    """Soft assignment of queries to instances: :class:`HungarianMatcher`'s costs, a Sinkhorn plan.

    The score of query q for instance k is its *claim* -- the log geometric mean of its mask
    probabilities over the instance's points, ``mean_{p in k} log sigmoid(z_qp)`` -- plus
    ``cost_class`` times its class log-odds ``log p_q(label_k) - log p_q(no object)``, minus
    ``cost_mask`` times the pair's mean sigmoid BCE over all points and ``cost_dice`` times its dice
    loss (the matcher's mask costs). A query's score for the dustbin ("no instance") is its
    silence, ``mean_p log(1 - sigmoid(z_qp))``. The plan (:func:`sinkhorn_plan`, at
    ``temperature`` after ``num_iters`` annealed iterations) gives every query capacity 1 and every
    instance ``queries_per_instance`` (1: one-to-one). With ``detach`` (the default) the plan is a
    constant of the loss, as a matcher's assignment is; otherwise the loss gets the gradient
    through the normalisations.

    No solver, no host sync: a fixed sequence of batched operations over every image and decoder
    layer of a step.
    """

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 temperature: float = 0.2, num_iters: int = 40, anneal: bool = True, detach: bool = True):
        super().__init__()
        if min(cost_class, cost_mask, cost_dice) < 0:
            raise ValueError(f"assigner costs must be >= 0; got class {cost_class}, mask {cost_mask}, dice {cost_dice}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if num_iters < 0:
            raise ValueError(f"num_iters must be >= 0; got {num_iters}")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.temperature, self.num_iters, self.anneal, self.detach = temperature, num_iters, anneal, detach

    @property
    def needs_dice(self) -> bool:
        return self.cost_dice > 0

    def scores(self, claims: Tensor, silence: Tensor, class_log_odds: Optional[Tensor] = None,
               pair_bce: Optional[Tensor] = None, pair_dice: Optional[Tensor] = None) -> Tensor:
        """(..., K, Q) claims and costs, (..., Q) silence -> (..., K + 1, Q) plan scores (dustbin last)."""
        scores = claims
        if self.cost_class:
            scores = scores + self.cost_class * class_log_odds.detach()
        if self.cost_mask:
            scores = scores - self.cost_mask * pair_bce
        if self.cost_dice:
            scores = scores - self.cost_dice * pair_dice
        scores = torch.cat([scores, silence[..., None, :]], dim=-2)
        return scores.detach() if self.detach else scores

    def forward(self, scores: Tensor, log_row: Tensor, log_col: Tensor) -> Tensor:
        """(..., K + 1, Q) scores and :func:`plan_marginals` -> (..., K + 1, Q) log plan."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach):
            plan = sinkhorn_plan(scores, log_row, log_col, self.temperature, self.num_iters, self.anneal)
            if self.num_iters == 0:  # a softmax per instance: the dustbin is what the instances leave
                left = (1.0 - plan[..., :-1, :].exp().sum(dim=-2)).clamp(min=0.0)
                plan = torch.cat([plan[..., :-1, :], left.log()[..., None, :]], dim=-2)
            return plan

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
                f"temperature={self.temperature}, num_iters={self.num_iters}, anneal={self.anneal}, "
                f"detach={self.detach}")


__all__ = ["HungarianMatcher", "SinkhornAssigner", "assignment_matrix", "check_queries_per_instance", "plan_marginals",
           "sinkhorn_ownership",
           "sinkhorn_plan", "PADDING_LOG_MASS"]
