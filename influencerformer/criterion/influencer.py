"""The matcher-free criterion: a Sinkhorn assigner and Mask2Former's losses on its plan."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor

from influencerformer.criterion.base import (LayerPredictions, SetCriterionBase, assignment_cross_entropy,
                                             binary_mask_iou, objectness_loss, stack_queries)
from influencerformer.losses.influencer import (InfluencerPotentials, hard_owners, mask_statistics, owner_losses,
                                               point_targets)
from influencerformer.matching import SinkhornAssigner, check_queries_per_instance, plan_marginals
from influencerformer.point_sampling import point_sample, shared_point_coords
from influencerformer.targets import PaddedTargets

TERMS = ("loss_ce", "loss_mask", "loss_dice", "loss_influencer", "loss_score")
INSTANCE_POINT_SHARE = 0.25  # of the non-importance points, drawn inside the instances


def class_log_odds(logits: Tensor, labels: Tensor) -> Tensor:
    """(B, L, Q, C + 1) class logits, (B, K) labels -> detached (B, L, K, Q)
    ``log p_q(label_k) - log p_q(no object)``: up to a per-query constant, which a Sinkhorn plan
    ignores, Mask2Former's class matching cost ``-p_q(label_k)`` in log form."""
    log_probs = torch.log_softmax(logits.detach(), dim=-1)
    index = labels[:, None, None, :].expand(*log_probs.shape[:3], labels.shape[1])
    return (log_probs.gather(-1, index) - log_probs[..., -1:]).transpose(-1, -2)


