"""What both criteria share: input checking, deep supervision, classification and objectness.

Call convention: ``criterion(outputs, targets) -> dict[str, Tensor]`` of *unweighted* terms,
each summed over the decoder layers (the final one and every entry of
``outputs["aux_outputs"]``: deep supervision with equal weights, as in Mask2Former);
``criterion.weight_dict`` gives each key's weight and ``criterion.layer_losses`` the detached
per-layer values (final layer first). One scalar per term keeps the caller's weighted sum and its
backward to a few operators whatever the number of layers.

Two input forms:

* dense (2D): ``pred_masks`` (B, Q, H, W), GT ``masks`` (K, H', W') at any resolution shared by the
  batch; points are sampled to bridge the sizes;
* point (3D): ``pred_masks`` a list of (Q_b, P_b), GT ``masks`` (K_b, P_b) on the same points,
  used as given.

Both criteria reduce each (image, layer) to a (K, Q) *assignment* ``A`` (Hungarian: the one-hot
matches; Influencer: the ownership plan), from which classification targets
(``sum_k A[k, q] onehot(label_k)`` + the rest to "no object") and objectness targets are derived
by the same batched code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from influencerformer.targets import PaddedTargets, check_target_values, pad_targets, prefix_mask
from influencerformer.utils import float32_no_autocast

# value checks (label range, mask values) read device memory: they run in a criterion's first calls
VALUE_CHECK_CALLS = 10


@dataclass
class LayerPredictions:
    """One decoder layer's predictions (the dense form keeps the batch tensors as they came)."""

    logits: List[Tensor] | Tensor  # dense: (B, Q, C + 1); point form: B tensors (Q_b, C + 1)
    masks: List[Tensor] | Tensor  # dense: (B, Q, H, W); point form: B tensors (Q_b, P_b)
    scores: Optional[List[Tensor] | Tensor]  # dense: (B, Q); point form: B tensors (Q_b,); or None
    point_form: bool


def parse_layer(layer: Mapping, num_classes: int, where: str) -> LayerPredictions:
    """Check one layer's shapes (host-side: no sync) and return them as :class:`LayerPredictions`."""
    for key in ("pred_logits", "pred_masks"):
        if key not in layer:
            raise ValueError(f"{where}: missing key {key!r} (got keys {sorted(layer)})")
    point_form = isinstance(layer["pred_masks"], (list, tuple))
    logits, masks = layer["pred_logits"], layer["pred_masks"]
    if point_form:
        masks = [m.float() for m in masks]
        for b, m in enumerate(masks):
            if m.dim() != 2:
                raise ValueError(f"{where}['pred_masks'][{b}] must be (Q, P) in point form; got {tuple(m.shape)}")
        logits = [t.float() for t in (logits if isinstance(logits, (list, tuple)) else logits.unbind(0))]
        mask_queries = [m.shape[0] for m in masks]
    else:
        masks, logits = masks.float(), logits.float() if isinstance(logits, Tensor) else torch.stack(list(logits)).float()
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
        listed = list(scores) if isinstance(scores, (list, tuple)) else list(scores.unbind(0))
        if len(listed) != len(logits):
            raise ValueError(f"{where}: pred_scores has batch size {len(listed)}, expected {len(logits)}")
        for b, (s, q) in enumerate(zip(listed, mask_queries)):
            if s.numel() != q or s.dim() > 2:
                raise ValueError(f"{where}: image {b}: pred_scores {tuple(s.shape)} must be (Q,) or (Q, 1), Q = {q}")
        scores = [s.float().reshape(-1) for s in listed] if point_form else scores.float().reshape(masks.shape[:2])
    return LayerPredictions(logits, masks, scores, point_form)


def stack_queries(per_layer: Sequence[Sequence[Tensor]]) -> Tuple[Tensor, Tensor]:
    """L layers x B tensors (Q_b, ...) -> (B, L, Q_pad, ...) zero-padded and the (B, Q_pad) valid queries.

    Pads every trailing dimension to its largest size (the points of 3D scenes): one allocation and
    one copy per (image, layer), into the padded block."""
    first = per_layer[0]
    sizes = [max(t.shape[d] for t in first) for d in range(first[0].dim())]
    stacked = first[0].new_zeros(len(first), len(per_layer), *sizes)
    for l, tensors in enumerate(per_layer):
        for b, t in enumerate(tensors):
            stacked[(b, l) + tuple(slice(0, n) for n in t.shape)] = t
    return stacked, prefix_mask([t.shape[0] for t in first], sizes[0], stacked.device)


