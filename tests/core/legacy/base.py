"""What both criteria share: input checking, deep supervision, classification and objectness.

Call convention: ``criterion(outputs, targets) -> dict[str, Tensor]`` of *unweighted* terms;
``criterion.weight_dict`` gives each key's weight. Deep-supervision copies ``<key>_<i>`` (one
per entry of ``outputs["aux_outputs"]``) take the weight of ``<key>`` and are added to
``weight_dict`` on first use.

Two input forms:

* dense (2D): ``pred_masks`` (B, Q, H, W), GT ``masks`` (K, H', W') at any resolution; points
  are sampled to bridge the sizes;
* point (3D): ``pred_masks`` a list of (Q_b, P_b), GT ``masks`` (K_b, P_b) on the same points,
  used as given.

Both criteria reduce an image to a (K, Q) *assignment* matrix ``A`` (Hungarian: the one-hot
matches; Influencer: the ownership), from which classification targets
(``sum_k A[k, q] onehot(label_k)`` + the rest to "no object") and objectness targets are
derived by the same code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from legacy.utils import float32_no_autocast, reduce_mean_over_workers


@dataclass
class LayerPredictions:
    """One decoder layer's predictions, per image (lists of length B)."""

    logits: List[Tensor]  # (Q_b, C + 1)
    masks: List[Tensor] | Tensor  # dense: (B, Q, H, W) tensor; point form: list of (Q_b, P_b)
    scores: Optional[List[Tensor]]  # (Q_b,) objectness, or None
    point_form: bool


def _as_list(value, name: str, batch: Optional[int]) -> List[Tensor]:
    if isinstance(value, Tensor):
        return list(value.unbind(0))
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{name} must be a tensor or a list of per-image tensors; got {type(value).__name__}")


def parse_layer(layer: Mapping, num_classes: int, where: str) -> LayerPredictions:
    for key in ("pred_logits", "pred_masks"):
        if key not in layer:
            raise ValueError(f"{where}: missing key {key!r} (got keys {sorted(layer)})")
    point_form = isinstance(layer["pred_masks"], (list, tuple))
    logits = [t.float() for t in _as_list(layer["pred_logits"], f"{where}['pred_logits']", None)]
    if point_form:
        masks = [t.float() for t in layer["pred_masks"]]
        mask_queries = [m.shape[0] for m in masks]
        for b, m in enumerate(masks):
            if m.dim() != 2:
                raise ValueError(f"{where}['pred_masks'][{b}] must be (Q, P) in point form; got {tuple(m.shape)}")
    else:
        masks = layer["pred_masks"].float()
        if masks.dim() != 4:
            raise ValueError(f"{where}['pred_masks'] must be (B, Q, H, W); got {tuple(masks.shape)}")
        mask_queries = [masks.shape[1]] * masks.shape[0]
    if len(logits) != len(mask_queries):
        raise ValueError(f"{where}: pred_logits has batch size {len(logits)} but pred_masks has {len(mask_queries)}")
    for b, (lg, q) in enumerate(zip(logits, mask_queries)):
        if lg.dim() != 2 or lg.shape[0] != q or lg.shape[1] != num_classes + 1:
            raise ValueError(
                f"{where}: image {b}: pred_logits {tuple(lg.shape)} must be (Q, num_classes + 1) = "
                f"({q}, {num_classes + 1}) to match pred_masks with Q = {q}")
    scores = layer.get("pred_scores")
    if scores is not None:
        scores = _as_list(scores, f"{where}['pred_scores']", None)
        if len(scores) != len(logits):
            raise ValueError(f"{where}: pred_scores has batch size {len(scores)}, expected {len(logits)}")
        flat = []
        for b, (s, q) in enumerate(zip(scores, mask_queries)):
            if s.numel() != q or s.dim() > 2:
                raise ValueError(f"{where}: image {b}: pred_scores {tuple(s.shape)} must be (Q,) or (Q, 1), Q = {q}")
            flat.append(s.float().reshape(q))
        scores = flat
    return LayerPredictions(logits, masks, scores, point_form)


