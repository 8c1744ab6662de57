"""Point sampling on dense masks (the bridge between 2D masks and the point-form losses).

Coordinates are normalised to [0, 1] x [0, 1] as (x, y), like Mask2Former / PointRend.
"""
from __future__ import annotations

import warnings
from typing import List, Sequence

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
                               max_grid: int = 256, return_weights: bool = False):
    """One set of points shared by all queries and masks of an image: (K, H, W) -> (num_points, 2).

    ``(1 - instance_share) * num_points`` points are uniform over the image; the rest are split
    evenly over the K instances and drawn uniformly inside each mask (on a grid of at most
    ``max_grid`` x ``max_grid`` cells, max-pooled so small instances keep their cells, jittered
    inside the cell). Points drawn inside an instance are uniform *within* it, as are the uniform
    points that fall in it, so per-instance means over the points inside an instance stay
    unbiased estimates of the means over its pixels, while every instance, however small,
    receives points. Importance sampling by uncertainty is added on top by
    :func:`shared_point_coords`.

    With ``return_weights`` also returns (num_points,) density-correction weights: the uniform
    points' density divided by the sampling density at each point -- 1 outside every instance,
    ``< 1`` inside one (much less inside a small one) -- so that weighted means over *all* points
    are unbiased estimates of means over the image's pixels, as uniform points would give.
    """
    device = target_masks.device
    num_inst = target_masks.shape[0]
    num_per_inst = int(instance_share * num_points) // num_inst if num_inst > 0 else 0
    num_uniform = num_points - num_per_inst * num_inst
    coords = [torch.rand(num_uniform, 2, device=device)]
    cells = None
    if num_per_inst > 0:
        masks = target_masks.float()[:, None]
        h, w = masks.shape[-2:]
        if h > max_grid or w > max_grid:
            masks = F.adaptive_max_pool2d(masks, (min(h, max_grid), min(w, max_grid)))
        gh, gw = masks.shape[-2:]
        cells = masks.flatten(1)
        cells = cells + (cells.sum(dim=1, keepdim=True) == 0).float()  # empty mask -> uniform
        drawn = torch.multinomial(cells, num_per_inst, replacement=True).flatten()
        jitter = torch.rand(drawn.numel(), 2, device=device)
        x = ((drawn % gw).float() + jitter[:, 0]) / gw
        y = (torch.div(drawn, gw, rounding_mode="floor").float() + jitter[:, 1]) / gh
        coords.append(torch.stack([x, y], dim=1))
    coords = torch.cat(coords, dim=0)
    if not return_weights:
        return coords
    if cells is None:
        return coords, torch.ones(num_points, device=device)
    # density per unit area at each point: num_uniform everywhere, plus num_per_inst / area_k
    # inside the cells instance k draws from
    col = (coords[:, 0] * gw).long().clamp(0, gw - 1)
    row = (coords[:, 1] * gh).long().clamp(0, gh - 1)
    inside = cells[:, row * gw + col]  # (K, P)
    area = cells.sum(dim=1) / (gh * gw)  # (K,) share of the image each instance draws from
    density = num_uniform + (inside * (num_per_inst / area)[:, None]).sum(dim=0)
    return coords, num_uniform / density


@torch.no_grad()
def shared_point_coords(mask_logits: Tensor, target_masks: Sequence[Tensor], num_points: int,
                        instance_share: float = 0.25, importance_sample_ratio: float = 0.0,
                        oversample_ratio: float = 3.0, return_weights: bool = False):
    """One point set per image for *all* queries: (B, Q, H, W) logits, B x (K, H', W') masks -> (B, P, 2).

    ``importance_sample_ratio * num_points`` points come first and are where some query is least
    certain: Mask2Former's importance sampling (:func:`uncertain_point_coords`, all kept by
    uncertainty) applied to ``min_q |z_q|``, so one set serves every query -- once the
    non-owners are silent, the uncertain points are the owners' boundaries. The rest come from
    :func:`instance_stratified_coords` (uniform plus a share inside each instance).

    With ``return_weights`` also returns (B, P) per-point weights: 1 for the uncertain points
    (Mask2Former weighs its importance samples like its uniform ones) and the density correction
    of :func:`instance_stratified_coords` for the rest, which undoes the over-sampling of
    instances (of small ones most) in means over all points.
    """
    if mask_logits.dim() != 4:
        raise ValueError(f"mask_logits must be (B, Q, H, W); got shape {tuple(mask_logits.shape)}")
    if len(target_masks) != mask_logits.shape[0]:
        raise ValueError(f"{len(target_masks)} target mask tensors for a batch of {mask_logits.shape[0]}")
    if not 0 <= importance_sample_ratio < 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1); got {importance_sample_ratio}")
    num_uncertain = int(importance_sample_ratio * num_points)
    drawn = [instance_stratified_coords(m, num_points - num_uncertain, instance_share, return_weights=return_weights)
             for m in target_masks]
    if return_weights:
        drawn, stratified_weights = zip(*drawn)
    coords = torch.stack(drawn).to(mask_logits.device)
    if num_uncertain > 0:
        closest_to_half = mask_logits.float().abs().amin(dim=1)  # (B, H, W)
        uncertain = uncertain_point_coords(closest_to_half, num_uncertain, oversample_ratio, 1.0)
        coords = torch.cat([uncertain, coords], dim=1)
    if not return_weights:
        return coords
    weights = torch.stack(stratified_weights).to(mask_logits.device)
    ones = weights.new_ones(weights.shape[0], num_uncertain)  # importance points weigh 1
    return coords, torch.cat([ones, weights], dim=1)


