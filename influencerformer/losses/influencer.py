"""The mask-matrix Influencer loss: queries claim GT instances without a matcher.

Shapes follow Mask2Former / OneFormer3D: ``mask_logits`` is (Q, P) for Q queries over P
points (pixels or superpoints), ``target_masks`` is (K, P) for K ground-truth instances.

Two formulations share the claim scores and the repulsion:

* ``"original"`` -- the first InfluencerFormer formula. Its soft-max attraction grows with
  every extra query that claims an instance, so it *rewards* duplicate claims
  (see ``docs/loss.md``). Kept for reproduction and comparisons.
* ``"exclusive"`` -- the corrected formula (default). Every term is non-negative and all of
  them vanish exactly at the one-to-one assignment, which is therefore the unique global
  minimum up to permuting queries (for K <= Q). Derivation in ``docs/loss.md``.

Internally every problem is batched: (B, L, Q, P) logits -- the images and decoder layers of a
step -- against :class:`PointTargets` padded to fixed shapes, so a step is one fixed sequence of
operations with no host sync. :func:`mask_influencer_loss` is the one-problem (or list of
problems) interface over the same code.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from influencerformer.losses.mask import pair_mask_costs, point_statistics
from influencerformer import matching  # a module reference: matching imports losses.mask
from influencerformer.targets import pad_targets, prefix_mask
from influencerformer.utils import float32_no_autocast

FORMULATIONS = ("original", "exclusive")
EXCLUSIONS = ("sum", "owned")
POTENTIALS = ("attractive", "repulsive", "background", "exclusion")
REPULSION_MARGIN = 1.0  # profiles closer than this (in probability units) repel


def resolve_temperature(formulation: str, temperature: Optional[float]) -> float:
    """The soft-selection temperature: ``temperature``, or the formulation's default (1.0 for
    "original", 0.2 for "exclusive")."""
    if temperature is not None:
        return temperature
    return 1.0 if formulation == "original" else 0.2


def claim_scores(log_probs: Tensor, target_masks: Tensor) -> Tensor:
    """Log geometric mean of each query's probability over each instance.

    Args:
        log_probs: (Q, P) ``logsigmoid(mask_logits)``.
        target_masks: (K, P) float masks (0/1, or soft weights).
    Returns:
        (K, Q) ``g[k, q] = mean_{p in k} log sigmoid(z[q, p])``; 0 means unanimous "yes".
    """
    area = target_masks.sum(dim=1, keepdim=True).clamp(min=1e-6)
    return (target_masks / area) @ log_probs.transpose(0, 1)


class PointTargets(NamedTuple):
    """A step's GT on the points the loss sees, padded: (B, K) instances, (B, P) points.

    ``rows`` (B, R, P) are the point weights of every mean the loss takes: each instance's points
    (K rows), all points, the background[, each instance's exclusive points (K rows)].
    """

    rows: Tensor
    masks: Tensor  # (B, K, P) in [0, 1], 0 at invalid instances and padded points
    labels: Tensor  # (B, K) long
    valid: Tensor  # (B, K) bool: a real instance with at least one point
    areas: Tensor  # (B, K) its point count
    num_points: Tensor  # (B,) the real points of each image

    @property
    def num_instances(self) -> int:
        return self.valid.shape[1]

    @property
    def with_exclusive(self) -> bool:
        return self.rows.shape[1] > self.num_instances + 2


def point_targets(masks: Tensor, labels: Tensor, present: Tensor, point_valid: Optional[Tensor] = None,
                  with_exclusive: bool = False) -> PointTargets:
    """(B, K, P) masks at the loss's points, (B, K) labels and present slots -> :class:`PointTargets`.

    ``point_valid`` (B, P) marks real points (None: all). ``with_exclusive`` adds the rows of each
    instance's points that no other instance covers (the exclusion potential reads them).
    """
    if point_valid is None:
        weights, num_points = None, masks.new_full((masks.shape[0],), masks.shape[2])
    else:
        weights = point_valid.to(masks.dtype)
        masks, num_points = masks * weights[:, None, :], weights.sum(dim=1)
    areas = masks.sum(dim=2)
    valid = present & (areas > 0)
    keep = valid.to(masks.dtype)
    masks, areas = masks * keep[..., None], areas * keep
    background = 1.0 - masks.amax(dim=1)
    if weights is not None:
        background = background * weights
    else:
        weights = masks.new_ones(masks.shape[0], masks.shape[2])
    rows = [masks / areas.clamp(min=1e-6)[..., None], (weights / num_points[:, None])[:, None],
            (background / background.sum(dim=1, keepdim=True).clamp(min=1e-6))[:, None]]
    if with_exclusive:
        only_here = masks * (masks.sum(dim=1, keepdim=True) <= 1.0)
        rows.append(only_here / only_here.sum(dim=2, keepdim=True).clamp(min=1e-6))
    return PointTargets(torch.cat(rows, dim=1), masks, labels, valid, areas, num_points)


class MaskStatistics(NamedTuple):
    """What the losses and the assigner read from (B, L, Q, P) mask logits; (B, L, K, Q) per pair."""

    claims: Tensor  # (B, L, K, Q) mean log-probability over each instance
    silence: Tensor  # (B, L, Q) mean log(1 - s) over all points
    pair_bce: Tensor  # (B, L, K, Q)
    pair_dice: Optional[Tensor]  # (B, L, K, Q)
    background_softplus: Tensor  # (B, L, Q) mean -log(1 - s) over the background
    background_prob: Optional[Tensor]  # (B, L, Q) mean s over the background
    exclusive_softplus: Optional[Tensor]  # (B, L, K, Q) mean -log(1 - s) over each instance's own points


def mask_statistics(logits: Tensor | Sequence[Tensor], targets: PointTargets, with_sigmoid: bool) -> MaskStatistics:
    """Mask logits -> :class:`MaskStatistics`: one fused pass over the points.

    ``logits``: (B, L, Q, P); or, for scenes of different sizes, B tensors (L, Q_b, P_b) -- each
    scene's pass then reads its own points only, and only the small (rows, L, Q_b) results are
    padded, never the (L, Q, P) logits.
    """
    k = targets.num_instances
    groups = (k, 1, 1) + ((k,) if targets.with_exclusive else ())

    def statistics(z: Tensor, rows: Tensor) -> List[Tensor]:  # (B, L, Q, P) -> parts (B, L, rows, Q)
        batch, layers, queries, points = z.shape
        parts = point_statistics(z.reshape(batch, layers * queries, points), rows, groups, with_sigmoid)
        return [part.view(batch, -1, layers, queries).transpose(1, 2) for part in parts]

    if isinstance(logits, Tensor):
        parts = statistics(logits, targets.rows)
    else:
        q_max = max(z.shape[1] for z in logits)
        per_scene = [statistics(z[None], targets.rows[b:b + 1, :, : z.shape[2]]) for b, z in enumerate(logits)]
        parts = [torch.cat([F.pad(scene[i], (0, q_max - scene[i].shape[-1])) for scene in per_scene])
                 for i in range(len(per_scene[0]))]
    # per statistic, its row groups: softplus means, logit means[, probability means]
    softplus, linear, prob = [parts[i:i + len(groups)] if i < len(parts) else None
                              for i in range(0, 3 * len(groups), len(groups))]
    areas = targets.areas[:, None, :, None]
    num_points = targets.num_points[:, None, None, None]
    mean_softplus = softplus[1][:, :, 0]
    bce, dice = pair_mask_costs(mean_softplus, linear[0], None if prob is None else prob[0],
                                None if prob is None else prob[1][:, :, 0] * num_points[..., 0], areas, num_points)
    return MaskStatistics(claims=linear[0] - softplus[0], silence=-mean_softplus, pair_bce=bce, pair_dice=dice,
                          background_softplus=softplus[2][:, :, 0],
                          background_prob=None if prob is None else prob[2][:, :, 0],
                          exclusive_softplus=softplus[3] if targets.with_exclusive else None)


def instance_mean(values: Tensor, valid: Tensor) -> Tensor:
    """(B, L, K) per-instance values -> (B, L) mean over each image's valid instances (0 when none)."""
    keep = valid.to(values.dtype)
    return (values * keep[:, None]).sum(dim=-1) / keep.sum(dim=-1, keepdim=True).clamp(min=1.0)


def profile_repulsion(claims: Tensor, valid: Tensor, query_valid: Tensor) -> Tensor:
    """Hinge ``max(0, margin - ||exp(g_k) - exp(g_l)||)`` averaged over ordered pairs of valid k != l.

    (B, L, K, Q) claims, (B, K) valid instances, (B, Q) valid queries -> (B, L); 0 with fewer than
    two instances. Gram expansion of the distances: no (K, K, Q) tensor.
    """
    profiles = claims.exp() * query_valid[:, None, None, :]
    gram = profiles @ profiles.transpose(-1, -2)
    sq_norm = gram.diagonal(dim1=-2, dim2=-1)  # from the same products, so identical profiles cancel exactly
    sq_dist = sq_norm[..., :, None] + sq_norm[..., None, :] - 2.0 * gram
    # eps keeps d(sqrt) finite for identical profiles (their difference gradient is exactly 0)
    dist = (sq_dist.clamp(min=0.0) + 1e-12).sqrt()
    eye = torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
    pairs = (valid[:, :, None] & valid[:, None, :] & ~eye)[:, None]  # (B, 1, K, K)
    hinge = F.relu(REPULSION_MARGIN - dist) * pairs
    return hinge.sum(dim=(-2, -1)) / pairs.sum(dim=(-2, -1)).clamp(min=1)


def hard_owners(ownership: Tensor, valid: Tensor) -> Tensor:
    """One-hot (B, L, K, Q) owners for the "original" formulation (its classification targets).

    The owner of instance k is its highest-ownership query. When one query is the best for
    several instances it takes the class of the instance it claims most strongly (the first on
    ties); the other instances then have no owner (recruiting a second query would be a matching
    step, which this formulation does not have). Invalid instances own nothing.
    """
    best, owner = ownership.max(dim=-1)  # (B, L, K)
    best = best.masked_fill(~valid[:, None], -1.0)
    queries = torch.arange(ownership.shape[-1], device=ownership.device)
    chosen = (owner[..., None] == queries) & valid[:, None, :, None]  # (B, L, K, Q); F.one_hot reads back
    strongest = torch.where(chosen, best[..., None], -1.0).amax(dim=-2, keepdim=True)  # (B, L, 1, Q)
    winners = chosen & (best[..., None] >= strongest)
    first = winners.float().argmax(dim=-2, keepdim=True)  # the first winning instance of each query
    keep = winners & (torch.arange(ownership.shape[-2], device=ownership.device)[:, None] == first)
    return keep.to(ownership.dtype)


class InfluencerPotentials(nn.Module):
    """The Influencer potentials as a loss term: attraction, repulsion, background, exclusion.

    ``"exclusive"`` (default): with the ownership plan ``own`` (K, Q) --
    attraction ``-mean_k sum_q own[k, q] g[k, q]`` (the claims ``g`` of :func:`claim_scores`),
    exclusion ``mean_k sum_q (1 - own[k, q]) mean_{p in k only} softplus(z_qp)`` (every non-owner
    says "no" on the instance's own points; ``exclusion="owned"`` scales it by
    ``max_q own[k, q]``, 1/Q while the ownership is undecided and 1 once owned), background
    ``sum_q mean_{p in bg} softplus(z_qp)`` and the repulsion hinge between the instances' claim
    profiles. Each is >= 0 and all vanish at the one-to-one assignment: the unique minimum.

    ``"original"``: attraction ``-mean_k T logsumexp_q(g[k, q] / T)``, the repulsion and
    ``mean_q mean_{p in bg} s_qp``; its ownership (classification only) is ``softmax_q(g / T)``.

    Args:
        formulation: "exclusive" or "original".
        attr_weight, rep_weight, bg_weight, excl_weight: the terms' weights (0: not computed).
        exclusion: "sum" or "owned" (exclusive only).
        temperature: the original formulation's soft-max temperature (default 1.0).
    """

    def __init__(self, formulation: str = "exclusive", attr_weight: float = 1.0, rep_weight: float = 1.0,
                 bg_weight: float = 1.0, excl_weight: float = 1.0, exclusion: str = "sum",
                 temperature: Optional[float] = None):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}; got {formulation!r}")
        if exclusion not in EXCLUSIONS:
            raise ValueError(f"exclusion must be one of {EXCLUSIONS}; got {exclusion!r}")
        self.formulation, self.exclusion = formulation, exclusion
        self.temperature = resolve_temperature("original", temperature)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.weights = {"attractive": attr_weight, "repulsive": rep_weight, "background": bg_weight,
                        "exclusion": excl_weight if formulation == "exclusive" else 0.0}

    @property
    def needs_exclusive_points(self) -> bool:
        return bool(self.weights["exclusion"])

    @property
    def needs_sigmoid(self) -> bool:
        return self.formulation == "original" and bool(self.weights["background"])

    def ownership(self, stats: MaskStatistics, query_valid: Tensor) -> Tensor:
        """The original formulation's (B, L, K, Q) soft ownership, ``softmax_q(g / T)``."""
        claims = stats.claims.masked_fill(~query_valid[:, None, None, :], matching.PADDING_LOG_MASS)
        return torch.softmax(claims / self.temperature, dim=-1)

    def terms(self, stats: MaskStatistics, plan: Optional[Tensor], own: Optional[Tensor], targets: PointTargets,
              query_valid: Tensor, names: Sequence[str]) -> Dict[str, Tensor]:
        """The named potentials, each (B, L). Exclusive only: ``plan`` the (B, L, K, Q) ownership,
        ``own`` its rows divided by their mass (the same for a one-to-one plan): the attraction
        weighs each claimant by its share of the instance, the exclusion spares every claimant."""
        out, valid = {}, targets.valid
        if "attractive" in names:
            if self.formulation == "original":
                claims = stats.claims.masked_fill(~query_valid[:, None, None, :], matching.PADDING_LOG_MASS)
                soft_max = self.temperature * torch.logsumexp(claims / self.temperature, dim=-1)
                out["attractive"] = -instance_mean(soft_max, valid)
            else:
                out["attractive"] = -instance_mean((own * stats.claims).sum(dim=-1), valid)
        if "repulsive" in names:
            out["repulsive"] = profile_repulsion(stats.claims, valid, query_valid)
        if "background" in names:
            if self.formulation == "original":
                out["background"] = ((stats.background_prob * query_valid[:, None]).sum(dim=-1)
                                     / query_valid.sum(dim=-1, keepdim=True))
            else:
                out["background"] = (stats.background_softplus * query_valid[:, None]).sum(dim=-1)
        if "exclusion" in names:
            weight = (1.0 - plan) * query_valid[:, None, None, :]
            if self.exclusion == "owned":
                weight = weight * plan.amax(dim=-1, keepdim=True)
            out["exclusion"] = instance_mean((weight * stats.exclusive_softplus).sum(dim=-1), valid)
        return out

    def forward(self, stats: MaskStatistics, plan: Optional[Tensor], own: Optional[Tensor], targets: PointTargets,
                query_valid: Tensor) -> Tensor:
        """The weighted sum of the potentials, (B, L)."""
        names = [name for name, weight in self.weights.items() if weight]
        terms = self.terms(stats, plan, own, targets, query_valid, names)
        total = stats.silence.new_zeros(stats.silence.shape[:2])
        for name in names:
            total = total + self.weights[name] * terms[name]
        return total

    def extra_repr(self) -> str:
        weights = ", ".join(f"{k}={v}" for k, v in self.weights.items())
        return f"formulation={self.formulation}, {weights}, exclusion={self.exclusion}, temperature={self.temperature}"