def check_targets(targets: Sequence[Mapping], preds: LayerPredictions, num_classes: int) -> List[Dict[str, Tensor]]:
    """Validate GT and return ``[{"labels": (K,) long, "masks": (K, ...) float}]``."""
    batch = len(preds.logits)
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} targets for a batch of {batch} predictions")
    checked = []
    for b, tgt in enumerate(targets):
        if "labels" not in tgt or "masks" not in tgt:
            raise ValueError(f"targets[{b}] needs 'labels' and 'masks'; got keys {sorted(tgt)}")
        labels, masks = tgt["labels"], tgt["masks"]
        if labels.dim() != 1:
            raise ValueError(f"targets[{b}]['labels'] must be (K,); got {tuple(labels.shape)}")
        if labels.is_floating_point():
            raise ValueError(f"targets[{b}]['labels'] must be integer class ids; got {labels.dtype}")
        if masks.shape[0] != labels.shape[0]:
            raise ValueError(f"targets[{b}]: {labels.shape[0]} labels but masks of shape {tuple(masks.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)].unique().tolist()
            raise ValueError(f"targets[{b}]['labels'] has ids {bad} outside [0, {num_classes})")
        if preds.point_form:
            p = preds.masks[b].shape[1]
            if masks.dim() != 2 or masks.shape[1] != p:
                raise ValueError(f"targets[{b}]['masks'] {tuple(masks.shape)} must be (K, P) with P = {p} "
                                 f"as pred_masks[{b}] {tuple(preds.masks[b].shape)} (point form)")
        elif masks.dim() != 3:
            raise ValueError(f"targets[{b}]['masks'] must be (K, H, W) for dense predictions; got {tuple(masks.shape)}")
        checked.append({"labels": labels.long(), "masks": masks.float()})
    return checked


def assignment_cross_entropy(logits: Sequence[Tensor], assignments: Sequence[Tensor],
                             labels: Sequence[Tensor], class_weight: Tensor) -> Tensor:
    """Class-weighted cross-entropy against targets derived from (K, Q) assignments.

    The target distribution of query q is ``sum_k A[k, q] onehot(label_k)`` and the remainder
    ``1 - sum_k A[k, q]`` on "no object" (index C); columns summing past 1 are rescaled. With
    one-hot A this is exactly ``F.cross_entropy(logits, classes, weight=class_weight)`` over
    all queries of the batch (Mask2Former's ``loss_ce``).
    """
    num_classes = class_weight.shape[0] - 1
    all_logits, all_targets = [], []
    for lg, assign, lab in zip(logits, assignments, labels):
        onehot = F.one_hot(lab, num_classes + 1).to(lg.dtype)  # (K, C+1)
        target = assign.transpose(0, 1) @ onehot  # (Q, C+1)
        owned = target.sum(dim=1, keepdim=True)
        target = target / owned.clamp(min=1.0)
        target[:, num_classes] += (1.0 - owned).clamp(min=0.0)[:, 0]
        all_logits.append(lg)
        all_targets.append(target)
    logits_cat, target_cat = torch.cat(all_logits), torch.cat(all_targets)
    weighted = target_cat * class_weight[None, :]
    nll = -(weighted * F.log_softmax(logits_cat, dim=1)).sum()
    return nll / weighted.sum().clamp(min=1e-12)


def mask_iou(mask_logits: Tensor, target_masks: Tensor) -> Tensor:
    """IoU of binarised predictions (logit > 0) with GT: (Q, P) x (K, P) -> (K, Q)."""
    pred = (mask_logits > 0).float()
    inter = target_masks @ pred.transpose(0, 1)
    union = target_masks.sum(1, keepdim=True) + pred.sum(1)[None, :] - inter
    return inter / union.clamp(min=1e-6)


def objectness_loss(scores: Sequence[Tensor], point_logits: Sequence[Tensor], point_targets: Sequence[Tensor],
                    assignments: Sequence[Tensor]) -> Tensor:
    """OneFormer3D's objectness term: regress assigned queries' scores to their mask IoU.

    Pairs with IoU <= 0.5 are left out, as in the baseline; per-image weighted mean of the
    squared error, summed over images and divided by the batch size.
    """
    total = scores[0].sum() * 0.0
    for score, lg, tgt, assign in zip(scores, point_logits, point_targets, assignments):
        if assign.numel() == 0:
            continue
        with torch.no_grad():
            iou = mask_iou(lg, (tgt > 0.5).float())  # (K, Q)
            weight = assign * (iou > 0.5)
        err = (score[None, :] - iou) ** 2
        total = total + (weight * err).sum() / weight.sum().clamp(min=1e-12)
    return total / len(scores)


class SetCriterionBase(nn.Module):
    """Deep supervision, input checking and the shared terms; subclasses score one layer
    (:meth:`_layer_losses`) or all layers at once (:meth:`_all_layer_losses`)."""

    def __init__(self, num_classes: int, weight_dict: Mapping[str, float], eos_coef: float = 0.1,
                 num_points: int = 12544):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1; got {num_points}")
        self.num_classes = num_classes
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.num_points = num_points
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = eos_coef
        self.register_buffer("class_weight", class_weight, persistent=False)
        self.last_assignments: List[Tensor] = []

    def _layer_losses(self, preds: LayerPredictions, targets: List[Dict[str, Tensor]], num_masks: Tensor,
                      cache: dict) -> Dict[str, Tensor]:
        raise NotImplementedError

    def _all_layer_losses(self, layers: List[LayerPredictions], targets: List[Dict[str, Tensor]],
                          num_masks: Tensor) -> List[Dict[str, Tensor]]:
        """Each layer's terms, final layer first, one :meth:`_layer_losses` call per layer sharing a
        cache (GT-side work); sets ``last_assignments`` to the final layer's (K, Q) assignments."""
        cache: dict = {}
        per_layer = [self._layer_losses(preds, targets, num_masks, cache) for preds in layers]
        self.last_assignments = cache.get("assignments", [])
        return per_layer

    @float32_no_autocast
    def forward(self, outputs: Mapping, targets: Sequence[Mapping]) -> Dict[str, Tensor]:
        if not isinstance(outputs, Mapping):
            raise ValueError(f"outputs must be a dict; got {type(outputs).__name__}")
        final = parse_layer(outputs, self.num_classes, "outputs")
        checked = check_targets(targets, final, self.num_classes)
        aux = outputs.get("aux_outputs") or []
        layers = [(parse_layer(a, self.num_classes, f"outputs['aux_outputs'][{i}]"), f"_{i}") for i, a in enumerate(aux)]
        for preds, _ in layers:
            if len(preds.logits) != len(final.logits) or preds.point_form != final.point_form:
                raise ValueError("every aux_outputs entry must have the batch size and form of the final outputs")
        device = final.logits[0].device
        num_masks = torch.as_tensor(float(sum(t["labels"].numel() for t in checked)), device=device)
        num_masks = reduce_mean_over_workers(num_masks).clamp(min=1.0)
        per_layer = self._all_layer_losses([final] + [preds for preds, _ in layers], checked, num_masks)
        losses = dict(per_layer[0])
        for (_, suffix), layer_losses in zip(layers, per_layer[1:]):
            for key, value in layer_losses.items():
                losses[key + suffix] = value
        for key in losses:
            if key not in self.weight_dict:
                base = key.rsplit("_", 1)[0]
                if base not in self.weight_dict:
                    raise KeyError(f"criterion produced {key!r} but weight_dict has no weight for it "
                                   f"(weight_dict keys: {sorted(self.weight_dict)})")
                self.weight_dict[key] = self.weight_dict[base]
        return losses

    def shared_terms(self, preds: LayerPredictions, targets, assignments: List[Tensor],
                     point_logits: Sequence[Tensor], point_targets: Sequence[Tensor]) -> Dict[str, Tensor]:
        """``loss_ce`` from the assignments, and ``loss_score`` when objectness is predicted."""
        out = {"loss_ce": assignment_cross_entropy(preds.logits, assignments, [t["labels"] for t in targets],
                                                   self.class_weight.to(preds.logits[0].device))}
        if preds.scores is not None:
            out["loss_score"] = objectness_loss(preds.scores, point_logits, point_targets, assignments)
        return out
