"""Point sampling on dense masks (the bridge between 2D masks and the point-form losses).

Coordinates are normalised to [0, 1] x [0, 1] as (x, y), like Mask2Former / PointRend.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(masks: Tensor, coords: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinearly sample ``masks`` (N, C, H, W) at ``coords`` (N, P, 2) -> (N, C, P).

    A (N, H, W) input gives (N, P).
    """
    squeeze = masks.dim() == 3
    if squeeze:
        masks = masks[:, None]
    if coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be (N, P, 2); got shape {tuple(coords.shape)}")
    out = F.grid_sample(masks, 2.0 * coords[:, :, None, :] - 1.0, align_corners=align_corners)
    out = out[:, :, :, 0]
    return out[:, 0] if squeeze else out


def uncertain_point_coords(mask_logits: Tensor, num_points: int, oversample_ratio: float,
                           importance_sample_ratio: float) -> Tensor:
    """Mask2Former's importance sampling: (N, H, W) logits -> (N, num_points, 2) coordinates.

    Draws ``oversample_ratio * num_points`` uniform points, keeps the
    ``importance_sample_ratio`` share with the highest uncertainty ``-|logit|`` and fills the
    rest uniformly at random.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1; got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1]; got {importance_sample_ratio}")
    n = mask_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=mask_logits.device)
    uncertainty = -point_sample(mask_logits[:, None].float(), coords)[:, 0].abs()  # (N, S)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainty, k=num_uncertain, dim=1).indices
    coords = torch.gather(coords, 1, idx[:, :, None].expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(n, num_random, 2, device=mask_logits.device)], dim=1)
    return coords


def instance_stratified_coords(target_masks: Tensor, num_points: int, instance_share: float = 0.25,
                               max_grid: int = 256) -> Tensor:
    """One set of points shared by all queries and masks of an image: (K, H, W) -> (num_points, 2).

    ``(1 - instance_share) * num_points`` points are uniform over the image; the rest are split
    evenly over the K instances and drawn uniformly inside each mask (on a grid of at most
    ``max_grid`` x ``max_grid`` cells, max-pooled so small instances keep their cells, jittered
    inside the cell). Points drawn inside an instance are uniform *within* it, as are the uniform
    points that fall in it, so per-instance means over the points inside an instance stay
    unbiased estimates of the means over its pixels, while every instance, however small,
    receives points. Importance sampling by uncertainty is not used here: it would bias those
    means (the geometric-mean claims need unbiased per-instance averages).
    """
    device = target_masks.device
    num_inst = target_masks.shape[0]
    num_per_inst = int(instance_share * num_points) // num_inst if num_inst > 0 else 0
    num_uniform = num_points - num_per_inst * num_inst
    coords = [torch.rand(num_uniform, 2, device=device)]
    if num_per_inst > 0:
        masks = target_masks.float()[:, None]
        h, w = masks.shape[-2:]
        if h > max_grid or w > max_grid:
            masks = F.adaptive_max_pool2d(masks, (min(h, max_grid), min(w, max_grid)))
        gh, gw = masks.shape[-2:]
        weights = masks.flatten(1)
        weights = weights + (weights.sum(dim=1, keepdim=True) == 0).float()  # empty mask -> uniform
        cells = torch.multinomial(weights, num_per_inst, replacement=True).flatten()
        jitter = torch.rand(cells.numel(), 2, device=device)
        x = ((cells % gw).float() + jitter[:, 0]) / gw
        y = (torch.div(cells, gw, rounding_mode="floor").float() + jitter[:, 1]) / gh
        coords.append(torch.stack([x, y], dim=1))
    return torch.cat(coords, dim=0)
