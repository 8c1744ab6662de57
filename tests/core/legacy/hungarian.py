"""The baseline: Hungarian matching + sigmoid BCE + dice on matched pairs (Mask2Former recipe)."""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import torch
from torch import Tensor

from legacy.base import LayerPredictions, SetCriterionBase
from legacy.mask import dice_loss, sigmoid_ce_loss
from influencerformer.matching import HungarianMatcher, assignment_matrix
from legacy.point_sampling import point_sample, uncertain_point_coords


class HungarianCriterion(SetCriterionBase):
    """Mask2Former's ``SetCriterion``: returns ``loss_ce``, ``loss_mask``, ``loss_dice``
    (and ``loss_score`` when ``pred_scores`` are given), plus ``_i`` copies per aux layer.

    Mask losses run on importance-sampled points (dense form) or all points (point form), are
    summed over matched pairs and divided by the number of GT masks in the batch (averaged
    over distributed workers).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: Mapping[str, float],
                 eos_coef: float = 0.1, num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75):
        super().__init__(num_classes, weight_dict, eos_coef, num_points)
        self.matcher = matcher
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def _layer_losses(self, preds: LayerPredictions, targets, num_masks: Tensor, cache: dict) -> Dict[str, Tensor]:
        indices = self.matcher({"pred_logits": preds.logits, "pred_masks": preds.masks}, targets)
        device = preds.logits[0].device
        assignments = [assignment_matrix(ix, t["labels"].numel(), lg.shape[0], device)
                       for ix, t, lg in zip(indices, targets, preds.logits)]
        cache.setdefault("assignments", assignments)
        chunks = self._matched_point_masks(preds, targets, indices)
        # Point counts differ between scenes, so pairs are scored chunk by chunk; every term is a
        # sum over pairs divided by num_masks, so the chunks simply add up.
        zero = sum(lg.sum() for lg in preds.logits) * 0.0 + _sum_all(preds.masks) * 0.0
        loss_mask = sum((sigmoid_ce_loss(s, t, num_masks) for s, t in chunks), zero)
        loss_dice = sum((dice_loss(s, t, num_masks) for s, t in chunks), zero)
        losses = {"loss_mask": loss_mask, "loss_dice": loss_dice}
        point_logits, point_targets = self._objectness_points(preds, targets)
        losses.update(self.shared_terms(preds, targets, assignments, point_logits, point_targets))
        return losses

    def _matched_point_masks(self, preds: LayerPredictions, targets, indices) -> List[Tuple[Tensor, Tensor]]:
        """Matched predictions and targets on shared points, as (N_i, P_i) chunk pairs."""
        if preds.point_form:
            return [(m[q.to(m.device)], t["masks"][k.to(m.device)])
                    for m, t, (q, k) in zip(preds.masks, targets, indices) if q.numel()]
        src_masks = torch.cat([preds.masks[b][q.to(preds.masks.device)] for b, (q, _) in enumerate(indices)])
        if src_masks.shape[0] == 0:
            return []
        with torch.no_grad():
            coords = uncertain_point_coords(src_masks, self.num_points, self.oversample_ratio,
                                            self.importance_sample_ratio)
        tgt_points, start = [], 0
        for t, (_, k) in zip(targets, indices):
            n = k.numel()
            if n:
                tgt_points.append(point_sample(t["masks"][k.to(t["masks"].device)][:, None],
                                               coords[start:start + n])[:, 0])
            start += n
        src_points = point_sample(src_masks[:, None], coords)[:, 0]
        return [(src_points, torch.cat(tgt_points))]

    def _objectness_points(self, preds: LayerPredictions, targets):
        if preds.scores is None:
            return [], []
        if preds.point_form:
            return preds.masks, [t["masks"] for t in targets]
        logits, tgts = [], []
        for b, t in enumerate(targets):
            out, tgt = self.matcher.sample_points(preds.masks[b], t["masks"])
            logits.append(out)
            tgts.append(tgt)
        return logits, tgts


def _sum_all(masks) -> Tensor:
    return masks.sum() if isinstance(masks, Tensor) else sum(m.sum() for m in masks)