class InfluencerCriterion(SetCriterionBase):
    """No matcher anywhere: ``loss_ce``, ``loss_mask``, ``loss_dice`` as Mask2Former's, weighted by a
    soft ownership plan instead of a matching; ``loss_influencer`` when ``potentials`` are given;
    ``loss_score`` when ``pred_scores`` are. Each is summed over the decoder layers. The terms
    computed are those ``weight_dict`` weighs.

    Per step: the targets are padded once (:class:`~influencerformer.targets.PaddedTargets`); dense
    predictions are read at one set of ``num_points`` points per image shared by every query,
    GT mask and decoder layer (:func:`~influencerformer.point_sampling.shared_point_coords`: a
    share ``importance_sample_ratio`` where the final layer is least certain, a quarter of the rest
    inside the instances, the rest uniform); point-form inputs are used as given, padded. Then
    every (image, layer) problem goes through the same batched operations at once: the mask
    statistics (:func:`~influencerformer.losses.mask_statistics`), the ``assigner``'s plan
    (:class:`~influencerformer.matching.SinkhornAssigner`), the owners' BCE and dice and the class
    cross-entropy against the plan. No Python loop over layers or images, no host sync: a fixed
    sequence of operators that ``torch.compile`` or a CUDA graph can capture.

    Args:
        num_classes, weight_dict, eos_coef, num_points: as :class:`HungarianCriterion`.
        assigner: the plan; default ``SinkhornAssigner()`` (class, mask and dice costs 1, 5, 5;
            40 annealed iterations at temperature 0.2, detached).
        potentials: the Influencer potentials (:class:`~influencerformer.losses.InfluencerPotentials`)
            as ``loss_influencer``; with ``formulation="original"`` its own soft-max ownership
            replaces the assigner (classification by hard owners).
        importance_sample_ratio, oversample_ratio: the dense form's importance sampling.
        queries_per_instance: m >= 1 gives each instance about m owners in the plan (one-to-few:
            each classified as the instance, each weighing 1/m of its mask terms).
        queries_per_instance_iters: > 0 anneals m linearly to 1 over that many training calls
            (counted in a buffer, so a resumed run continues the schedule).
    """

    def __init__(self, num_classes: int, weight_dict: Mapping[str, float], assigner: Optional[SinkhornAssigner] = None,
                 potentials: Optional[InfluencerPotentials] = None, eos_coef: float = 0.1, num_points: int = 12544,
                 importance_sample_ratio: float = 0.75, oversample_ratio: float = 3.0,
                 queries_per_instance: float = 1.0, queries_per_instance_iters: int = 0):
        super().__init__(num_classes, weight_dict, eos_coef, num_points)
        unknown = sorted(set(self.weight_dict) - set(TERMS))
        if unknown:
            raise ValueError(f"weight_dict has keys {unknown} this criterion does not produce; its terms are {TERMS}")
        if self.weight_dict.get("loss_influencer") and potentials is None:
            raise ValueError("weight_dict weighs 'loss_influencer' but no potentials were given")
        if not 0 <= importance_sample_ratio < 1:
            raise ValueError(f"importance_sample_ratio must be in [0, 1); got {importance_sample_ratio}")
        if oversample_ratio < 1:
            raise ValueError(f"oversample_ratio must be >= 1; got {oversample_ratio}")
        if queries_per_instance_iters < 0:
            raise ValueError(f"queries_per_instance_iters must be >= 0; got {queries_per_instance_iters}")
        self.assigner = assigner if assigner is not None else SinkhornAssigner()
        self.potentials = potentials
        self.original = potentials is not None and potentials.formulation == "original"
        check_queries_per_instance(queries_per_instance, self.assigner.num_iters)
        if queries_per_instance != 1.0 and self.original:
            raise ValueError("queries_per_instance > 1 (a one-to-few plan) needs the exclusive formulation: the "
                             "original has no ownership plan")
        self.importance_sample_ratio = importance_sample_ratio
        self.oversample_ratio = oversample_ratio
        self.queries_per_instance = queries_per_instance
        self.queries_per_instance_iters = queries_per_instance_iters
        if queries_per_instance_iters > 0:
            self.register_buffer("training_calls", torch.zeros((), dtype=torch.long))
        self.last_terms: Dict[str, Tensor] = {}  # the final layer's terms, mean over images (detached)

    def current_queries_per_instance(self) -> Tensor | float:
        """m now: ``queries_per_instance``, falling linearly to 1 over ``queries_per_instance_iters``
        training calls -- a device tensor, so the schedule changes no shape and reads nothing back."""
        if self.queries_per_instance_iters <= 0 or self.queries_per_instance == 1.0:
            return self.queries_per_instance
        progress = (self.training_calls.float() / self.queries_per_instance_iters).clamp(max=1.0)
        return self.queries_per_instance + (1.0 - self.queries_per_instance) * progress

    def _weighs(self, key: str) -> bool:
        return bool(self.weight_dict.get(key))

    def _points(self, layers: List[LayerPredictions], targets: PaddedTargets):
        """Mask logits at the shared points -- dense: (B, L, Q, P); point form: B tensors (L, Q_b, P_b) --,
        (B, K, P) GT there, the (B, Q) valid queries, (B, P) valid points (point form) and the
        (B, L, Q, C + 1) class logits."""
        if layers[0].point_form:  # scenes of different sizes: their (L, Q_b, P_b) logits, unpadded
            logits, query_valid = stack_queries([preds.logits for preds in layers])
            masks = [torch.stack([preds.masks[b] for preds in layers]) for b in range(len(layers[0].masks))]
            return masks, targets.masks, query_valid, targets.point_valid, logits
        logits = torch.stack([preds.logits for preds in layers], dim=1)
        batch, queries = logits.shape[0], logits.shape[2]
        coords = shared_point_coords(layers[0].masks, targets.masks, targets.present, self.num_points,
                                     INSTANCE_POINT_SHARE, self.importance_sample_ratio, self.oversample_ratio)
        masks = torch.stack([preds.masks for preds in layers], dim=1)  # (B, L, Q, H, W)
        point_logits = point_sample(masks.flatten(1, 2), coords).view(batch, len(layers), queries, -1)
        with torch.no_grad():
            gt = (point_sample(targets.masks, coords) > 0.5).float()
        query_valid = torch.ones(batch, queries, dtype=torch.bool, device=logits.device)
        return point_logits, gt, query_valid, None, logits

    def layer_terms(self, layers: List[LayerPredictions], targets: PaddedTargets,
                    target_list: Optional[List[Dict[str, Tensor]]] = None) -> Dict[str, Tensor]:
        queries_per_instance = self.current_queries_per_instance()  # before this call counts
        if self.queries_per_instance_iters > 0 and self.training and torch.is_grad_enabled():
            self.training_calls.add_(1)
        point_logits, gt, query_valid, point_valid, logits = self._points(layers, targets)
        potentials = self.potentials if self._weighs("loss_influencer") else None
        truth = point_targets(gt, targets.labels, targets.present, point_valid,
                              with_exclusive=potentials is not None and potentials.needs_exclusive_points)
        with_sigmoid = (self._weighs("loss_dice") or (not self.original and self.assigner.needs_dice)
                        or (potentials is not None and potentials.needs_sigmoid))
        stats = mask_statistics(point_logits, truth, with_sigmoid)
        if self.original:
            plan = own = hard_owners(self.potentials.ownership(stats, query_valid), truth.valid)
        else:
            log_odds = class_log_odds(logits, targets.labels) if self.assigner.cost_class else None
            scores = self.assigner.scores(stats.claims, stats.silence, log_odds, stats.pair_bce, stats.pair_dice)
            log_row, log_col, row_mass = plan_marginals(truth.valid, query_valid, queries_per_instance)
            plan = self.assigner(scores, log_row[:, None], log_col[:, None])[:, :, :-1].exp()
            own = plan / row_mass[:, None, :, None] if isinstance(row_mass, Tensor) else plan
        terms: Dict[str, Tensor] = {}
        assignment = plan.detach()  # class and objectness targets are constants, as a matching is
        if self._weighs("loss_ce"):
            terms["loss_ce"] = assignment_cross_entropy(logits, assignment, targets.labels, self.class_weight,
                                                        query_valid if layers[0].point_form else None)
        if self._weighs("loss_mask") or self._weighs("loss_dice"):
            bce, dice = owner_losses(own, stats, truth.valid)
            if self._weighs("loss_mask"):
                terms["loss_mask"] = bce.mean(dim=0)
            if self._weighs("loss_dice"):
                terms["loss_dice"] = dice.mean(dim=0)
        if potentials is not None:
            terms["loss_influencer"] = potentials(stats, plan, own, truth, query_valid).mean(dim=0)
        if layers[0].scores is not None and self._weighs("loss_score"):
            scores_per_layer = ([preds.scores for preds in layers] if layers[0].point_form else None)
            scores = (stack_queries(scores_per_layer)[0] if scores_per_layer is not None
                      else torch.stack([preds.scores for preds in layers], dim=1))
            terms["loss_score"] = objectness_loss(scores, binary_mask_iou(point_logits, truth.masks), assignment)
        self._assignments = (assignment[:, 0], targets.present, query_valid)
        self.last_terms = {key: value[0].detach() for key, value in terms.items()}
        return terms

    def extra_repr(self) -> str:
        return (f"num_points={self.num_points}, importance_sample_ratio={self.importance_sample_ratio}, "
                f"queries_per_instance={self.queries_per_instance}, "
                f"queries_per_instance_iters={self.queries_per_instance_iters}")
