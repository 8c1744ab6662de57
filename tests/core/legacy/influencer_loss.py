"""The mask-matrix Influencer loss: queries claim GT instances without a matcher.

Shapes follow Mask2Former / OneFormer3D: ``mask_logits`` is (Q, P) for Q queries over P
points (pixels or superpoints), ``target_masks`` is (K, P) for K ground-truth instances.

Two formulations share the claim scores and the repulsion:

* ``"original"`` -- the first InfluencerFormer formula. Its soft-max attraction grows with
  every extra query that claims an instance, so it *rewards* duplicate claims
  (see ``docs/loss.md``). Kept for reproduction and A/B comparisons.
* ``"exclusive"`` -- the corrected formula (default). Every term is non-negative and all of
  them vanish exactly at the one-to-one assignment, which is therefore the unique global
  minimum up to permuting queries (for K <= Q). Derivation in ``docs/loss.md``.
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from legacy.utils import float32_no_autocast

FORMULATIONS = ("original", "exclusive")
EXCLUSIONS = ("sum", "share", "owned")
EXCLUSION_SCALES = ("instance", "point")


def claim_scores(log_probs: Tensor, target_masks: Tensor) -> Tensor:
    """Log geometric mean of each query's probability over each instance.

    Args:
        log_probs: (Q, P) ``logsigmoid(mask_logits)``.
        target_masks: (K, P) float masks (0/1, or soft weights).
    Returns:
        (K, Q) ``g[k, q] = mean_{p in k} log sigmoid(z[q, p])``; 0 means unanimous "yes".
        Instances with no points get 0 for every query (callers drop them first).
    """
    area = target_masks.sum(dim=1, keepdim=True).clamp(min=1e-6)
    return (target_masks / area) @ log_probs.transpose(0, 1)


def _transposed(elementwise, z: Tensor) -> Tensor:
    """``elementwise(z).T``, applied in ``z``'s memory order (a (P, Q)-major ``z`` is not copied)."""
    return elementwise(z.transpose(0, 1)) if z.transpose(0, 1).is_contiguous() else elementwise(z).transpose(0, 1)