def owner_losses(own: Tensor, stats: MaskStatistics, valid: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """Mask2Former's per-pair BCE and dice weighed by the ownership: (B, L) each.

    ``mean_k sum_q own[k, q] BCE(z_q, M_k)`` over each image's valid instances (the same for the
    dice); with one-hot ``own`` this is the matched pairs' loss. ``own`` (B, L, K, Q): rows sum to 1.
    """
    bce = instance_mean((own * stats.pair_bce).sum(dim=-1), valid)
    dice = None if stats.pair_dice is None else instance_mean((own * stats.pair_dice).sum(dim=-1), valid)
    return bce, dice


def pad_problems(mask_logits: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
    """N tensors (Q_n, P_n) -> (N, 1, Q_max, P_max) zero-padded logits and the (N, Q_max) valid queries."""
    q_max = max(z.shape[0] for z in mask_logits)
    p_max = max(z.shape[1] for z in mask_logits)
    logits = torch.stack([F.pad(z, (0, p_max - z.shape[1], 0, q_max - z.shape[0])) for z in mask_logits])
    query_valid = prefix_mask([z.shape[0] for z in mask_logits], q_max, logits.device)
    return logits[:, None], query_valid


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
    temperature: Optional[float] = None,
    sinkhorn_iters: int = 40,
    exclusion: str = "sum",
    anneal_ownership: bool = True,
    detach_ownership: bool = True,
    bce_weight: float = 0.0,
    dice_weight: float = 0.0,
    queries_per_instance: float = 1.0,
    ownership_bias: Optional[Tensor | Sequence[Tensor]] = None,
    return_ownership: bool = False,
) -> Dict[str, Tensor] | List[Dict[str, Tensor]]:
    """Influencer loss of one image / scene, or of several at once.

    Args:
        mask_logits: (Q, P) mask logits; or a sequence of N of them: then ``target_masks`` (and
            ``ownership_bias``) are sequences of N too and the result is a list of N dicts, each
            equal to its problem's own loss, computed in one batched pass.
        target_masks: (K, P) GT instance masks, bool or float in [0, 1], may overlap; K = 0 and
            K > Q are legal. A point in no mask is background. Instances with no points are ignored.
        formulation: ``"exclusive"`` (default, one-to-one minimum) or ``"original"``.
        attr_weight, rep_weight, bg_weight, excl_weight: the potentials' weights
            (:class:`InfluencerPotentials`; the exclusion is "exclusive" only).
        temperature: soft-selection temperature; default 1.0 for "original" (its soft-max), 0.2 for
            "exclusive" (its ownership plan).
        sinkhorn_iters, anneal_ownership, detach_ownership: the exclusive formulation's ownership
            plan (:class:`~influencerformer.matching.SinkhornAssigner`): 40 annealed iterations by
            default. The uniqueness of the minimum assumes a plan within query capacity; 10 plain
            iterations let a query that merges two instances own both (docs/loss.md, "The merge trap").
            ``detach_ownership`` (default) uses the plan as constant weights, as a matcher's
            assignment is; the value, hence the minimum, is the same either way.
        exclusion: "sum" (every non-owner pushed with weight ``1 - own``) or "owned" (also scaled
            by the instance's largest ownership: no collapse at symmetric starts).
        bce_weight, dice_weight: "exclusive" only; > 0 adds the owner's Mask2Former BCE / dice
            (:func:`owner_losses`): >= 0, 0 at the one-to-one assignment.
        queries_per_instance: "exclusive" only; m >= 1 gives each instance about m owners in the
            plan (a one-to-few plan), each weighing 1/m of the per-pair terms; the minimum is then
            m copies of each instance.
        ownership_bias: "exclusive" only; (K, Q) scores added (detached) to what the plan sees,
            never to the loss terms (e.g. class evidence, as a matcher's class cost).
        return_ownership: also return the detached (K, Q) ownership (``"ownership"``; classification
            targets) and the dustbin row (``"dustbin_ownership"``, (Q,)).
    Returns:
        dict with ``loss`` (differentiable) and the detached terms ``attractive``, ``repulsive``,
        ``background`` (and ``exclusion`` for "exclusive"), ``bce`` and ``dice`` when weighted.
    """
    temperature = resolve_temperature(formulation, temperature)
    potentials = InfluencerPotentials(formulation, attr_weight, rep_weight, bg_weight, excl_weight, exclusion,
                                      temperature if formulation == "original" else None)
    exclusive = formulation == "exclusive"
    if not exclusive and (bce_weight or dice_weight or queries_per_instance != 1.0 or ownership_bias is not None):
        raise ValueError("bce_weight, dice_weight, queries_per_instance and ownership_bias need "
                         f"formulation='exclusive' (the original has no ownership plan); got {formulation!r}")
    matching.check_queries_per_instance(queries_per_instance, sinkhorn_iters)
    assigner = matching.SinkhornAssigner(0.0, 0.0, 0.0, temperature, sinkhorn_iters, anneal_ownership, detach_ownership)
    batched = not isinstance(mask_logits, Tensor)
    logits_list = list(mask_logits) if batched else [mask_logits]
    masks_list = list(target_masks) if batched else [target_masks]
    if batched and isinstance(ownership_bias, Tensor):
        raise ValueError(f"mask_logits is a sequence of {len(logits_list)} problems, so ownership_bias must be a "
                         f"sequence of {len(logits_list)} too; got a tensor of shape {tuple(ownership_bias.shape)}")
    bias_list = (list(ownership_bias) if batched else [ownership_bias]) if ownership_bias is not None else None
    if batched and (len(masks_list) != len(logits_list) or (bias_list is not None and len(bias_list) != len(logits_list))):
        raise ValueError(f"mask_logits is a sequence of {len(logits_list)} problems, so target_masks (and "
                         f"ownership_bias) must be sequences of {len(logits_list)} too; got {len(masks_list)}")
    for n, (z, m) in enumerate(zip(logits_list, masks_list)):
        where = f"problem {n}: " if batched else ""
        if z.dim() != 2:
            raise ValueError(f"{where}mask_logits must be (Q, P); got shape {tuple(z.shape)}")
        if m.dim() != 2 or m.shape[1] != z.shape[1]:
            raise ValueError(f"{where}mask_logits {tuple(z.shape)} and target_masks {tuple(m.shape)} must be "
                             f"(Q, P) and (K, P) with one number of points P")
        if bias_list is not None and bias_list[n].shape != (m.shape[0], z.shape[0]):
            raise ValueError(f"{where}ownership_bias must be (K, Q) = ({m.shape[0]}, {z.shape[0]}); "
                             f"got {tuple(bias_list[n].shape)}")
    logits, query_valid = pad_problems(logits_list)
    padded = pad_targets([{"labels": m.new_zeros(m.shape[0], dtype=torch.long), "masks": m} for m in masks_list],
                         point_form=True, mask_shapes=[tuple(z.shape) for z in logits_list], pad_to=1)
    targets = point_targets(padded.masks, padded.labels, padded.present, padded.point_valid,
                            with_exclusive=exclusive)  # every potential is reported, weighted or not
    stats = mask_statistics(logits, targets, with_sigmoid=not exclusive or dice_weight > 0)
    plan = own = dustbin = None
    if exclusive:
        scores = assigner.scores(stats.claims, stats.silence)
        if bias_list is not None:
            bias = torch.stack([F.pad(b.detach().to(scores), (0, logits.shape[2] - b.shape[1],
                                                              0, targets.num_instances - b.shape[0]))
                                for b in bias_list])
            scores = scores + F.pad(bias, (0, 0, 0, 1))[:, None]
        log_row, log_col, row_mass = matching.plan_marginals(targets.valid, query_valid, queries_per_instance)
        log_plan = assigner(scores, log_row[:, None], log_col[:, None])
        plan, dustbin = log_plan[:, :, :-1].exp(), log_plan[:, :, -1].exp()
        own = plan / row_mass[:, None, :, None] if isinstance(row_mass, Tensor) else plan
    names = [name for name in POTENTIALS if name in potentials.weights and (exclusive or name != "exclusion")]
    terms = potentials.terms(stats, plan, own, targets, query_valid, names)
    loss = sum((potentials.weights[name] * terms[name] for name in names if potentials.weights[name]),
               logits.sum() * 0.0)
    if bce_weight or dice_weight:
        bce, dice = owner_losses(own, stats, targets.valid)
        if bce_weight:
            loss, terms["bce"] = loss + bce_weight * bce, bce
        if dice_weight:
            loss, terms["dice"] = loss + dice_weight * dice, dice
    results = []
    for n, (z, m) in enumerate(zip(logits_list, masks_list)):
        out = {"loss": loss[n, 0]}
        out.update({name: value[n, 0].detach() for name, value in terms.items()})
        if return_ownership:
            k, q = m.shape[0], z.shape[0]
            ownership = plan if exclusive else potentials.ownership(stats, query_valid) * targets.valid[:, None, :, None]
            out["ownership"] = ownership[n, 0, :k, :q].detach()
            out["dustbin_ownership"] = (dustbin[n, 0, :q] if exclusive else
                                        (1.0 - out["ownership"].sum(dim=0)).clamp(min=0.0)).detach()
        results.append(out)
    return results if batched else results[0]


class MaskInfluencerLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`mask_influencer_loss` holding its keywords."""

    def __init__(self, **kwargs):
        super().__init__()
        mask_influencer_loss(torch.zeros(1, 1), torch.zeros(0, 1), **kwargs)  # validates the keywords
        self.kwargs = kwargs

    def forward(self, mask_logits: Tensor, target_masks: Tensor, return_ownership: bool = False,
                ownership_bias: Optional[Tensor] = None) -> Dict[str, Tensor]:
        return mask_influencer_loss(mask_logits, target_masks, return_ownership=return_ownership,
                                    ownership_bias=ownership_bias, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
