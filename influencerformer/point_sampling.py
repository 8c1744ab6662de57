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


def instance_stratified_coords(target_masks: Tensor, present: Tensor, num_points: int, instance_share: float = 0.25,
                               max_grid: int = 256) -> Tensor:
    """One set of points per image shared by all its queries and masks: (B, K, H, W) -> (B, num_points, 2).

    In image b with K_b instances (``present`` (B, K) marks them), ``instance_share * num_points``
    points are split evenly over the instances, ``n_b = share // K_b`` each, drawn uniformly inside
    each mask (on a grid of at most ``max_grid`` x ``max_grid`` cells, max-pooled so small instances
    keep their cells, jittered inside the cell); the rest are uniform over the image. Per-instance
    means over the points inside an instance stay unbiased estimates of its pixel means, while
    every instance, however small, receives points. An empty mask draws uniformly. Batched over
    images and instances: no host sync.
    """
    batch, num_slots = present.shape
    device = target_masks.device
    coords = torch.rand(batch, num_points, 2, device=device)
    num_share = int(instance_share * num_points)
    if num_share == 0 or num_slots == 0:
        return coords
    masks = target_masks.float()
    h, w = masks.shape[-2:]
    if h > max_grid or w > max_grid:
        masks = F.adaptive_max_pool2d(masks, (min(h, max_grid), min(w, max_grid)))
    gh, gw = masks.shape[-2:]
    cells = masks.flatten(2)  # (B, K, G)
    cells = cells + (cells.sum(dim=2, keepdim=True) == 0)  # empty mask -> uniform
    drawn = torch.multinomial(cells.flatten(0, 1), num_share, replacement=True).view(batch, num_slots, num_share)
    counts = present.sum(dim=1, keepdim=True)  # (B, 1)
    per_instance = num_share // counts.clamp(min=1)
    slot = torch.arange(num_share, device=device)[None, :] // per_instance.clamp(min=1)  # (B, share)
    inside = (slot < counts) & (per_instance > 0)
    cell = drawn.gather(1, slot.clamp(max=num_slots - 1)[:, None, :])[:, 0]  # (B, share)
    jitter = torch.rand(batch, num_share, 2, device=device)
    xy = torch.stack([((cell % gw).float() + jitter[..., 0]) / gw,
                      (torch.div(cell, gw, rounding_mode="floor").float() + jitter[..., 1]) / gh], dim=-1)
    return torch.cat([torch.where(inside[..., None], xy, coords[:, :num_share]), coords[:, num_share:]], dim=1)


@torch.no_grad()
def shared_point_coords(mask_logits: Tensor, target_masks: Tensor, present: Tensor, num_points: int,
                        instance_share: float = 0.25, importance_sample_ratio: float = 0.0,
                        oversample_ratio: float = 3.0) -> Tensor:
    """One point set per image for *all* queries: (B, Q, H, W) logits, (B, K, H', W') masks -> (B, P, 2).

    ``importance_sample_ratio * num_points`` points come first and are where some query is least
    certain: Mask2Former's importance sampling (:func:`uncertain_point_coords`, all kept by
    uncertainty) applied to ``min_q |z_q|``, so one set serves every query -- once the
    non-owners are silent, the uncertain points are the owners' boundaries. The rest come from
    :func:`instance_stratified_coords` (uniform plus a share inside each instance).
    """
    if mask_logits.dim() != 4:
        raise ValueError(f"mask_logits must be (B, Q, H, W); got shape {tuple(mask_logits.shape)}")
    if target_masks.dim() != 4 or target_masks.shape[0] != mask_logits.shape[0]:
        raise ValueError(f"target_masks must be (B, K, H, W) with B = {mask_logits.shape[0]}; "
                         f"got shape {tuple(target_masks.shape)}")
    if not 0 <= importance_sample_ratio < 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1); got {importance_sample_ratio}")
    num_uncertain = int(importance_sample_ratio * num_points)
    coords = instance_stratified_coords(target_masks, present, num_points - num_uncertain, instance_share)
    if num_uncertain > 0:
        closest_to_half = mask_logits.float().abs().amin(dim=1)  # (B, H, W)
        uncertain = uncertain_point_coords(closest_to_half, num_uncertain, oversample_ratio, 1.0)
        coords = torch.cat([uncertain, coords], dim=1)
    return coords
