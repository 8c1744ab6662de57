"""A step's ground truth as fixed-shape tensors: what lets a criterion run without host syncs.

Detection datasets give each image its own number of instances K_b (and, in 3D, each scene its
own number of points P_b). :class:`PaddedTargets` pads them once per step to ``(B, K_pad, ...)``
with a validity mask; ``K_pad`` is a bucket (a multiple of ``pad_to``), so shapes repeat from
step to step and a compiled or graph-captured criterion is reused. Every later computation reads
the validity masks instead of indexing with booleans.
"""
from __future__ import annotations

import math
from typing import List, Mapping, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

DEFAULT_PAD_TO = 8


def prefix_mask(lengths: Sequence[int], size: int, device: torch.device | str) -> Tensor:
    """(N, size) bool, True at ``[n, :lengths[n]]``: which entries of N padded rows are real.

    Built with one fill per row, never from a host tensor: a host-to-device copy of the lengths
    would be a host synchronisation on a GPU and cannot be captured in a CUDA graph."""
    mask = torch.zeros(len(lengths), size, dtype=torch.bool, device=device)
    for row, length in enumerate(lengths):
        if length:
            mask[row, :length] = True
    return mask


class PaddedTargets(NamedTuple):
    """Labels and masks of B images, padded to K_pad instances.

    ``masks`` is (B, K_pad, H, W) for dense ground truth and (B, K_pad, P_pad) on points; padded
    instances (and padded points) are 0. ``present`` (B, K_pad) marks the K_b real instances of
    each image; ``point_valid`` (B, P_pad) the real points of each scene (all True when dense).
    """

    labels: Tensor  # (B, K_pad) long, 0 where padded
    masks: Tensor  # (B, K_pad, H, W) or (B, K_pad, P_pad) float
    present: Tensor  # (B, K_pad) bool
    point_valid: Tensor  # (B, P_pad) bool (point form), or (B, 0) when dense

    @property
    def point_form(self) -> bool:
        return self.masks.dim() == 3

    def to_list(self) -> List[dict]:
        """The per-image ``{"labels", "masks"}`` dicts again (host-side, for diagnostics and tests)."""
        out = []
        for b, count in enumerate(self.present.sum(dim=1).tolist()):
            masks = self.masks[b, :count]
            if self.point_form:
                masks = masks[:, : int(self.point_valid[b].sum())]
            out.append({"labels": self.labels[b, :count], "masks": masks})
        return out


def padded_size(count: int, pad_to: int) -> int:
    """``count`` rounded up to a multiple of ``pad_to`` (at least ``pad_to``)."""
    return max(pad_to, pad_to * math.ceil(count / pad_to))


def pad_targets(targets: Sequence[Mapping], point_form: bool, mask_shapes: Optional[Sequence[Sequence[int]]] = None,
                pad_to: int = DEFAULT_PAD_TO) -> PaddedTargets:
    """Per-image ``{"labels": (K_b,), "masks": (K_b, H, W) or (K_b, P_b)}`` -> :class:`PaddedTargets`.

    Shapes and dtypes are checked here (they are known on the host, so checking costs no sync);
    values (label range, empty masks) by :func:`check_target_values`. ``mask_shapes``: the (Q_b, P_b)
    shape of each scene's predicted masks (point form), whose P_b every GT mask must match.
    """
    if pad_to < 1:
        raise ValueError(f"pad_to must be >= 1; got {pad_to}")
    if not targets:
        raise ValueError("got no targets (an empty batch)")
    for b, tgt in enumerate(targets):
        if not isinstance(tgt, Mapping) or "labels" not in tgt or "masks" not in tgt:
            got = sorted(tgt) if isinstance(tgt, Mapping) else type(tgt).__name__
            raise ValueError(f"targets[{b}] needs 'labels' and 'masks'; got {got}")
        labels, masks = tgt["labels"], tgt["masks"]
        if labels.dim() != 1:
            raise ValueError(f"targets[{b}]['labels'] must be (K,); got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"targets[{b}]['labels'] must be integer class ids; got {labels.dtype}")
        if masks.shape[0] != labels.shape[0]:
            raise ValueError(f"targets[{b}]: {labels.shape[0]} labels but masks of shape {tuple(masks.shape)}")
        if point_form:
            p = mask_shapes[b][-1]
            if masks.dim() != 2 or masks.shape[1] != p:
                raise ValueError(f"targets[{b}]['masks'] {tuple(masks.shape)} must be (K, P) with P = {p}, "
                                 f"the points of pred_masks[{b}] {tuple(mask_shapes[b])} (point form)")
        elif masks.dim() != 3:
            raise ValueError(f"targets[{b}]['masks'] must be (K, H, W) for dense predictions; got {tuple(masks.shape)}")
    if not point_form:
        sizes = {tuple(t["masks"].shape[-2:]) for t in targets}
        if len(sizes) > 1:
            raise ValueError(f"dense GT masks of one batch must share one (H, W) (pad them to the batch's "
                             f"padded image size, as the meta-architecture does); got {sorted(sizes)}")
    counts = [int(t["labels"].shape[0]) for t in targets]
    k_pad = padded_size(max(counts), pad_to)
    device = targets[0]["masks"].device
    # one allocation per field and one copy per image (it converts bool masks too)
    labels = torch.zeros(len(targets), k_pad, dtype=torch.long, device=device)
    if point_form:
        num_points = [shape[-1] for shape in mask_shapes]
        size: tuple = (max(num_points),)
    else:
        size = tuple(targets[0]["masks"].shape[-2:])
    dtype = torch.float64 if any(t["masks"].dtype == torch.float64 for t in targets) else torch.float32
    masks = torch.zeros(len(targets), k_pad, *size, dtype=dtype, device=device)
    for b, (tgt, k) in enumerate(zip(targets, counts)):
        if k:
            labels[b, :k] = tgt["labels"]
            masks[b, :k, ..., : tgt["masks"].shape[-1]] = tgt["masks"]
    present = prefix_mask(counts, k_pad, device)
    if point_form:
        point_valid = prefix_mask(num_points, size[0], device)
    else:
        point_valid = present.new_zeros(len(targets), 0)
    return PaddedTargets(labels, masks, present, point_valid)


def check_target_values(targets: Sequence[Mapping], num_classes: int) -> None:
    """The value checks a criterion cannot make without reading device memory: label range and
    mask values. Run on the host's data (the dataset mapper) or in a criterion's first calls."""
    for b, tgt in enumerate(targets):
        labels, masks = tgt["labels"], tgt["masks"]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)].unique().tolist()
            raise ValueError(f"targets[{b}]['labels'] has ids {bad} outside [0, {num_classes})")
        if masks.numel() and masks.dtype != torch.bool:
            low, high = float(masks.min()), float(masks.max())
            if low < 0 or high > 1:
                raise ValueError(f"targets[{b}]['masks'] must be binary or in [0, 1]; got values in [{low}, {high}]")
