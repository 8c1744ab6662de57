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
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from influencerformer.utils import float32_no_autocast

FORMULATIONS = ("original", "exclusive")


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


def sinkhorn_ownership(claims: Tensor, dustbin: Tensor, temperature: float, num_iters: int) -> Tensor:
    """Soft one-to-one ownership of instances by queries (log-domain Sinkhorn).

    Rows are the K instances plus, when Q > K, a "dustbin" row of mass Q - K that absorbs the
    queries left without an instance; every query (column) has capacity max(1, K / Q). With
    ``num_iters == 0`` this is a plain softmax over queries per instance (no dustbin).
    A fixed number of normalisations; no solver, no argmax.

    Args:
        claims: (K, Q) claim scores ``g``.
        dustbin: (Q,) the score of each query for "no instance" (its silence).
    Returns:
        (K + d, Q) log ownership, d = 1 if a dustbin row is present else 0; each of the first
        K rows sums to 1 (exactly: the last normalisation is over rows).
    """
    num_inst, num_queries = claims.shape
    if num_iters <= 0:
        return torch.log_softmax(claims / temperature, dim=1)
    has_dustbin = num_queries > num_inst
    scores = claims / temperature
    row_mass = claims.new_ones(num_inst)
    if has_dustbin:
        scores = torch.cat([scores, dustbin[None, :] / temperature], dim=0)
        row_mass = torch.cat([row_mass, row_mass.new_tensor([num_queries - num_inst])])
    col_mass = claims.new_full((num_queries,), max(1.0, num_inst / num_queries))
    log_row, log_col = row_mass.log(), col_mass.log()
    log_u = torch.zeros_like(log_row)
    log_v = torch.zeros_like(log_col)
    for _ in range(num_iters):
        log_v = log_col - torch.logsumexp(scores + log_u[:, None], dim=0)
        log_u = log_row - torch.logsumexp(scores + log_v[None, :], dim=1)
    return scores + log_u[:, None] + log_v[None, :]


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


