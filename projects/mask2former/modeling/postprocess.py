"""Mask2Former instance-segmentation inference for one image, in plain PyTorch."""

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F


def masks_to_boxes_xyxy(masks: torch.Tensor) -> torch.Tensor:
    """masks: (N, H, W) bool. Returns (N, 4) float boxes (x0, y0, x1, y1) with exclusive
    x1/y1 (last foreground column/row + 1), as detectron2's BitMasks; empty masks give zeros."""
    _, height, width = masks.shape
    cols_on = masks.any(dim=1)  # (N, W)
    rows_on = masks.any(dim=2)  # (N, H)
    col_index = torch.arange(width, device=masks.device)
    row_index = torch.arange(height, device=masks.device)
    x0 = torch.where(cols_on, col_index, width).amin(dim=1)
    x1 = torch.where(cols_on, col_index + 1, 0).amax(dim=1)
    y0 = torch.where(rows_on, row_index, height).amin(dim=1)
    y1 = torch.where(rows_on, row_index + 1, 0).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    non_empty = cols_on.any(dim=1, keepdim=True)
    return torch.where(non_empty, boxes, torch.zeros_like(boxes))


def resize_mask_logits(
    mask_pred: torch.Tensor,
    image_size: Sequence[int],
    output_size: Sequence[int],
    padded_size: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Bring mask logits from the padded network input to the original image resolution.

    Args:
        mask_pred: (..., h, w) logits covering the padded input (e.g. (Q, H/4, W/4)).
        image_size: (H_img, W_img) of the resized, unpadded image inside the padded input.
        output_size: (H_out, W_out) original image size to resize to.
        padded_size: (H_pad, W_pad) of the padded input; if given, mask_pred is first upsampled
            bilinearly to it (as Mask2Former does with the stride-4 masks). If None, mask_pred must
            already be at padded resolution.

    Returns:
        (..., H_out, W_out) logits.
    """
    leading = mask_pred.shape[:-2]
    logits = mask_pred.reshape(1, -1, *mask_pred.shape[-2:])
    if padded_size is not None:
        logits = F.interpolate(logits, size=tuple(padded_size), mode="bilinear", align_corners=False)
    logits = logits[:, :, : int(image_size[0]), : int(image_size[1])]
    logits = F.interpolate(logits, size=tuple(int(s) for s in output_size), mode="bilinear", align_corners=False)
    return logits.reshape(*leading, *logits.shape[-2:])


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, threshold: float) -> torch.Tensor:
    """Class-aware Fast NMS on masks (YOLACT's matrix form, no loop over detections).

    A detection is dropped when a higher-scoring detection of the same class overlaps its mask at
    IoU > ``threshold`` -- whether or not that one is itself dropped, which makes it slightly more
    aggressive than greedy NMS.

    Args:
        masks: (N, H, W) bool; scores: (N,); classes: (N,) long.
    Returns:
        (N,) bool, the detections kept.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"mask NMS threshold must be in (0, 1]; got {threshold}")
    if masks.shape[0] == 0:
        return masks.new_zeros(0, dtype=torch.bool)
    flat = masks.flatten(1).float()
    inter = flat @ flat.transpose(0, 1)
    area = flat.sum(dim=1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1.0)
    order = torch.argsort(scores, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    stronger = (rank[:, None] < rank[None, :]) & (classes[:, None] == classes[None, :])  # [i, j]: i beats j
    return ~((iou * stronger).amax(dim=0) > threshold)


def instance_inference(
    mask_cls: torch.Tensor, mask_pred: torch.Tensor, num_classes: int, test_topk: int = 100,
    mask_nms_threshold: Optional[float] = None,
) -> Dict[str, torch.Tensor]:
    """Top-k (query, class) pairs as instances.

    Args:
        mask_cls: (Q, num_classes + 1) class logits, last column = no-object.
        mask_pred: (Q, H, W) mask logits.
        num_classes: number of real classes.
        test_topk: number of instances kept (capped at Q * num_classes).
        mask_nms_threshold: if given, the top-k are then thinned by class-aware mask NMS
            (:func:`mask_nms`) at this IoU. Mask2Former uses none (``None``, the default); it is
            a diagnostic of how much a model's AP owes to near-duplicate predictions.

    Returns dict, N = min(test_topk, Q * num_classes) (fewer after NMS), sorted by decreasing
    class probability:
        scores (N,): class prob x mean mask probability inside the binarised (logit > 0) mask,
        pred_classes (N,) long, pred_masks (N, H, W) bool, pred_boxes (N, 4) float xyxy.
    """
    num_queries = mask_cls.shape[0]
    if mask_cls.shape[1] != num_classes + 1:
        raise ValueError(f"mask_cls has {mask_cls.shape[1]} columns, expected {num_classes + 1}")
    class_probs = mask_cls.softmax(-1)[:, :num_classes]  # (Q, C)
    num_kept = min(test_topk, num_queries * num_classes)
    top_probs, flat_index = class_probs.flatten().topk(num_kept, sorted=True)
    pred_classes = flat_index % num_classes
    query_index = torch.div(flat_index, num_classes, rounding_mode="floor")

    kept_logits = mask_pred[query_index]  # (N, H, W)
    pred_masks = kept_logits > 0
    binary = pred_masks.flatten(1).to(kept_logits.dtype)
    mask_scores = (kept_logits.sigmoid().flatten(1) * binary).sum(1) / (binary.sum(1) + 1e-6)
    scores = top_probs * mask_scores
    if mask_nms_threshold is not None:
        keep = mask_nms(pred_masks, scores, pred_classes, mask_nms_threshold)
        scores, pred_classes, pred_masks = scores[keep], pred_classes[keep], pred_masks[keep]
    return {
        "scores": scores,
        "pred_classes": pred_classes,
        "pred_masks": pred_masks,
        "pred_boxes": masks_to_boxes_xyxy(pred_masks),
    }
