"""The baseline: Hungarian matching + sigmoid BCE + dice on matched pairs (Mask2Former recipe)."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from influencerformer.criterion.base import (LayerPredictions, SetCriterionBase, assignment_cross_entropy,
                                             binary_mask_iou, objectness_loss, stack_queries)
from influencerformer.losses.mask import dice_loss, sigmoid_ce_loss
from influencerformer.matching import HungarianMatcher, assignment_matrix
from influencerformer.point_sampling import point_sample, uncertain_point_coords
from influencerformer.targets import PaddedTargets
from influencerformer.utils import reduce_mean_over_workers


class HungarianCriterion(SetCriterionBase):
    """Mask2Former's ``SetCriterion``: returns ``loss_ce``, ``loss_mask``, ``loss_dice``
    (and ``loss_score`` when ``pred_scores`` are given), each summed over the decoder layers.

    Every layer is matched on its own (a CPU solve per image and layer, as upstream). Mask losses
    run on importance-sampled points (dense form) or all points (point form), are summed over
    matched pairs and divided by the number of GT masks in the batch (averaged over distributed
    workers).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: Mapping[str, float],
                 eos_coef: float = 0.1, num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75):
        super().__init__(num_classes, weight_dict, eos_coef, num_points)
        self.matcher = matcher
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def layer_terms(self, layers: List[LayerPredictions], targets: PaddedTargets,
                    target_list: Optional[List[Dict[str, Tensor]]]) -> Dict[str, Tensor]:
        target_list = target_list if target_list is not None else targets.to_list()
        device = targets.labels.device
        num_masks = torch.as_tensor(float(sum(t["labels"].numel() for t in target_list)), device=device)
        num_masks = reduce_mean_over_workers(num_masks).clamp(min=1.0)
        per_layer = [self._layer_losses(preds, targets, target_list, num_masks, final=index == 0)
                     for index, preds in enumerate(layers)]
        return {key: torch.stack([losses[key] for losses in per_layer]) for key in per_layer[0]}

    def _layer_losses(self, preds: LayerPredictions, targets: PaddedTargets, target_list, num_masks: Tensor,
                      final: bool) -> Dict[str, Tensor]:
        indices = self.matcher({"pred_logits": preds.logits, "pred_masks": preds.masks}, target_list)
        logits, query_valid = stack_queries([list(preds.logits)])
        num_slots, num_queries = targets.labels.shape[1], logits.shape[2]
        assignment = torch.stack([assignment_matrix(ix, num_slots, num_queries, logits.device)
                                  for ix in indices])[:, None]  # (B, 1, K_pad, Q_pad)
        if final:
            self._assignments = (assignment[:, 0].detach(), targets.present, query_valid)
        chunks = self._matched_point_masks(preds, target_list, indices)
        # Point counts differ between scenes, so pairs are scored chunk by chunk; every term is a
        # sum over pairs divided by num_masks, so the chunks simply add up.
        zero = logits.sum() * 0.0 + _sum_all(preds.masks) * 0.0
        losses = {"loss_mask": sum((sigmoid_ce_loss(s, t, num_masks) for s, t in chunks), zero),
                  "loss_dice": sum((dice_loss(s, t, num_masks) for s, t in chunks), zero),
                  "loss_ce": assignment_cross_entropy(logits, assignment, targets.labels,
                                                      self.class_weight.to(logits.device), query_valid)[0]}
        if preds.scores is not None:
            scores, _ = stack_queries([list(preds.scores)])
            point_logits, point_targets = self._objectness_points(preds, targets, target_list)
            iou = binary_mask_iou(point_logits, point_targets)
            losses["loss_score"] = objectness_loss(scores, iou, assignment)[0]
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

    def _objectness_points(self, preds: LayerPredictions, targets: PaddedTargets, target_list):
        """Per image (1, Q, P_b) logits and the (B, K_pad, P_pad) targets at the points the objectness
        term reads (dense: uniform random points per image, as the matcher draws them)."""
        if preds.point_form:
            return [m[None] for m in preds.masks], targets.masks
        logits, tgts = [], []
        for b, t in enumerate(target_list):
            out, tgt = self.matcher.sample_points(preds.masks[b], t["masks"])
            logits.append(out[None])
            tgts.append(F.pad(tgt, (0, 0, 0, targets.labels.shape[1] - tgt.shape[0])))
        return logits, torch.stack(tgts)


def _sum_all(masks) -> Tensor:
    return masks.sum() if isinstance(masks, Tensor) else sum(m.sum() for m in masks)