class _LogSigmoidStatistics(torch.autograd.Function):
    """Row groups of ``(W @ logsigmoid(z).T, W @ z.T[, W @ sigmoid(z).T])`` for a constant (R, P) ``W``.

    Every quantity of the exclusive loss that touches the (Q, P) logits is a weighted mean of
    ``log s`` or of ``softplus(z) = z - log s`` over some points, i.e. a row of the first two
    products (the owner's dice and the mask cost also need means of ``s``). Fusing them keeps
    the Q x P work to one ``logsigmoid`` and two matmuls forward and saves only ``z`` for
    backward. The outputs are split into the row groups of ``group_sizes`` (statistic-major:
    ``log_1 .. log_G, lin_1 .. lin_G[, sig_1 .. sig_G]``), and backward multiplies only the groups
    that received a gradient: a group the loss reads detached -- the claims, when only the
    detached ownership sees them -- costs no (P, Q) product.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, weights: Tensor, group_sizes: Tuple[int, ...], with_sigmoid: bool = False):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, weights)
        ctx.group_sizes = group_sizes
        stats = [weights @ _transposed(F.logsigmoid, logits), weights @ logits.transpose(0, 1)]
        if with_sigmoid:
            stats.append(weights @ _transposed(torch.sigmoid, logits))
        return tuple(part for stat in stats for part in stat.split(group_sizes))

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]):
        logits, weights = ctx.saved_tensors
        sizes = ctx.group_sizes
        ends = [sum(sizes[:g + 1]) for g in range(len(sizes))]
        # (R, Q) output grads -> (Q, P) grads through (R, P) weights. For (P, Q)-major logits (the
        # 2D criterion's point sampler gives them so) build the transposed products, so the
        # gradient has that layout too; a (Q, P)-major one would be copied with a transpose on
        # its way back through the sampler.
        points_major = logits.transpose(0, 1).is_contiguous()
        if points_major:
            logits = logits.transpose(0, 1)  # (P, Q)

        def through_weights(group_grads) -> Optional[Tensor]:
            used = [g for g, grad in enumerate(group_grads) if grad is not None and sizes[g] > 0]
            if not used:
                return None
            if used == list(range(used[0], used[-1] + 1)):  # adjacent groups: a view of the rows
                rows = weights[ends[used[0]] - sizes[used[0]]:ends[used[-1]]]
            else:
                rows = torch.cat([weights[ends[g] - sizes[g]:ends[g]] for g in used])
            grad = torch.cat([group_grads[g] for g in used])
            return rows.transpose(0, 1) @ grad if points_major else grad.transpose(0, 1) @ rows

        num_groups = len(sizes)
        grad_log, grad_lin, grad_sig = (through_weights(grads[i:i + num_groups]) if i < len(grads) else None
                                        for i in range(0, 3 * num_groups, num_groups))
        grad = grad_lin
        if grad_log is not None or grad_sig is not None:
            sig_neg = torch.sigmoid(-logits)  # d logsigmoid(z) / dz
            if grad_log is not None:
                grad = sig_neg * grad_log if grad is None else grad.addcmul_(sig_neg, grad_log)
            if grad_sig is not None:
                ds = sig_neg * (1.0 - sig_neg)  # ds/dz = s(1 - s)
                grad = ds * grad_sig if grad is None else grad.addcmul_(ds, grad_sig)
        if grad is None:
            return None, None, None, None
        return (grad.transpose(0, 1) if points_major else grad), None, None, None


def sinkhorn_ownership(claims: Tensor, dustbin: Tensor, temperature: float, num_iters: int,
                       anneal: bool = False, instance_mass: float = 1.0) -> Tensor:
    """Soft one-to-one ownership of instances by queries (log-domain Sinkhorn).

    Rows are the K instances plus, when Q > K, a "dustbin" row of mass Q - K that absorbs the
    queries left without an instance; every query (column) has capacity max(1, K / Q). With
    ``num_iters == 0`` this is a plain softmax over queries per instance (no dustbin).
    A fixed number of normalisations; no solver, no argmax.

    ``instance_mass`` m >= 1 makes the plan one-to-few: each instance row has mass
    ``max(1, min(m, Q / K))`` -- about m queries of capacity 1 each -- and the dustbin the rest,
    ``Q - K * mass``. m = 1 is the one-to-one plan.

    With ``anneal`` (epsilon-scaling), the temperature starts at the spread of the scores and
    falls geometrically to ``temperature`` over the first 3/4 of the iterations: early
    iterations spread the mass while every score is comparable, later ones sharpen it, so the
    plan respects every marginal -- the query capacity included -- even when the scores span
    far more than ``num_iters * temperature`` (silent queries, ``g ~ -30``). The dual
    potentials are carried in score units from one temperature to the next.

    Args:
        claims: (K, Q) claim scores ``g``.
        dustbin: (Q,) the score of each query for "no instance" (its silence).
    Returns:
        (K + d, Q) log ownership, d = 1 if Q > K else 0; each of the first K rows sums to its mass,
        1 for the one-to-one plan (exactly: the last normalisation is over rows).
    """
    return batched_sinkhorn_ownership([claims], [dustbin], temperature, num_iters, anneal, instance_mass)[0]


def instance_row_mass(num_instances: int, num_queries: int, instance_mass: float) -> float:
    """The mass of each instance row of a plan: ``max(1, min(instance_mass, Q / K))`` (1 when K = 0)."""
    if num_instances == 0:
        return 1.0
    return max(1.0, min(instance_mass, num_queries / num_instances))


_PADDING_LOG_MASS = -1e30  # the log mass of a padded plan row or column (and of an empty dustbin)


def batched_sinkhorn_ownership(claims: Sequence[Tensor], dustbins: Sequence[Tensor], temperature: float,
                               num_iters: int, anneal: bool = False, instance_mass: float = 1.0) -> List[Tensor]:
    """:func:`sinkhorn_ownership` of independent problems (the images and decoder layers of a step) at once.

    Args:
        claims: N tensors (K_n, Q_n); dustbins: N tensors (Q_n,).
    Returns:
        N log plans (K_n + d_n, Q_n), each equal to the problem's own :func:`sinkhorn_ownership`.

    The problems are padded to one (N, K_max + 1, Q_max) block whose padded rows and columns have
    zero mass, so they never receive or give mass, and each problem anneals from its own spread.
    One sequence of ``2 * num_iters`` ``logsumexp`` s serves all N problems: on a GPU, where each
    small op is a kernel launch, N times fewer launches than one plan per problem.
    """
    if len(claims) != len(dustbins):
        raise ValueError(f"got {len(claims)} claim matrices but {len(dustbins)} dustbin rows")
    if not claims:
        return []
    for n, (c, d) in enumerate(zip(claims, dustbins)):
        if c.dim() != 2 or d.shape != (c.shape[1],):
            raise ValueError(f"problem {n}: claims must be (K, Q) and the dustbin (Q,); "
                             f"got {tuple(c.shape)} and {tuple(d.shape)}")
    if not instance_mass >= 1.0:
        raise ValueError(f"instance_mass must be >= 1 (1: one query per instance); got {instance_mass}")
    if num_iters <= 0:
        if instance_mass != 1.0:
            raise ValueError("instance_mass > 1 needs Sinkhorn iterations (num_iters > 0): a softmax over "
                             "queries cannot give an instance more than one query")
        return [torch.log_softmax(c / temperature, dim=1) for c in claims]
    sizes = [tuple(c.shape) for c in claims]
    k_max, q_max = max(k for k, _ in sizes), max(q for _, q in sizes)
    # rows: instances (padded to K_max), then the dustbin
    scores = torch.stack([torch.cat([F.pad(c, (0, q_max - q, 0, k_max - k)), F.pad(d, (0, q_max - q))[None]])
                          for c, d, (k, q) in zip(claims, dustbins, sizes)])  # (N, K_max + 1, Q_max)
    # Zero mass is a log mass of _PADDING_LOG_MASS, not -inf: its exponentials underflow to exactly
    # 0, but it stays finite through products with the annealed temperatures, which carry a
    # gradient -- an infinite potential would make that gradient 0 * inf = nan.
    num_problems, inf = len(sizes), float("inf")
    log_row = scores.new_full((num_problems, k_max + 1), _PADDING_LOG_MASS)
    log_col = scores.new_full((num_problems, q_max), _PADDING_LOG_MASS)
    for n, (k, q) in enumerate(sizes):  # fills from the shapes alone: no host-to-device copy
        mass = instance_row_mass(k, q, instance_mass)
        log_row[n, :k] = math.log(mass)
        if q - k * mass > 1e-6:  # else (a one-to-few plan using every query) the dustbin row has no mass
            log_row[n, k_max] = math.log(q - k * mass)
        log_col[n, :q] = math.log(max(1.0, k / q))
    row_padding = log_row == _PADDING_LOG_MASS
    temperatures = [scores.new_full((num_problems,), temperature)] * num_iters
    if anneal and num_iters > 2:
        # A schedule of (N,) tensors: the spreads never leave the device (no host sync). They are
        # not detached: the plan after a finite number of steps depends on them, and an
        # undetached ownership (detach_ownership=False) gets the exact gradient of what was computed.
        num_annealed = num_iters - max(2, num_iters // 4)  # the rest run at the final temperature
        padding = row_padding[:, :, None] | (log_col == _PADDING_LOG_MASS)[:, None, :]
        spread = (scores.masked_fill(padding, -inf).amax(dim=(1, 2))
                  - scores.masked_fill(padding, inf).amin(dim=(1, 2))).clamp(min=temperature)
        ratio = (temperature / spread) ** (1.0 / max(num_annealed - 1, 1))
        temperatures = [(spread * ratio ** i).clamp(min=temperature) for i in range(num_annealed)]
        temperatures += [scores.new_full((num_problems,), temperature)] * (num_iters - num_annealed)
    # f, g: dual potentials in score units, so they carry over between temperatures; the padded
    # rows' are at the padding's log mass from the start, so they never give mass
    f = torch.zeros_like(log_row).masked_fill(row_padding, _PADDING_LOG_MASS)
    g = torch.zeros_like(log_col)
    for eps in temperatures:
        eps_rows, eps_block = eps[:, None], eps[:, None, None]
        g = eps_rows * (log_col - torch.logsumexp((scores + f[:, :, None]) / eps_block, dim=1))
        f = eps_rows * (log_row - torch.logsumexp((scores + g[:, None, :]) / eps_block, dim=2))
    log_plan = (scores + f[:, :, None] + g[:, None, :]) / temperature
    return [torch.cat([plan[:k, :q], plan[k_max:, :q]]) if q > k else plan[:k, :q]
            for plan, (k, q) in zip(log_plan, sizes)]


def resolve_temperature(formulation: str, temperature: Optional[float]) -> float:
    """The soft-selection temperature: ``temperature``, or the formulation's default (1.0 for
    "original", 0.2 for "exclusive")."""
    if temperature is not None:
        return temperature
    return 1.0 if formulation == "original" else 0.2


def query_usage_bias(ownerships: Sequence[Tensor], temperature: float, strength: float = 1.0,
                     floor: float = 0.1) -> Tensor:
    """Batch-level balancing of query usage, as a (Q,) score bias for the ownership.

    ``ownerships`` are the per-image (K_b, Q) plans of one batch. A query's usage is its instance
    mass summed over the batch, ``u_q = sum_b sum_k own_b[k, q]``; the bias is one Sinkhorn step
    towards equal usage (SwAV's equipartition) in score units,
    ``-strength * T * log((u_q + floor * mean u) / ((1 + floor) * mean u))``: over-used queries
    lose, unused ones gain at most ``strength * T * log(1 / floor + 1)``. That only decides
    between near-tied candidates and never hands an instance to a query whose claim is far
    behind. Added to ``ownership_bias`` (detached, never to the loss terms): same minimum.
    Measured on the synthetic Mask2Former, it does not prevent the query collapse it was built
    for (docs/loss.md §8): the queries are silenced before their claims are near-tied.

    Returns zeros when the batch has no instances.
    """
    if not ownerships:
        raise ValueError("query_usage_bias needs the ownership of at least one image")
    num_queries = ownerships[0].shape[1]
    if any(own.dim() != 2 or own.shape[1] != num_queries for own in ownerships):
        raise ValueError(f"ownerships must all be (K_b, Q) with one Q; got {[tuple(o.shape) for o in ownerships]}")
    if strength < 0 or floor <= 0:
        raise ValueError(f"strength must be >= 0 and floor > 0; got strength={strength}, floor={floor}")
    usage = torch.stack([own.detach().float().sum(dim=0) for own in ownerships]).sum(dim=0)  # (Q,)
    mean = usage.mean()
    if mean <= 0:
        return torch.zeros_like(usage)
    return -strength * temperature * torch.log((usage + floor * mean) / ((1.0 + floor) * mean))


def profile_repulsion(claims: Tensor, margin: float) -> Tensor:
    """Hinge ``max(0, margin - ||exp(g_k) - exp(g_l)||)`` averaged over ordered pairs k != l.

    Gram expansion of the distances: O(K^2 + K Q) memory, no (K, K, Q) tensor.
    """
    num_inst = claims.shape[0]
    if num_inst < 2:
        return claims.sum() * 0.0
    profiles = claims.exp()
    sq_norm = (profiles * profiles).sum(dim=1)
    sq_dist = sq_norm[:, None] + sq_norm[None, :] - 2.0 * profiles @ profiles.transpose(0, 1)
    # eps keeps d(sqrt) finite for identical profiles (their difference gradient is exactly 0).
    dist = (sq_dist.clamp(min=0.0) + 1e-12).sqrt()
    off_diagonal = ~torch.eye(num_inst, dtype=torch.bool, device=claims.device)
    return F.relu(margin - dist)[off_diagonal].mean()


class InfluencerTargets(NamedTuple):
    """GT-only quantities of the exclusive loss, computed once per image and reused by every layer.

    ``weights`` (R, P): rows are the claim means (K), the mean over all points, the background
    mean and the exclusive-point means (K, or none when the masks are disjoint: they equal the
    claim rows) -- in :meth:`row_groups` of sizes (K, 1, 1[, K]).
    """

    weights: Tensor
    num_instances: int
    exclusive_rows: int  # index of the first exclusive-mean row (0 when masks are disjoint)
    kept: Tensor  # (K_all,) bool: instances with at least one point
    background: Tensor  # (P,) background weight in [0, 1]
    areas: Tensor  # (K,) point count of each kept instance (weighted, when the points are)
    exclusive_areas: Tensor  # (K,) the same, of the points of each instance that no other covers
    point_mass: Tensor  # () the point count P (the total weight, when the points are weighted)

    def row_groups(self) -> Tuple[int, ...]:
        """Sizes of the row groups of ``weights``: claims, mean, background[, exclusive]."""
        exclusive = (self.num_instances,) if self.exclusive_rows else ()
        return (self.num_instances, 1, 1) + exclusive


def prepare_influencer_targets(target_masks: Tensor, dtype: Optional[torch.dtype] = None,
                               point_weights: Optional[Tensor] = None) -> InfluencerTargets:
    """Precompute :class:`InfluencerTargets` from (K, P) masks (one host sync: the overlap check).

    ``point_weights`` (P,), positive, default all 1: each point's weight in every mean and count
    of the loss (an integer weight n counts a point as n copies of it), e.g. the density
    correction of :func:`influencerformer.point_sampling.shared_point_coords`.
    """
    if target_masks.dim() != 2:
        raise ValueError(f"target_masks must be (K, P); got shape {tuple(target_masks.shape)}")
    all_masks = target_masks.to(dtype or torch.float32)
    num_points = all_masks.shape[1]
    if point_weights is None:
        point_weights = all_masks.new_ones(num_points)
    else:
        if point_weights.shape != (num_points,):
            raise ValueError(f"point_weights must be (P,) = ({num_points},); got {tuple(point_weights.shape)}")
        if not bool((point_weights > 0).all()):
            raise ValueError("point_weights must be > 0 everywhere")
        point_weights = point_weights.to(all_masks)
    kept = all_masks.sum(dim=1) > 0
    masks = all_masks[kept]
    num_inst = masks.shape[0]
    weighted = masks * point_weights
    exclusive_rows = 0
    exclusive_areas = weighted.sum(dim=1)
    exclusive = []
    if num_inst > 0:
        coverage = masks.sum(dim=0)
        background = 1.0 - masks.amax(dim=0)
        if bool((coverage > 1.0).any()):
            only_here = weighted * (coverage <= 1.0)
            exclusive_areas = only_here.sum(dim=1)
            exclusive = [only_here / exclusive_areas[:, None].clamp(min=1e-6)]
            exclusive_rows = num_inst + 2
    else:
        background = all_masks.new_ones(num_points)
    weighted_background = background * point_weights
    point_mass = point_weights.sum()
    rows = [weighted / weighted.sum(1, keepdim=True).clamp(min=1e-6), (point_weights / point_mass)[None],
            (weighted_background / weighted_background.sum().clamp(min=1e-6))[None]] + exclusive
    return InfluencerTargets(torch.cat(rows), num_inst, exclusive_rows, kept, background, weighted.sum(dim=1),
                             exclusive_areas, point_mass)


def _validate_shapes(mask_logits: Tensor, target_masks: Tensor) -> None:
    if mask_logits.dim() != 2:
        raise ValueError(f"mask_logits must be (Q, P); got shape {tuple(mask_logits.shape)}")
    if target_masks.dim() != 2:
        raise ValueError(f"target_masks must be (K, P); got shape {tuple(target_masks.shape)}")
    if target_masks.shape[1] != mask_logits.shape[1]:
        raise ValueError(
            f"mask_logits {tuple(mask_logits.shape)} and target_masks {tuple(target_masks.shape)} "
            "disagree on the number of points P (dim 1)"
        )


def _validate_options(formulation: str, temperature: float, exclusion: str = "sum",
                      exclusion_scale: str = "instance") -> None:
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}; got {formulation!r}")
    if exclusion not in EXCLUSIONS:
        raise ValueError(f"exclusion must be one of {EXCLUSIONS}; got {exclusion!r}")
    if exclusion_scale not in EXCLUSION_SCALES:
        raise ValueError(f"exclusion_scale must be one of {EXCLUSION_SCALES}; got {exclusion_scale!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")


@float32_no_autocast
def mask_influencer_loss(
    mask_logits: Tensor | Sequence[Tensor],
    target_masks: Tensor | Sequence[Tensor],
    *,
    formulation: str = "exclusive",
    attr_weight: float = 1.0,
    rep_weight: float = 1.0,
    bg_weight: float = 1.0,
    excl_weight: float = 1.0,
    rep_margin: float = 1.0,
    temperature: Optional[float] = None,
    sinkhorn_iters: int = 40,
    exclusion: str = "sum",
    exclusion_scale: str = "instance",
    dice_weight: float = 0.0,
    detach_ownership: bool = True,
    claim_floor: Optional[float] = None,
    anneal_ownership: bool = True,
    bce_weight: float = 0.0,
    ownership_spread_floor: Optional[float] = None,
    ownership_mask_cost: float = 0.0,
    leak_weight: float = 0.0,
    ownership_bias: Optional[Tensor] = None,
    query_objectness: Optional[Tensor] = None,
    objectness_background: bool = False,
    free_non_owners: bool = False,
    instance_mass: float = 1.0,
    point_weights: Optional[Tensor] = None,
    return_ownership: bool = False,
    report_unweighted: bool = True,
    targets: Optional[InfluencerTargets] = None,
) -> Dict[str, Tensor] | List[Dict[str, Tensor]]:
    """Influencer loss of one image / scene, or of several at once.

    Args:
        mask_logits: (Q, P) mask logits; or a sequence of N of them (the images and decoder layers
            of a step): then ``target_masks`` -- and ``targets``, ``ownership_bias``,
            ``query_objectness``, ``point_weights`` when given -- are sequences of N too, the
            result is a list of N dicts, each equal to its problem's own loss, and the N ownership
            plans are computed together (:func:`batched_sinkhorn_ownership`).
        target_masks: (K, P) GT instance masks, bool or float, may overlap; K = 0 and K > Q
            are legal. A point in no mask is background. Instances with no points are ignored.
        formulation: ``"exclusive"`` (default, one-to-one minimum) or ``"original"``.
        temperature: soft-selection temperature; default 1.0 for "original", 0.2 for
            "exclusive".
        excl_weight, sinkhorn_iters, exclusion: used by "exclusive" only. ``exclusion="sum"``
            pushes every non-owner with weight ``1 - ownership``; ``"share"`` also scales by the
            query's share of the instance's "yes"; ``"owned"`` by the instance's largest
            ownership (1/Q while undecided, 1 once owned: no collapse at symmetric starts).
        exclusion_scale: "exclusive" only; ``"instance"`` (default) pushes the non-owners off each
            instance with its mean over the instance's points (every instance weighs 1, so a point of
            a small instance weighs far more than one of a large instance); ``"point"`` scales each
            instance's push by its share of the points, ``|k| / P``, so every point weighs ``1 / P``
            as in Mask2Former's per-point BCE, which pushes the matched query off other instances
            alike. Positive scales: same zero set, same minimum.
        dice_weight: "exclusive" only; > 0 adds the owner dice ``mean_k sum_q own[k, q] dice(s_q, M_k)``
            (Mask2Former's dice, +1 smoothed): >= 0, 0 at the one-to-one assignment.
        detach_ownership: "exclusive" only (default True); use the ownership as constant weights
            (as a matcher's assignment is): no gradient flows through the Sinkhorn normalisation,
            whose gradient pushes every claimant weaker than the weighted mean off the instance.
            The value, hence the minimum, is the same either way.
        claim_floor: "exclusive" only; the ownership sees claims (and silences) clamped from below
            at this log-probability (e.g. ``log(0.01)``), so a few Sinkhorn iterations enforce the
            query capacity even against silent queries. None: unclamped.
        anneal_ownership: "exclusive" only (default True, with ``sinkhorn_iters=40``); epsilon-scaling
            Sinkhorn (:func:`sinkhorn_ownership`): the same plan at convergence, reached -- query
            capacity included -- in about 40 iterations even when the claims span tens of units.
            The uniqueness of the minimum assumes a plan within capacity: 10 plain iterations give
            a query that merges two instances both of them, and only the repulsion charges the merge
            (with zero gradient), so descent stays in it (docs/loss.md, "The merge trap").
        bce_weight: "exclusive" only; > 0 adds the owner BCE ``mean_k sum_q own[k, q] mean_p BCE(z_qp, M_kp)``
            (Mask2Former's per-point sigmoid BCE, every point weighted alike): >= 0, 0 at the
            one-to-one assignment. The claims weigh each instance's points by ``1 / area`` and the
            background by ``1 / |background|``, which moves the owner's 0.5 boundary with the
            instance's size; this term's equal per-point weights keep it calibrated.
        ownership_spread_floor: "exclusive" only; when the scores the ownership sees are closer
            together than this -- the RMS of the double-centred claims (and silences, with a
            dustbin), the only part a Sinkhorn plan depends on -- they are scaled up to it. Near a
            symmetric start (claims within 0.01) the plan then decides as a matcher's argmax
            would, instead of staying uniform until the claims drift apart; once they spread
            beyond the floor nothing changes. The loss terms, hence the value at the ideal and the
            minimum, are unchanged.
        ownership_mask_cost: "exclusive" only; > 0 subtracts this weight times Mask2Former's
            per-pair matching cost, ``BCE(z_q, M_k) + dice(s_q, M_k)`` over all points, from the
            scores the ownership sees, never from the loss terms. The claims measure recall only
            (a query saying "yes" everywhere claims every instance perfectly), so a query spread
            over two instances is a strong candidate for both; the BCE and dice also charge it
            for its "yes" outside the instance, as a matcher's cost does. The dustbin row gets no
            cost, as an unmatched query costs nothing in a matcher. At the ideal the owner's cost
            goes to 0 and every other query's to infinity: same plan, same minimum.
        leak_weight: "exclusive" only; > 0 adds the owner's leakage at the claim's scale,
            ``mean_k sum_q own[k, q] (1 / |k|) sum_{p not in k} softplus(z_qp)``: every point outside
            the instance pushes its owner towards "no" as hard as every point inside pulls it
            towards "yes" (``1 / |k|`` each), so with ``leak_weight = attr_weight`` the pair is the
            owner's BCE scaled by ``P / |k|`` and a pixel the network cannot place is "yes" at
            probability 1/2 whatever the instance's size. Without it the owner of a small instance
            is pulled ``1 / |k|`` per point inside and pushed ``1 / |background|`` outside, and
            its mask spreads. >= 0, 0 at the one-to-one assignment.
        ownership_bias: "exclusive" only; (K, Q) scores added (detached) to the claims that the
            ownership sees, never to the loss terms: e.g. each query's class log-probability of
            the instance's label, as Mask2Former's matching cost adds a class cost. A finite bias
            leaves the ideal the infimum (its non-owners' claims go to -inf), but at finite logits
            a bias larger than the claim gap can hand an instance to a non-owner.
        query_objectness: "exclusive" only; (Q,) weights in (0, 1], used detached: each query's
            exclusion is scaled by it, e.g. its probability of being an object. A query that
            declares "no object" is then hardly pushed off other instances: its mask is nearly
            free, as an unmatched query's is in Hungarian's loss, and the pixel features are no
            longer pulled by the owner and pushed by every other query at once. Any positive
            weights leave the zero set, hence the minimum, as they are.
        objectness_background: "exclusive" only, with ``query_objectness``: also scale each
            query's background term by it. A query that declares "no object" then has a free mask
            everywhere, not only on other instances -- as an unmatched query has in Hungarian's
            loss -- instead of being pushed to "no" on the background on every step it owns
            nothing; a spare query keeps a mask and can be recruited. Positive weights: same zero
            set, same minimum.
        free_non_owners: "exclusive" only; scale each query's exclusion and background terms by
            its instance ownership ``sum_k own[k, q]`` (detached): a query the plan leaves in the
            dustbin has a free mask, as an unmatched query has in Hungarian's loss, from the first
            step (where ``objectness_background`` waits for the class head). This gives up the
            mask-space uniqueness of the minimum: a non-owner that does not cover an instance
            completely (so its ownership is 0) may say "yes" anywhere at no cost; the ownership,
            hence the class targets, are still one-to-one at the minimum -- Hungarian's notion of
            a unique set prediction. A perfect duplicate still costs (it takes half the ownership).
        instance_mass: "exclusive" only; m >= 1 (default 1): a one-to-few plan
            (:func:`sinkhorn_ownership`) in which each instance takes about m queries, each with a
            share up to 1 (the returned ``"ownership"``, hence each claimant's class target); the
            per-pair terms (attraction, dice, BCE, leak) weigh each claimant by its share over m,
            so an instance weighs 1 whatever m, and the exclusion spares all m: more queries learn
            masks early, the one-to-many supervision of H-DETR or Group DETR without extra queries
            (measured in docs/loss.md section 10). The minimum is m copies of each instance, so
            anneal m to 1 (the criterion's ``instance_mass_iters``) to end at the one-to-one minimum.
        point_weights: (P,) positive weight of each point in every mean the loss takes (default
            all 1), e.g. the density correction of instance-stratified points
            (:func:`influencerformer.point_sampling.shared_point_coords`). Positive weights leave
            every term 0 at the ideal and > 0 elsewhere: same minimum.
        targets: :func:`prepare_influencer_targets` of ``target_masks`` (and ``point_weights``),
            when the caller reuses them over several decoder layers.
        return_ownership: also return the detached (K, Q) ownership (``"ownership"``) used for
            classification targets, and the dustbin row (``"dustbin_ownership"``, (Q,)).
        report_unweighted: "exclusive" only (default True); also compute and report the potentials
            of weight 0 (attraction, repulsion, background, exclusion). False skips them: on a GPU
            they are a few dozen small kernels per problem that change nothing.
    Returns:
        dict with ``loss`` (differentiable) and the detached terms: ``attractive``, ``repulsive``,
        ``background`` (and ``exclusion`` for "exclusive"; with ``report_unweighted=False`` those
        of non-zero weight only) and ``dice``, ``bce``, ``leak`` when weighted.
    """
    temperature = resolve_temperature(formulation, temperature)
    _validate_options(formulation, temperature, exclusion, exclusion_scale)
    if ownership_mask_cost < 0:
        raise ValueError(f"ownership_mask_cost must be >= 0; got {ownership_mask_cost}")
    if leak_weight < 0:
        raise ValueError(f"leak_weight must be >= 0; got {leak_weight}")
    if free_non_owners and formulation != "exclusive":
        raise ValueError(f"free_non_owners needs formulation='exclusive'; got {formulation!r}")
    if instance_mass != 1.0 and formulation != "exclusive":
        raise ValueError(f"instance_mass needs formulation='exclusive' (the original has no plan); got {formulation!r}")
    batched = not isinstance(mask_logits, Tensor)
    problems = _per_problem(batched, mask_logits=mask_logits, target_masks=target_masks, targets=targets,
                            ownership_bias=ownership_bias, query_objectness=query_objectness,
                            point_weights=point_weights)

    def loss_steps(mask_logits: Tensor, target_masks: Tensor, targets: Optional[InfluencerTargets],
                   ownership_bias: Optional[Tensor], query_objectness: Optional[Tensor],
                   point_weights: Optional[Tensor]):
        """One problem's loss, as a generator: yields the scores its ownership plan is made of (when
        it needs one), receives the (K + d, Q) log plan and returns the loss dict."""
        _validate_shapes(mask_logits, target_masks)
        num_queries = mask_logits.shape[0]
        if query_objectness is not None:
            if query_objectness.shape != (num_queries,):
                raise ValueError(f"query_objectness must be (Q,) = ({num_queries},); "
                                 f"got {tuple(query_objectness.shape)}")
            query_objectness = query_objectness.detach().to(mask_logits.dtype)
        if objectness_background and (formulation != "exclusive" or query_objectness is None):
            raise ValueError("objectness_background scales the exclusive formulation's background term by "
                             f"query_objectness: needs both (formulation={formulation!r}, query_objectness "
                             f"{'missing' if query_objectness is None else 'given'})")
        if targets is None:
            targets = prepare_influencer_targets(target_masks, mask_logits.dtype, point_weights)
        elif point_weights is not None:
            raise ValueError("point_weights go to prepare_influencer_targets when prepared targets are passed")
        elif targets.weights.shape[1] != mask_logits.shape[1]:
            raise ValueError(f"prepared targets have {targets.weights.shape[1]} points, "
                             f"mask_logits {tuple(mask_logits.shape)}")
        weights = targets.weights.to(mask_logits.dtype)
        num_inst = targets.num_instances
        zero = mask_logits.sum() * 0.0

        def full_rows(own: Tensor) -> Tensor:  # (K_kept, Q) -> (K, Q), zero rows for empty instances
            out = own.new_zeros(targets.kept.shape[0], num_queries)
            out[targets.kept] = own
            return out.detach()

        if formulation == "original":
            claims = weights[:num_inst] @ F.logsigmoid(mask_logits).transpose(0, 1)  # (K, Q)
            attractive = (-temperature * torch.logsumexp(claims / temperature, dim=1)).mean() if num_inst else zero
            repulsive = profile_repulsion(claims, rep_margin) if num_inst > 1 else zero
            bg_term = (weights[num_inst + 1] @ torch.sigmoid(mask_logits).transpose(0, 1)).mean()
            loss = attr_weight * attractive + rep_weight * repulsive + bg_weight * bg_term
            out = {"loss": loss, "attractive": attractive.detach(), "repulsive": repulsive.detach(),
                   "background": bg_term.detach()}
            if return_ownership:
                out["ownership"] = full_rows(torch.softmax(claims / temperature, dim=1))
            return out

        # "exclusive": every term >= 0, all zero exactly at the one-to-one assignment.
        groups = targets.row_groups()
        with_sigmoid = dice_weight > 0 or ownership_mask_cost > 0
        parts = _LogSigmoidStatistics.apply(mask_logits, weights, groups, with_sigmoid)
        log_parts, lin_parts = parts[:len(groups)], parts[len(groups):2 * len(groups)]
        claims = log_parts[0]  # (K, Q) log geometric means
        # weighted means of softplus(z) = -log(1 - s), per row group; rows of the mean and the
        # background are (1, Q)
        def softplus_means(group: int) -> Tensor:
            return lin_parts[group] - log_parts[group]

        mean_softplus = softplus_means(1)[0]  # (Q,)
        with_background, with_exclusion = bool(bg_weight) or report_unweighted, bool(excl_weight) or report_unweighted
        claims_softplus = softplus_means(0) if leak_weight > 0 or (with_exclusion and len(groups) == 3) else None
        # on each instance's own points (the claim rows when no instance overlaps another), (K, Q)
        exclusive_mean = (softplus_means(3) if len(groups) > 3 else claims_softplus) if with_exclusion else None
        bg_term = bg_mean = None
        if with_background:
            bg_mean = softplus_means(2)[0]  # (Q,)
            # Summed over queries like the exclusion: each query's "no" on the background weighs as
            # much as its "no" on an instance it does not own (a mean over queries made it Q times weaker).
            if objectness_background:
                bg_mean = bg_mean * query_objectness
            # with free_non_owners each query's weight comes from the plan (below); with no instance
            # every query is in the dustbin and the term is 0
            bg_term = zero if free_non_owners else bg_mean.sum()
        silence = -mean_softplus  # (Q,) log geometric mean of "no" over all points
        if num_inst == 0:
            out = {"loss": _weighted_sum([(bg_weight, bg_term)], zero)}
            out.update({name: value.detach() for name, term_weight, value in (
                ("attractive", attr_weight, zero), ("repulsive", rep_weight, zero), ("background", bg_weight, bg_term),
                ("exclusion", excl_weight, zero)) if term_weight or report_unweighted})
            if dice_weight > 0:
                out["dice"] = zero.detach()
            if bce_weight > 0:
                out["bce"] = zero.detach()
            if leak_weight > 0:
                out["leak"] = zero.detach()
            if return_ownership:
                out["ownership"] = full_rows(mask_logits.new_zeros(0, num_queries))
                out["dustbin_ownership"] = mask_logits.new_ones(num_queries).detach()
            return out

        # Per-pair (K, Q) mask costs of Mask2Former, from rows of the statistics, computed once when
        # the owner's terms or the ownership need them.
        num_points = targets.point_mass.to(claims.dtype)  # P, or the total weight of weighted points
        areas = targets.areas.to(claims.dtype)[:, None]  # (K, 1)
        pair_bce = pair_dice = None
        if bce_weight > 0 or ownership_mask_cost > 0:
            # BCE(z, y) = softplus(z) - y z: its mean over all points is the mean softplus minus
            # (area / P) times the mean logit on the instance.
            pair_bce = mean_softplus[None, :] - areas / num_points * lin_parts[0]
        if with_sigmoid:  # dice loss, +1 smoothed
            sig_parts = parts[2 * len(groups):]  # weighted means of s
            overlap = areas * sig_parts[0]  # sum_{p in k} s, (K, Q)
            total = sig_parts[1][0] * num_points  # sum_p s, (Q,)
            pair_dice = 1.0 - (2.0 * overlap + 1.0) / (total[None, :] + areas + 1.0)

        # What the ownership sees. A detached ownership is a constant of the loss (as a matcher's
        # assignment is): its scores are taken detached, so the plan builds no graph.
        plan_input = (lambda t: t.detach()) if detach_ownership else (lambda t: t)
        own_claims = plan_input(claims)
        if ownership_bias is not None:
            if ownership_bias.shape != (targets.kept.shape[0], num_queries):
                raise ValueError(f"ownership_bias must be (K, Q) = ({targets.kept.shape[0]}, {num_queries}); "
                                 f"got {tuple(ownership_bias.shape)}")
            own_claims = own_claims + ownership_bias.detach().to(claims.dtype)[targets.kept]
        own_silence = plan_input(silence)
        if ownership_mask_cost > 0:
            own_claims = own_claims - ownership_mask_cost * plan_input(pair_bce + pair_dice)
        if claim_floor is not None:
            # Scores below the floor are equal for the ownership: a silent query (g -> -inf) stays a
            # candidate, so the normalisation can enforce query capacity in a few iterations and an
            # instance whose best claimant is taken recruits a silent query (which its pull wakes up).
            own_claims, own_silence = own_claims.clamp(min=claim_floor), own_silence.clamp(min=claim_floor)
        if ownership_spread_floor is not None and num_queries > 1:
            # the rows the plan sees (instances, and the dustbin when Q > K), double-centred: a plan
            # is unchanged by adding a constant to a row or a column, so only this part decides it
            scores = torch.cat([own_claims, own_silence[None]]) if num_queries > num_inst else own_claims
            centred = scores - scores.mean(dim=1, keepdim=True) - scores.mean(dim=0, keepdim=True) + scores.mean()
            spread = centred.pow(2).mean().sqrt()
            scale = (ownership_spread_floor / spread.clamp(min=1e-6)).clamp(min=1.0)  # only ever sharpens
            own_claims, own_silence = own_claims * scale, own_silence * scale
        log_own = yield own_claims, own_silence
        plan = log_own[:num_inst].exp()  # (K, Q): each query's share of each instance, rows sum to its mass
        # the weight of each query's per-pair terms on each instance: rows sum to 1 (a one-to-few
        # plan's claimants share it)
        own = plan if instance_mass == 1.0 else plan / plan.sum(dim=1, keepdim=True)
        # A term of weight 0 is computed from detached inputs, so that no statistic it reads gets a
        # backward product -- and only when its value is to be reported.
        def live(term_weight: float, t: Tensor) -> Tensor:
            return t if term_weight else t.detach()

        owned_mass = plan.detach().sum(dim=0).clamp(max=1.0) if free_non_owners else None  # (Q,), 0: dustbin
        terms, out = [], {}
        if attr_weight or report_unweighted:
            attractive = -(own * live(attr_weight, claims)).sum(dim=1).mean()
            terms.append((attr_weight, attractive))
            out["attractive"] = attractive.detach()
        if rep_weight or report_unweighted:
            repulsive = profile_repulsion(live(rep_weight, claims), rep_margin) if num_inst > 1 else zero
            terms.append((rep_weight, repulsive))
            out["repulsive"] = repulsive.detach()
        if bg_weight or report_unweighted:
            if free_non_owners:
                bg_term = (bg_mean * owned_mass).sum()
            bg_term = live(bg_weight, bg_term)
            terms.append((bg_weight, bg_term))
            out["background"] = bg_term.detach()
        if excl_weight or report_unweighted:
            # Exclusion on each instance's exclusive points: every non-owner must say "no" there.
            weight = 1.0 - plan
            if exclusion == "share":
                # ... pushed in proportion to its share of the "yes" on the instance, so the total push
                # on a point balances the owner's single pull (with "sum", Q - 1 non-owners outvote it
                # through shared network features). A share is 0 only for a query already silent on k:
                # same zero set, same unique minimum. See docs/loss.md for what each choice measured.
                weight = weight * exclusive_mean / exclusive_mean.sum(dim=1, keepdim=True).clamp(min=1e-12)
            elif exclusion == "owned":
                # ... pushed only as strongly as someone already owns the instance: max_q own[k, q] is
                # 1/Q while the ownership is undecided (a symmetric start, where the summed push would
                # silence every query) and 1 at the one-to-one assignment. It is > 0, so the zero set
                # -- and the unique minimum -- are those of "sum".
                weight = weight * plan.amax(dim=1, keepdim=True)
            if query_objectness is not None:
                weight = weight * query_objectness[None, :]
            if free_non_owners:
                weight = weight * owned_mass[None, :]
            if exclusion_scale == "point":
                exclusive_mean = exclusive_mean * (targets.exclusive_areas.to(exclusive_mean.dtype)
                                                   / num_points)[:, None]
            exclusion_term = (live(excl_weight, weight) * live(excl_weight, exclusive_mean)).sum(dim=1).mean()
            terms.append((excl_weight, exclusion_term))
            out["exclusion"] = exclusion_term.detach()
        if dice_weight > 0:
            dice_term = (own * pair_dice).sum(dim=1).mean()
            terms.append((dice_weight, dice_term))
            out["dice"] = dice_term.detach()
        if bce_weight > 0:
            bce_term = (own * pair_bce).sum(dim=1).mean()
            terms.append((bce_weight, bce_term))
            out["bce"] = bce_term.detach()
        if leak_weight > 0:
            # sum of softplus outside k = sum over all points - sum over k's points, per unit of k's area
            outside = num_points * mean_softplus[None, :] - areas * claims_softplus
            leak_term = (own * outside.clamp(min=0.0) / areas).sum(dim=1).mean()
            terms.append((leak_weight, leak_term))
            out["leak"] = leak_term.detach()
        out["loss"] = _weighted_sum(terms, zero)
        if return_ownership:
            out["ownership"] = full_rows(plan)
            if log_own.shape[0] > num_inst:
                out["dustbin_ownership"] = log_own[num_inst].exp().detach()
            else:
                out["dustbin_ownership"] = (1.0 - plan.sum(dim=0)).clamp(min=0.0).detach()
        return out

    results = _with_batched_plans([loss_steps(**problem) for problem in problems], temperature, sinkhorn_iters,
                                  anneal_ownership, instance_mass)
    return results if batched else results[0]


def _with_batched_plans(steps: List, temperature: float, num_iters: int, anneal: bool,
                        instance_mass: float) -> List[Dict[str, Tensor]]:
    """Run generators of :func:`mask_influencer_loss`'s ``loss_steps`` with one batched Sinkhorn for all."""
    results: List = [None] * len(steps)
    waiting = []
    for index, step in enumerate(steps):
        try:
            waiting.append((index, step, next(step)))
        except StopIteration as done:  # no plan needed (the original formulation, no instances)
            results[index] = done.value
    plans = batched_sinkhorn_ownership([scores[0] for _, _, scores in waiting],
                                       [scores[1] for _, _, scores in waiting], temperature, num_iters, anneal,
                                       instance_mass)
    for (index, step, _), plan in zip(waiting, plans):
        try:
            step.send(plan)
            raise RuntimeError("an Influencer loss step asked for a second ownership plan")
        except StopIteration as done:
            results[index] = done.value
    return results


def _per_problem(batched: bool, **arguments) -> List[Dict]:
    """The per-problem arguments of :func:`mask_influencer_loss` as one keyword dict per problem."""
    if not batched:
        return [arguments]
    count = len(arguments["mask_logits"])
    for name, value in arguments.items():
        if value is not None and (isinstance(value, Tensor) or len(value) != count):
            got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else f"{len(value)} items"
            raise ValueError(f"mask_logits is a sequence of {count} problems, so {name} must be a sequence of "
                             f"{count} too; got {got}")
    return [{name: (None if value is None else value[n]) for name, value in arguments.items()} for n in range(count)]


def _weighted_sum(terms, zero: Tensor) -> Tensor:
    """``zero + sum(weight * term)`` over the terms of non-zero weight (``zero`` keeps the graph)."""
    total = zero
    for term_weight, term in terms:
        if term_weight:
            total = total + term_weight * term
    return total


class MaskInfluencerLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`mask_influencer_loss` holding its keywords."""

    def __init__(self, *, formulation: str = "exclusive", attr_weight: float = 1.0,
                 rep_weight: float = 1.0, bg_weight: float = 1.0, excl_weight: float = 1.0,
                 rep_margin: float = 1.0, temperature: Optional[float] = None,
                 sinkhorn_iters: int = 40, exclusion: str = "sum", dice_weight: float = 0.0,
                 detach_ownership: bool = True, claim_floor: Optional[float] = None,
                 anneal_ownership: bool = True, bce_weight: float = 0.0,
                 ownership_spread_floor: Optional[float] = None, ownership_mask_cost: float = 0.0,
                 leak_weight: float = 0.0, objectness_background: bool = False,
                 free_non_owners: bool = False, exclusion_scale: str = "instance", instance_mass: float = 1.0):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}; got {formulation!r}")
        self.kwargs = dict(formulation=formulation, attr_weight=attr_weight, rep_weight=rep_weight,
                           bg_weight=bg_weight, excl_weight=excl_weight, rep_margin=rep_margin,
                           temperature=temperature, sinkhorn_iters=sinkhorn_iters, exclusion=exclusion,
                           dice_weight=dice_weight, detach_ownership=detach_ownership,
                           claim_floor=claim_floor, anneal_ownership=anneal_ownership,
                           bce_weight=bce_weight, ownership_spread_floor=ownership_spread_floor,
                           ownership_mask_cost=ownership_mask_cost, leak_weight=leak_weight,
                           objectness_background=objectness_background, free_non_owners=free_non_owners,
                           exclusion_scale=exclusion_scale, instance_mass=instance_mass)

    def forward(self, mask_logits: Tensor, target_masks: Tensor, return_ownership: bool = False,
                ownership_bias: Optional[Tensor] = None,
                query_objectness: Optional[Tensor] = None,
                point_weights: Optional[Tensor] = None) -> Dict[str, Tensor]:
        return mask_influencer_loss(mask_logits, target_masks, return_ownership=return_ownership,
                                    ownership_bias=ownership_bias, query_objectness=query_objectness,
                                    point_weights=point_weights, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items())


SQRT2 = math.sqrt(2.0)