def _validate(mask_logits: Tensor, target_masks: Tensor, formulation: str, temperature: float) -> None:
    if mask_logits.dim() != 2:
        raise ValueError(f"mask_logits must be (Q, P); got shape {tuple(mask_logits.shape)}")
    if target_masks.dim() != 2:
        raise ValueError(f"target_masks must be (K, P); got shape {tuple(target_masks.shape)}")
    if target_masks.shape[1] != mask_logits.shape[1]:
        raise ValueError(
            f"mask_logits {tuple(mask_logits.shape)} and target_masks {tuple(target_masks.shape)} "
            "disagree on the number of points P (dim 1)"
        )
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}; got {formulation!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")


@float32_no_autocast
def mask_influencer_loss(
    mask_logits: Tensor,
    target_masks: Tensor,
    *,
    formulation: str = "exclusive",
    attr_weight: float = 1.0,
    rep_weight: float = 1.0,
    bg_weight: float = 1.0,
    excl_weight: float = 1.0,
    rep_margin: float = 1.0,
    temperature: Optional[float] = None,
    sinkhorn_iters: int = 10,
    return_ownership: bool = False,
) -> Dict[str, Tensor]:
    """Influencer loss of one image / scene.

    Args:
        mask_logits: (Q, P) mask logits.
        target_masks: (K, P) GT instance masks, bool or float, may overlap; K = 0 and K > Q
            are legal. A point in no mask is background. Instances with no points are ignored.
        formulation: ``"exclusive"`` (default, one-to-one minimum) or ``"original"``.
        temperature: soft-selection temperature; default 1.0 for "original", 0.2 for
            "exclusive".
        excl_weight, sinkhorn_iters: used by "exclusive" only.
        return_ownership: also return the detached (K, Q) ownership (``"ownership"``) used for
            classification targets, and the dustbin row (``"dustbin_ownership"``, (Q,)).
    Returns:
        dict with ``loss`` (differentiable) and detached ``attractive``, ``repulsive``,
        ``background`` (and ``exclusion`` for "exclusive").
    """
    if temperature is None:
        temperature = 1.0 if formulation == "original" else 0.2
    _validate(mask_logits, target_masks, formulation, temperature)
    all_masks = target_masks.to(mask_logits.dtype)
    kept = all_masks.sum(dim=1) > 0
    masks = all_masks[kept]
    num_queries = mask_logits.shape[0]
    num_inst = masks.shape[0]

    def full_rows(own: Tensor) -> Tensor:  # (K_kept, Q) -> (K, Q), zero rows for empty instances
        out = own.new_zeros(all_masks.shape[0], num_queries)
        out[kept] = own
        return out.detach()

    log_probs = F.logsigmoid(mask_logits)
    background = 1.0 - masks.amax(dim=0) if num_inst > 0 else torch.ones_like(mask_logits[0])
    num_background = background.sum().clamp(min=1.0)
    claims = claim_scores(log_probs, masks)  # (K, Q)
    zero = mask_logits.sum() * 0.0

    if formulation == "original":
        if num_inst > 0:
            attractive = (-temperature * torch.logsumexp(claims / temperature, dim=1)).mean()
        else:
            attractive = zero
        repulsive = profile_repulsion(claims, rep_margin) if num_inst > 1 else zero
        bg_term = (torch.sigmoid(mask_logits) @ background).sum() / (num_background * num_queries)
        loss = attr_weight * attractive + rep_weight * repulsive + bg_weight * bg_term
        out = {"loss": loss, "attractive": attractive.detach(), "repulsive": repulsive.detach(),
               "background": bg_term.detach()}
        if return_ownership:
            out["ownership"] = full_rows(torch.softmax(claims / temperature, dim=1))
        return out

    # "exclusive": every term >= 0, all zero exactly at the one-to-one assignment.
    neg_log_silence = mask_logits - log_probs  # softplus(z) = -log(1 - sigmoid(z)), >= 0
    silence = -neg_log_silence.mean(dim=1)  # (Q,) log geometric mean of "no" over all points
    bg_term = (neg_log_silence @ background).sum() / (num_background * num_queries)
    if num_inst == 0:
        loss = bg_weight * bg_term
        out = {"loss": loss, "attractive": zero.detach(), "repulsive": zero.detach(),
               "background": bg_term.detach(), "exclusion": zero.detach()}
        if return_ownership:
            out["ownership"] = full_rows(mask_logits.new_zeros(0, num_queries))
            out["dustbin_ownership"] = mask_logits.new_ones(num_queries).detach()
        return out

    log_own = sinkhorn_ownership(claims, silence, temperature, sinkhorn_iters)
    own = log_own[:num_inst].exp()  # (K, Q), rows sum to 1
    attractive = -(own * claims).sum(dim=1).mean()
    # Exclusion on each instance's exclusive points: every non-owner must say "no" there.
    exclusive = masks * (masks.sum(dim=0, keepdim=True) <= 1.0)
    exclusive_mean = claim_scores(neg_log_silence, exclusive)  # (K, Q) mean softplus(z) on k
    exclusion = ((1.0 - own) * exclusive_mean).sum(dim=1).mean()
    repulsive = profile_repulsion(claims, rep_margin) if num_inst > 1 else zero
    loss = (attr_weight * attractive + rep_weight * repulsive + bg_weight * bg_term
            + excl_weight * exclusion)
    out = {"loss": loss, "attractive": attractive.detach(), "repulsive": repulsive.detach(),
           "background": bg_term.detach(), "exclusion": exclusion.detach()}
    if return_ownership:
        out["ownership"] = full_rows(own)
        if log_own.shape[0] > num_inst:
            out["dustbin_ownership"] = log_own[num_inst].exp().detach()
        else:
            out["dustbin_ownership"] = (1.0 - own.sum(dim=0)).clamp(min=0.0).detach()
    return out


class MaskInfluencerLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`mask_influencer_loss` holding its keywords."""

    def __init__(self, *, formulation: str = "exclusive", attr_weight: float = 1.0,
                 rep_weight: float = 1.0, bg_weight: float = 1.0, excl_weight: float = 1.0,
                 rep_margin: float = 1.0, temperature: Optional[float] = None,
                 sinkhorn_iters: int = 10):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}; got {formulation!r}")
        self.kwargs = dict(formulation=formulation, attr_weight=attr_weight, rep_weight=rep_weight,
                           bg_weight=bg_weight, excl_weight=excl_weight, rep_margin=rep_margin,
                           temperature=temperature, sinkhorn_iters=sinkhorn_iters)

    def forward(self, mask_logits: Tensor, target_masks: Tensor,
                return_ownership: bool = False) -> Dict[str, Tensor]:
        return mask_influencer_loss(mask_logits, target_masks, return_ownership=return_ownership,
                                    **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items())


SQRT2 = math.sqrt(2.0)