class _BilinearRowMix(torch.autograd.Function):
    """Rows of ``values`` mixed 4 at a time: ``out[i] = sum_j weight[i, j] * values[index[i, j]]``.

    Forward is an ``embedding_bag`` (a gather per row); backward the product with the constant
    transposed CSR interpolation matrix ``matrix_t``, which adds each gradient row into the
    4 source rows without an atomic scatter.
    """

    @staticmethod
    def forward(ctx, values: Tensor, index: Tensor, weight: Tensor, matrix_t: Tensor) -> Tensor:
        ctx.matrix_t = matrix_t
        return F.embedding_bag(index, values, per_sample_weights=weight, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor):
        return torch.sparse.mm(ctx.matrix_t, grad.contiguous()), None, None, None


class SharedPointSampler:
    """Bilinear sampling of (B, C, H, W) maps at one set of points per image, reused by many calls.

    The same values as :func:`point_sample` (``align_corners=False``, zero padding), computed as a
    (B * P, B * H * W) interpolation matrix with 4 entries per point, built once. For the
    Influencer criterion the points are shared by every query *and* every decoder layer, so the
    matrix is built once per step; forward is then a 4-row ``embedding_bag`` over channels-last
    maps and backward a product with the transposed sparse matrix (``grid_sample``'s backward
    scatters one gradient per channel and point instead), measured by
    ``tools/iteration_cost.py``.

    Args:
        coords: (B, P, 2) normalised (x, y) coordinates in [0, 1].
        height, width: the size of the maps it will sample.
    """

    def __init__(self, coords: Tensor, height: int, width: int):
        if coords.dim() != 3 or coords.shape[-1] != 2:
            raise ValueError(f"coords must be (B, P, 2); got shape {tuple(coords.shape)}")
        batch, num_points = coords.shape[:2]
        self.shape = (batch, num_points, height, width)
        grid = 2.0 * coords.float() - 1.0  # grid_sample's arithmetic, for the same rounding
        x = ((grid[..., 0] + 1.0) * width - 1.0) / 2.0  # pixel centres (align_corners=False)
        y = ((grid[..., 1] + 1.0) * height - 1.0) / 2.0
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        cols, vals = [], []
        offsets = torch.arange(batch, device=coords.device)[:, None] * (height * width)
        for dy, wy in ((0, 1.0 - fy), (1, fy)):
            for dx, wx in ((0, 1.0 - fx), (1, fx)):
                xi, yi = x0 + dx, y0 + dy
                inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
                cols.append((yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long() + offsets)
                vals.append(wx * wy * inside)  # zero padding: corners outside the map weigh 0
        self.corner_index = torch.stack(cols, dim=-1).reshape(batch * num_points, 4)  # point by point
        self.corner_weight = torch.stack(vals, dim=-1).reshape(batch * num_points, 4)
        rows = torch.arange(batch * num_points, device=coords.device).repeat_interleave(4)
        size = (batch * height * width, batch * num_points)
        coo_t = torch.sparse_coo_tensor(torch.stack([self.corner_index.reshape(-1), rows]),
                                        self.corner_weight.reshape(-1), size, check_invariants=False).coalesce()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self.matrix_t = coo_t.to_sparse_csr()

    def __call__(self, maps: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, P), in float32."""
        return self._sample(maps).transpose(1, 2)

    def per_image(self, maps: Tensor) -> List[Tensor]:
        """(B, C, H, W) -> B tensors (C, P), in float32: transposed views of (P, C) blocks.

        Split before transposing, so that neither direction copies with a transpose: a
        gradient that arrives in the same (P, C)-major layout -- as the Influencer loss's
        matrix products give it -- is gathered by a plain concatenation.
        """
        return [block.transpose(0, 1) for block in self._sample(maps).unbind(0)]

    def _sample(self, maps: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, P, C)."""
        batch, num_points, height, width = self.shape
        if maps.dim() != 4 or maps.shape[0] != batch or tuple(maps.shape[-2:]) != (height, width):
            raise ValueError(f"maps must be ({batch}, C, {height}, {width}) for this sampler; "
                             f"got shape {tuple(maps.shape)}")
        channels = maps.shape[1]
        if maps.device != self.matrix_t.device:
            raise ValueError(f"maps are on {maps.device}, the sampler's points on {self.matrix_t.device}")
        with torch.autocast(maps.device.type, enabled=False):
            values = maps.float().permute(0, 2, 3, 1).reshape(batch * height * width, channels)
            out = _BilinearRowMix.apply(values, self.corner_index, self.corner_weight, self.matrix_t)  # (B * P, C)
        return out.view(batch, num_points, channels)
