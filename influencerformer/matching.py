"""Hungarian matcher of the published Mask2Former recipe (the baseline's assignment step)."""
from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple

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


__all__ = ["HungarianMatcher", "assignment_matrix"]
