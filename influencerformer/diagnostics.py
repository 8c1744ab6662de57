"""Assignment diagnostics, identical for both criteria: who owns which instance, and how well.

All functions take per-image point-form tensors: mask logits (Q, P), GT masks (K, P) and the
criterion's (K, Q) assignment (Hungarian: one-hot matches; Influencer: ownership), e.g. from
``criterion.last_assignments``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from influencerformer.criterion.base import mask_iou


def query_objectness(class_logits: Tensor) -> Tensor:
    """(..., Q, C + 1) class logits -> detached (..., Q) ``1 - p_q(no object)``."""
    return 1.0 - torch.softmax(class_logits.detach().float(), dim=-1)[..., -1]


def owners(assignment: Tensor) -> Tensor:
    """(K, Q) assignment -> (K,) owner query of each instance (its largest entry)."""
    if assignment.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=assignment.device)
    return assignment.argmax(dim=1)


def shares_best_query(best: Tensor, found: Optional[Tensor] = None) -> Tensor:
    """(K,) best query of each instance of one image -> (K,) bool: that query is also the best
    query of another instance (a merge). With ``found`` ((K,) bool), only instances that have a
    best query count, on either side."""
    same = best[:, None] == best[None, :]
    if found is not None:
        same = same & found[:, None] & found[None, :]
    return same.sum(dim=1) > 1


@torch.no_grad()
def assignment_diagnostics(mask_logits: Sequence[Tensor], target_masks: Sequence[Tensor],
                           assignments: Sequence[Tensor], previous_owners: Optional[Sequence[Tensor]] = None,
                           claim_recall: float = 0.5, objectness: Optional[Sequence[Tensor]] = None,
                           confident: float = 0.5) -> Dict[str, float]:
    """Batch statistics of the assignment.

    * ``unique_best_share``: share of GT instances whose best query (highest mask IoU) is the best
      query of no other instance;
    * ``multi_claim_share``: share of queries that claim more than one instance (cover more than
      ``claim_recall`` of each: "yes" on that share of its points);
    * ``queries_in_use``: share of the Q queries that are the best query of some instance in
      some image of the batch -- low when a few queries serve every image (one per class, say),
      so that two instances of one class have to share a query;
    * ``owner_iou``: mean mask IoU of each instance's owner (matched or owning query) with it;
    * ``owner_change_rate`` (with ``previous_owners`` for the same images): share of instances
      whose owner differs from the previous logging step;
    * ``duplicate_share`` (with ``objectness``, per image (Q,) ``1 - p(no object)``): share of GT
      instances covered at mask IoU > 0.5 by more than one query whose objectness exceeds
      ``confident`` -- duplicates that inference has to rank (a *merge*, one query over two
      instances, lowers ``unique_best_share`` instead).
    """
    unique, num_inst, multi, num_queries, iou_sum, changed, compared, dups = 0, 0, 0, 0, 0.0, 0, 0, 0
    in_use = torch.zeros(max((lg.shape[0] for lg in mask_logits), default=0), dtype=torch.bool)
    for b, (logits, masks, assign) in enumerate(zip(mask_logits, target_masks, assignments)):
        masks = (masks > 0.5).float()
        num_queries += logits.shape[0]
        k = masks.shape[0]
        if k == 0:
            continue
        num_inst += k
        iou = mask_iou(logits.float(), masks)  # (K, Q)
        best = iou.argmax(dim=1)
        unique += int((~shares_best_query(best)).sum())
        in_use[best.cpu()] = True
        recall = (masks @ (logits > 0).float().transpose(0, 1)) / masks.sum(1, keepdim=True).clamp(min=1)
        multi += int(((recall > claim_recall).sum(dim=0) > 1).sum())
        if objectness is not None:
            sure = objectness[b].to(iou.device) > confident  # (Q,)
            dups += int((((iou > 0.5) & sure[None, :]).sum(dim=1) > 1).sum())
        own = owners(assign.to(iou.device))
        iou_sum += float(iou.gather(1, own[:, None]).sum())
        if previous_owners is not None and previous_owners[b].numel() == k:
            changed += int((previous_owners[b].to(own.device) != own).sum())
            compared += k
    out = {"unique_best_share": unique / num_inst if num_inst else float("nan"),
           "multi_claim_share": multi / num_queries if num_queries else float("nan"),
           "owner_iou": iou_sum / num_inst if num_inst else float("nan"),
           "queries_in_use": float(in_use.float().mean()) if num_inst else float("nan")}
    if objectness is not None:
        out["duplicate_share"] = dups / num_inst if num_inst else float("nan")
    if previous_owners is not None:
        out["owner_change_rate"] = changed / compared if compared else float("nan")
    return out


def owners_of(assignments: Sequence[Tensor]) -> List[Tensor]:
    """Owners per image, detached on the CPU: the ``previous_owners`` of the next call."""
    return [owners(a).cpu() for a in assignments]
