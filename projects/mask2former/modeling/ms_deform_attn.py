"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch.

Sampling is done with ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``),
so no compiled extension is needed.  Sampling locations are normalised to [0, 1] with
(0, 0) the top-left corner of the top-left pixel and (1, 1) the bottom-right corner of
the bottom-right pixel; pixel centres sit at ``(i + 0.5) / size``.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Weighted sum of bilinear samples taken from every level.

    Args:
        value: (B, S, M, D) per-head values of all levels flattened, S = sum_l H_l * W_l.
        spatial_shapes: (L, 2) long, (H_l, W_l) of each level.
        level_start_index: (L,) long, offset of each level inside S.
        sampling_locations: (B, Q, M, L, P, 2) normalised (x, y) in [0, 1].
        attention_weights: (B, Q, M, L, P), typically softmax-normalised over (L, P).

    Returns:
        (B, Q, M * D)
    """
    batch, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    if spatial_shapes.shape[0] != num_levels:
        raise ValueError(f"spatial_shapes has {spatial_shapes.shape[0]} levels, locations have {num_levels}")

    # grid_sample expects coordinates in [-1, 1]
    sampling_grids = 2.0 * sampling_locations - 1.0
    # (B, Q, M, L, P) -> (B, M, Q, L, P) -> (B*M, 1, Q, L, P) to broadcast over D
    weights = attention_weights.transpose(1, 2).reshape(batch * num_heads, 1, num_queries, num_levels, num_points)

    output = None
    for level, (height, width) in enumerate(spatial_shapes.tolist()):
        start = int(level_start_index[level])
        # (B, H*W, M, D) -> (B, M, D, H*W) -> (B*M, D, H, W)
        value_level = value[:, start : start + height * width].permute(0, 2, 3, 1)
        value_level = value_level.reshape(batch * num_heads, head_dim, height, width)
        # (B, Q, M, P, 2) -> (B, M, Q, P, 2) -> (B*M, Q, P, 2)
        grid_level = sampling_grids[:, :, :, level].transpose(1, 2).reshape(batch * num_heads, num_queries, num_points, 2)
        samples = F.grid_sample(
            value_level, grid_level, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B*M, D, Q, P)
        contribution = (samples * weights[..., level, :]).sum(-1)  # (B*M, D, Q)
        output = contribution if output is None else output + contribution

    # (B*M, D, Q) -> (B, M*D, Q) -> (B, Q, M*D)
    return output.reshape(batch, num_heads * head_dim, num_queries).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module.

    Each query predicts, per head, ``num_levels * num_points`` sampling offsets around its
    reference point and as many attention weights (softmax over levels and points).
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 3, num_points: int = 4):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.head_dim = embed_dim // num_heads

        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring: head h points in direction 2πh/M, point p at distance p+1
        (in pixels of each level, max-norm 1 per unit); attention weights start uniform."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (M, 2)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        point_scale = torch.arange(1, self.num_points + 1, dtype=torch.float32)  # (P,)
        ring = directions[:, None, None, :] * point_scale[None, None, :, None]  # (M, 1, P, 2)
        ring = ring.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (B, Q, C) queries (with positional embedding already added).
            reference_points: (B, Q, L, 2) normalised (x, y) in [0, 1]; L may be 1 to share one
                point across levels.
            input_flatten: (B, S, C) flattened multi-level features.
            spatial_shapes: (L, 2) long (H_l, W_l); level_start_index: (L,) long.
            input_padding_mask: optional (B, S) bool, True on padded positions.

        Returns:
            (B, Q, C)
        """
        batch, num_queries, _ = query.shape
        num_inputs = input_flatten.shape[1]
        if int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum()) != num_inputs:
            raise ValueError("spatial_shapes do not match the length of input_flatten")

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(batch, num_inputs, self.num_heads, self.head_dim)

        offsets = self.sampling_offsets(query).view(
            batch, num_queries, self.num_heads, self.num_levels, self.num_points, 2
        )
        weights = self.attention_weights(query).view(
            batch, num_queries, self.num_heads, self.num_levels * self.num_points
        )
        weights = weights.softmax(-1).view(batch, num_queries, self.num_heads, self.num_levels, self.num_points)

        if reference_points.shape[-1] != 2:
            raise ValueError(f"reference_points must end in 2 (x, y), got {tuple(reference_points.shape)}")
        # offsets are in pixels of each level: divide by (W_l, H_l)
        level_size_xy = spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2)
        sampling_locations = (
            reference_points[:, :, None, :, None, :] + offsets / level_size_xy[None, None, None, :, None, :]
        )
        output = ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, weights)
        return self.output_proj(output)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_levels={self.num_levels}, num_points={self.num_points}"
        )