def assignment_cross_entropy(logits: Tensor, assignment: Tensor, labels: Tensor, class_weight: Tensor,
                             query_valid: Optional[Tensor] = None) -> Tensor:
    """Class-weighted cross-entropy against targets derived from (K, Q) assignments, per layer.

    Args:
        logits: (B, L, Q, C + 1); assignment: (B, L, K, Q), 0 at invalid instances; labels: (B, K);
        class_weight: (C + 1,); query_valid: (B, Q) or None (all).
    Returns:
        (L,): the target distribution of query q is ``sum_k A[k, q] onehot(label_k)`` with the
        remainder ``1 - sum_k A[k, q]`` on "no object" (index C); columns summing past 1 are
        rescaled. With one-hot A this is ``F.cross_entropy(logits, classes, weight=class_weight)``
        over all queries of the batch (Mask2Former's ``loss_ce``).
    """
    num_classes = class_weight.shape[0] - 1
    classes = torch.arange(num_classes + 1, device=logits.device)
    onehot = (labels[..., None] == classes).to(logits.dtype)  # (B, K, C + 1); F.one_hot reads the labels back
    target = assignment.transpose(-1, -2) @ onehot[:, None]  # (B, L, Q, C + 1)
    owned = target.sum(dim=-1, keepdim=True)
    no_object = (classes == num_classes).to(logits.dtype)
    target = target / owned.clamp(min=1.0) + (1.0 - owned).clamp(min=0.0) * no_object
    weighted = target * class_weight
    if query_valid is not None:
        weighted = weighted * query_valid[:, None, :, None].to(weighted.dtype)
    nll = -(weighted * F.log_softmax(logits, dim=-1)).sum(dim=(0, 2, 3))
    return nll / weighted.sum(dim=(0, 2, 3)).clamp(min=1e-12)


def mask_iou(mask_logits: Tensor, target_masks: Tensor) -> Tensor:
    """IoU of binarised predictions (logit > 0) with GT: (..., Q, P) x (..., K, P) -> (..., K, Q)."""
    pred = (mask_logits > 0).to(target_masks.dtype)
    inter = target_masks @ pred.transpose(-1, -2)
    union = target_masks.sum(-1)[..., :, None] + pred.sum(-1)[..., None, :] - inter
    return inter / union.clamp(min=1e-6)


def binary_mask_iou(point_logits: Tensor | Sequence[Tensor], point_targets: Tensor) -> Tensor:
    """IoU of binarised predictions (logit > 0) with binarised GT (> 0.5), per image and layer.

    Args:
        point_logits: (B, L, Q, P); or B tensors (L, Q_b, P_b) of scenes of different sizes.
        point_targets: (B, K, P_pad), zero at padded points.
    Returns:
        (B, L, K, Q_pad), 0 at padded queries.
    """
    if isinstance(point_logits, Tensor):
        point_logits = list(point_logits)
    q_max = max(z.shape[1] for z in point_logits)
    ious = []
    for b, z in enumerate(point_logits):
        gt = (point_targets[b, :, : z.shape[-1]] > 0.5).to(point_targets.dtype)  # (K, P_b)
        ious.append(F.pad(mask_iou(z, gt[None]), (0, q_max - z.shape[1])))  # (L, K, Q_b) -> (L, K, Q_pad)
    return torch.stack(ious)


def objectness_loss(scores: Tensor, iou: Tensor, assignment: Tensor) -> Tensor:
    """OneFormer3D's objectness term: regress assigned queries' scores to their mask IoU, per layer.

    Args:
        scores: (B, L, Q); iou: (B, L, K, Q) (:func:`binary_mask_iou`); assignment: (B, L, K, Q).
    Returns:
        (L,): per image the assignment-weighted mean squared error over pairs with IoU > 0.5 (as
        the baseline), averaged over the batch.
    """
    iou = iou.detach()
    weight = assignment.detach() * (iou > 0.5)
    err = (scores[:, :, None, :] - iou) ** 2
    per_image = (weight * err).sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1)).clamp(min=1e-12)
    return per_image.mean(dim=0)


