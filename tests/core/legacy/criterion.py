"""The matching-free criterion: Influencer mask loss + classification by ownership."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from legacy.base import LayerPredictions, SetCriterionBase
from legacy.influencer_loss import (EXCLUSION_SCALES, FORMULATIONS, mask_influencer_loss,
                                               prepare_influencer_targets, query_usage_bias, resolve_temperature)
from legacy.point_sampling import SharedPointSampler, point_sample, shared_point_coords


def hard_owners(ownership: Tensor) -> Tensor:
    """One-hot (K, Q) owners for the "original" formulation (classification targets only).

    The owner of instance k is its highest-claim query. When one query is the best for
    several instances it takes the class of the instance it claims most strongly; the other
    instances then have no owner in the class loss (recruiting a second query would be a
    matching step, which this formulation does not have).
    """
    num_inst, num_queries = ownership.shape
    out = torch.zeros_like(ownership)
    if num_inst == 0:
        return out
    best_value, owner = ownership.max(dim=1)  # (K,)
    strongest = torch.full((num_queries,), -1.0, device=ownership.device)
    strongest = strongest.scatter_reduce(0, owner, best_value, reduce="amax")
    # Ties between instances for one query: keep the first.
    winner = best_value >= strongest[owner]
    first_winner = torch.full((num_queries,), num_inst, device=ownership.device, dtype=torch.long)
    inst_idx = torch.arange(num_inst, device=ownership.device)
    first_winner = first_winner.scatter_reduce(0, owner[winner], inst_idx[winner], reduce="amin")
    keep = winner & (first_winner[owner] == inst_idx)
    out[inst_idx[keep], owner[keep]] = 1.0
    return out


def class_log_odds(class_logits: Tensor, labels: Tensor) -> Tensor:
    """(Q, C + 1) class logits, (K,) labels -> detached (K, Q) ``log p_q(label_k) - log p_q(no object)``.

    Added to the claims of the ownership only (``class_ownership_weight``): up to a per-query
    constant, which the Sinkhorn normalisation ignores, it is Mask2Former's class matching cost
    ``-p_q(label_k)`` in log form, for the instances and the dustbin alike.
    """
    log_probs = torch.log_softmax(class_logits.detach().float(), dim=-1)
    return (log_probs[:, labels] - log_probs[:, -1:]).transpose(0, 1)


def class_probability(class_logits: Tensor, labels: Tensor) -> Tensor:
    """(Q, C + 1) class logits, (K,) labels -> detached (K, Q) ``p_q(label_k)``.

    Mask2Former's class matching cost (negated): bounded in [0, 1], so a query that says
    "no object" is a worse candidate by at most the weight, where its log-odds
    (:func:`class_log_odds`) can exclude it from the ownership by tens of units.
    """
    return torch.softmax(class_logits.detach().float(), dim=-1)[:, labels].transpose(0, 1)


CLASS_EVIDENCE = {"log_odds": class_log_odds, "probability": class_probability}


def query_objectness(class_logits: Tensor) -> Tensor:
    """(..., Q, C + 1) class logits -> detached (..., Q) ``1 - p_q(no object)``."""
    return 1.0 - torch.softmax(class_logits.detach().float(), dim=-1)[..., -1]


def _read_training_calls(criterion: "InfluencerCriterion", incompatible_keys) -> None:
    """After a checkpoint is loaded: continue the instance-mass schedule from its call count."""
    criterion._training_calls = int(criterion.training_calls)


class InfluencerCriterion(SetCriterionBase):
    """No matcher anywhere: returns ``loss_ce``, ``loss_influencer`` (and ``loss_score`` when
    ``pred_scores`` are given), plus ``_i`` copies per aux layer.

    Dense inputs: per image one set of ``num_points`` points shared by every query and GT mask
    (:func:`shared_point_coords`: uniform, a share drawn inside each instance so small ones are
    never missed and, with ``importance_sample_ratio > 0``, a share where the final layer is
    least certain), drawn once per call and reused by every decoder layer (one
    :class:`SharedPointSampler` matrix); GT masks are binarised at the points. Every term of the
    loss is 0 at the ideal and > 0 elsewhere on any point set, so importance sampling leaves the
    minimum where it is; it makes the means over an instance weigh its boundary more, as
    Mask2Former's point losses do. Point-form inputs are used as given.

    All (layer, image) problems of a call go to the core loss at once, so their ownership plans
    are one batched Sinkhorn (:func:`~influencerformer.losses.batched_sinkhorn_ownership`).

    Classification follows the ownership: with ``formulation="exclusive"`` the soft
    (Sinkhorn) ownership of each query over the instances and the dustbin is its class target
    distribution (dustbin mass -> "no object"); with ``"original"``, hard owners
    (:func:`hard_owners`). Ownership is detached for these targets. ``class_ownership_weight > 0``
    lets the ownership also see the class evidence (:func:`class_log_odds`), as Mask2Former's
    matching cost does (``class_evidence``: ``"log_odds"`` or Mask2Former's bounded
    ``"probability"``, :func:`class_probability`), and ``ownership_mask_cost > 0`` its mask cost
    (BCE + dice); ``objectness_exclusion`` scales each query's exclusion by its probability of
    being an object, ``1 - p_q(no object)`` (detached), so queries that declare "no object" are
    not pushed off other instances, and ``objectness_background`` (with it) their background term
    too; ``free_non_owners`` scales both terms by each query's instance ownership, so the queries
    the plan puts in the dustbin keep free masks from the first step, as Hungarian's unmatched
    queries do (see the core loss); ``exclusion_scale="point"`` weighs every point of the
    exclusion alike (Mask2Former's BCE scale) instead of every instance; ``query_balance > 0``
    biases every image's ownership towards the queries the batch uses least
    (:func:`query_usage_bias`, from the final layer's plans); ``instance_mass`` m > 1 makes the
    plan one-to-few (about m claimants per instance, each classified as it and sharing its mask
    terms; see the core loss), falling linearly to one-to-one over the first
    ``instance_mass_iters`` training calls (counted in a buffer, so a resumed run continues the
    schedule; 0: m throughout); ``density_weighted_points`` weighs
    each dense-input point by the inverse of its sampling density (importance-sampled points 1, as
    in Mask2Former), so the points drawn inside instances -- up to tens of times denser than the
    uniform ones inside a small instance -- stop tilting the means over all points (the owner's
    BCE and dice, the silence) towards "yes" around small instances; ``bce_weight``, ``leak_weight`` and the other
    loss keywords go to the core loss.
    """

    def __init__(self, num_classes: int, weight_dict: Mapping[str, float], eos_coef: float = 0.1,
                 num_points: int = 12544, formulation: str = "exclusive", attr_weight: float = 1.0,
                 rep_weight: float = 1.0, bg_weight: float = 1.0, excl_weight: float = 1.0,
                 rep_margin: float = 1.0, temperature: Optional[float] = None, sinkhorn_iters: int = 40,
                 instance_point_share: float = 0.25, exclusion: str = "sum", dice_weight: float = 0.0,
                 detach_ownership: bool = True, claim_floor: Optional[float] = None,
                 anneal_ownership: bool = True, bce_weight: float = 0.0, class_ownership_weight: float = 0.0,
                 importance_sample_ratio: float = 0.0, oversample_ratio: float = 3.0,
                 ownership_spread_floor: Optional[float] = None, objectness_exclusion: bool = False,
                 ownership_mask_cost: float = 0.0, density_weighted_points: bool = False,
                 leak_weight: float = 0.0, class_evidence: str = "log_odds",
                 objectness_background: bool = False, query_balance: float = 0.0,
                 free_non_owners: bool = False, exclusion_scale: str = "instance", instance_mass: float = 1.0,
                 instance_mass_iters: int = 0):
        super().__init__(num_classes, weight_dict, eos_coef, num_points)
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}; got {formulation!r}")
        if exclusion_scale not in EXCLUSION_SCALES:
            raise ValueError(f"exclusion_scale must be one of {EXCLUSION_SCALES}; got {exclusion_scale!r}")
        if not 0 <= instance_point_share < 1:
            raise ValueError(f"instance_point_share must be in [0, 1); got {instance_point_share}")
        self.formulation = formulation
        self.loss_kwargs = dict(formulation=formulation, attr_weight=attr_weight, rep_weight=rep_weight,
                                bg_weight=bg_weight, excl_weight=excl_weight, rep_margin=rep_margin,
                                temperature=temperature, sinkhorn_iters=sinkhorn_iters, exclusion=exclusion,
                                dice_weight=dice_weight, detach_ownership=detach_ownership,
                                claim_floor=claim_floor, anneal_ownership=anneal_ownership,
                                bce_weight=bce_weight, ownership_spread_floor=ownership_spread_floor,
                                ownership_mask_cost=ownership_mask_cost, leak_weight=leak_weight,
                                objectness_background=objectness_background, free_non_owners=free_non_owners,
                                exclusion_scale=exclusion_scale)
        self.instance_point_share = instance_point_share
        self.density_weighted_points = density_weighted_points
        if not 0 <= importance_sample_ratio < 1:
            raise ValueError(f"importance_sample_ratio must be in [0, 1); got {importance_sample_ratio}")
        if oversample_ratio < 1:
            raise ValueError(f"oversample_ratio must be >= 1; got {oversample_ratio}")
        self.importance_sample_ratio = importance_sample_ratio
        self.oversample_ratio = oversample_ratio
        for name, value, needs_plan in (("class_ownership_weight", class_ownership_weight, "has no Sinkhorn ownership"),
                                        ("ownership_mask_cost", ownership_mask_cost, "has no Sinkhorn ownership"),
                                        ("objectness_exclusion", objectness_exclusion, "has no exclusion"),
                                        ("query_balance", query_balance, "has no Sinkhorn ownership")):
            if value < 0:
                raise ValueError(f"{name} must be >= 0; got {value}")
            if value and formulation != "exclusive":
                raise ValueError(f"{name} needs formulation='exclusive' (the original formulation {needs_plan}); "
                                 f"got {formulation!r}")
        self.class_ownership_weight = class_ownership_weight
        if class_evidence not in CLASS_EVIDENCE:
            raise ValueError(f"class_evidence must be one of {tuple(CLASS_EVIDENCE)}; got {class_evidence!r}")
        self.class_evidence = CLASS_EVIDENCE[class_evidence]
        if objectness_background and not objectness_exclusion:
            raise ValueError("objectness_background frees the masks of queries that say 'no object' on the "
                             "background as well as on other instances: it needs objectness_exclusion=True")
        self.objectness_exclusion = objectness_exclusion
        self.query_balance = query_balance
        if not instance_mass >= 1.0:
            raise ValueError(f"instance_mass must be >= 1 (1: one query per instance); got {instance_mass}")
        if instance_mass != 1.0 and (formulation != "exclusive" or sinkhorn_iters <= 0):
            raise ValueError("instance_mass > 1 (a one-to-few plan) needs formulation='exclusive' and "
                             f"sinkhorn_iters > 0; got {formulation!r} and {sinkhorn_iters}")
        if instance_mass_iters < 0:
            raise ValueError(f"instance_mass_iters must be >= 0; got {instance_mass_iters}")
        self.instance_mass = instance_mass
        self.instance_mass_iters = instance_mass_iters
        self._training_calls = 0  # read on the host each call; the buffer carries it through checkpoints
        if instance_mass_iters > 0:
            self.register_buffer("training_calls", torch.zeros((), dtype=torch.long))
            self.register_load_state_dict_post_hook(_read_training_calls)
        self.last_stats: Dict[str, Tensor] = {}  # the final layer's weighted terms, mean over images

    def current_instance_mass(self) -> float:
        """The plan's instance mass now: ``instance_mass``, falling linearly to 1 over the first
        ``instance_mass_iters`` training calls when that is > 0."""
        if self.instance_mass_iters <= 0 or self.instance_mass == 1.0:
            return self.instance_mass
        progress = min(self._training_calls / self.instance_mass_iters, 1.0)
        return self.instance_mass + (1.0 - self.instance_mass) * progress

    def _points(self, preds: LayerPredictions, targets, cache: dict) -> Tuple[List[Tensor], List[Tensor]]:
        """Per image (Q, P) mask logits and (K, P) binary GT at shared points."""
        if preds.point_form:
            return list(preds.masks), [t["masks"] for t in targets]
        if "sampler" not in cache:  # the first call scores the final layer
            sampled = shared_point_coords(preds.masks, [t["masks"] for t in targets], self.num_points,
                                          self.instance_point_share, self.importance_sample_ratio,
                                          self.oversample_ratio, return_weights=self.density_weighted_points)
            coords = sampled[0] if self.density_weighted_points else sampled
            cache["point_weights"] = list(sampled[1]) if self.density_weighted_points else None
            with torch.no_grad():
                cache["sampler"] = SharedPointSampler(coords, *preds.masks.shape[-2:])
                cache["point_targets"] = [
                    (point_sample(t["masks"][None], c[None].to(t["masks"].device))[0] > 0.5).float()
                    for t, c in zip(targets, coords)]
        # B x (Q, P); every layer reuses the sampler
        return cache["sampler"].per_image(preds.masks), cache["point_targets"]

    def _all_layer_losses(self, layers: List[LayerPredictions], targets, num_masks: Tensor) -> List[Dict[str, Tensor]]:
        """Every layer's terms from one call of the core loss over all (layer, image) problems, so
        that their ownership plans are computed together (one batched Sinkhorn per step)."""
        cache: dict = {}
        loss_kwargs = dict(self.loss_kwargs, instance_mass=self.current_instance_mass())
        if self.instance_mass_iters > 0 and self.training and torch.is_grad_enabled():
            self._training_calls += 1
            self.training_calls.fill_(self._training_calls)  # no host sync
        inputs = []  # per layer: B x (Q, P) logits, B x (K, P) targets, B ownership biases
        for preds in layers:
            point_logits, point_targets = self._points(preds, targets, cache)
            if "prepared" not in cache:  # GT-only, shared by every decoder layer
                weights = cache.get("point_weights") or [None] * len(point_targets)
                cache["prepared"] = [prepare_influencer_targets(t, point_weights=w)
                                     for t, w in zip(point_targets, weights)]
            biases = [None] * len(targets)
            if self.class_ownership_weight > 0:
                biases = [self.class_ownership_weight * self.class_evidence(cls, t["labels"])
                          for cls, t in zip(preds.logits, targets)]
            inputs.append((point_logits, point_targets, biases))
        if self.query_balance > 0:  # from the final layer's plans, for every layer
            point_logits, point_targets, biases = inputs[0]
            with torch.no_grad():
                plans = [out["ownership"] for out in mask_influencer_loss(
                    [lg.detach() for lg in point_logits], point_targets, targets=cache["prepared"],
                    ownership_bias=biases, return_ownership=True, **loss_kwargs)]
            temperature = resolve_temperature(self.formulation, self.loss_kwargs["temperature"])
            usage = query_usage_bias(plans, temperature, self.query_balance)
            inputs = [(lgs, tgts, [usage.to(t.device).expand(t.shape[0], -1) if b is None else b + usage.to(b.device)
                                   for b, t in zip(bs, tgts)]) for lgs, tgts, bs in inputs]
        objectness = [[None] * len(targets)] * len(layers)
        if self.objectness_exclusion:
            objectness = [[query_objectness(cls) for cls in preds.logits] for preds in layers]
        flat = mask_influencer_loss(
            [lg for lgs, _, _ in inputs for lg in lgs], [t for _, tgts, _ in inputs for t in tgts],
            targets=cache["prepared"] * len(layers), ownership_bias=[b for _, _, bs in inputs for b in bs],
            query_objectness=[o for per_image in objectness for o in per_image], return_ownership=True,
            report_unweighted=False, **loss_kwargs)
        batch = len(targets)
        per_layer = []
        for index, (preds, (point_logits, point_targets, _)) in enumerate(zip(layers, inputs)):
            per_image = flat[index * batch:(index + 1) * batch]
            if self.formulation == "original":
                assignments = [hard_owners(out["ownership"]) for out in per_image]
            else:
                assignments = [out["ownership"] for out in per_image]
            if index == 0:
                self.last_assignments = assignments
                self.last_stats = {key: torch.stack([out[key] for out in per_image]).mean()
                                   for key in per_image[0] if key not in ("loss", "ownership", "dustbin_ownership")}
            losses = {"loss_influencer": torch.stack([out["loss"] for out in per_image]).mean()}
            losses.update(self.shared_terms(preds, targets, assignments, point_logits, point_targets))
            per_layer.append(losses)
        return per_layer