class SetCriterionBase(nn.Module):
    """Input checking, the padded targets and deep supervision; subclasses compute every layer's
    terms (:meth:`layer_terms`) as ``{name: (L,) tensor}``."""

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
        self.layer_losses: Dict[str, Tensor] = {}
        # the final layer's (B, K_pad, Q_pad) assignment, (B, K_pad) present instances, (B, Q_pad) valid queries
        self._assignments: Optional[Tuple[Tensor, Tensor, Optional[Tensor]]] = None
        self._value_checks_left = VALUE_CHECK_CALLS

    def layer_terms(self, layers: List[LayerPredictions], targets: PaddedTargets,
                    target_list: Optional[List[Dict[str, Tensor]]]) -> Dict[str, Tensor]:
        """``{name: (L,) per-layer term}``; ``target_list``: the targets as given (None when padded)."""
        raise NotImplementedError

    @property
    def last_assignments(self) -> List[Tensor]:
        """The final layer's (K_b, Q) assignment of each image of the last call (diagnostics; host-side)."""
        if self._assignments is None:
            return []
        assignment, present, query_valid = self._assignments
        queries = [assignment.shape[-1]] * len(assignment) if query_valid is None else query_valid.sum(dim=1).tolist()
        return [a[: int(k), :q] for a, k, q in zip(assignment, present.sum(dim=1).tolist(), queries)]

    def parse(self, outputs: Mapping, targets: Sequence[Mapping] | PaddedTargets
              ) -> Tuple[List[LayerPredictions], PaddedTargets, Optional[List[Dict[str, Tensor]]]]:
        """Check the outputs' shapes and pad the targets (:func:`~influencerformer.targets.pad_targets`)."""
        if not isinstance(outputs, Mapping):
            raise ValueError(f"outputs must be a dict; got {type(outputs).__name__}")
        final = parse_layer(outputs, self.num_classes, "outputs")
        aux = outputs.get("aux_outputs") or []
        layers = [final] + [parse_layer(a, self.num_classes, f"outputs['aux_outputs'][{i}]") for i, a in enumerate(aux)]
        for preds in layers[1:]:
            if len(preds.logits) != len(final.logits) or preds.point_form != final.point_form:
                raise ValueError("every aux_outputs entry must have the batch size and form of the final outputs")
        target_list = None
        if isinstance(targets, PaddedTargets):
            padded = targets
        else:
            if len(targets) != len(final.logits):
                raise ValueError(f"got {len(targets)} targets for a batch of {len(final.logits)} predictions")
            if self._value_checks_left > 0:
                self._value_checks_left -= 1
                check_target_values(targets, self.num_classes)
            shapes = [tuple(m.shape) for m in final.masks] if final.point_form else None
            padded = pad_targets(targets, final.point_form, shapes)
            target_list = [{"labels": t["labels"].long(), "masks": t["masks"].float()} for t in targets]
        if padded.point_form != final.point_form or padded.labels.shape[0] != len(final.logits):
            raise ValueError(f"targets are for {padded.labels.shape[0]} images in "
                             f"{'point' if padded.point_form else 'dense'} form; the predictions are "
                             f"{len(final.logits)} in {'point' if final.point_form else 'dense'} form")
        return layers, padded, target_list

    @float32_no_autocast
    def forward(self, outputs: Mapping, targets: Sequence[Mapping] | PaddedTargets) -> Dict[str, Tensor]:
        layers, padded, target_list = self.parse(outputs, targets)
        per_layer = self.layer_terms(layers, padded, target_list)
        for key in per_layer:
            if key not in self.weight_dict:
                raise KeyError(f"criterion produced {key!r} but weight_dict has no weight for it "
                               f"(weight_dict keys: {sorted(self.weight_dict)})")
        self.layer_losses = {key: value.detach() for key, value in per_layer.items()}
        return {key: value.sum() for key, value in per_layer.items()}
