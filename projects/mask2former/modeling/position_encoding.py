"""Sine positional encoding for 2-D feature maps (the DETR / Mask2Former variant)."""

import math
from typing import Optional

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Fixed 2-D sine/cosine encoding of pixel coordinates.

    With ``normalize=True`` the cumulative row / column index is divided by the
    number of valid rows / columns and multiplied by ``scale`` (2π by default),
    so coordinates lie in (0, scale].  Output channels are ``[y-encoding, x-encoding]``,
    each ``num_pos_feats`` wide with interleaved sin/cos pairs.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: Optional[float] = None,
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale is only used together with normalize=True")
        if num_pos_feats % 2 != 0:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, C, H, W), only its shape/device/dtype are used; padding_mask: (B, H, W) bool,
        True on padded pixels.  Returns (B, 2 * num_pos_feats, H, W)."""
        batch, _, height, width = x.shape
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        if padding_mask is None:
            valid = torch.ones(batch, height, width, device=x.device, dtype=compute_dtype)
        else:
            valid = (~padding_mask).to(compute_dtype)
        row_coord = valid.cumsum(1)  # (B, H, W), 1-based row index among valid pixels
        col_coord = valid.cumsum(2)
        if self.normalize:
            eps = 1e-6
            row_coord = row_coord / (row_coord[:, -1:, :] + eps) * self.scale
            col_coord = col_coord / (col_coord[:, :, -1:] + eps) * self.scale

        freq_index = torch.arange(self.num_pos_feats, device=x.device, dtype=compute_dtype)
        wavelengths = self.temperature ** (2 * torch.div(freq_index, 2, rounding_mode="floor") / self.num_pos_feats)

        encodings = []
        for coord in (row_coord, col_coord):
            phase = coord[..., None] / wavelengths  # (B, H, W, F)
            # even channels -> sin, odd channels -> cos, interleaved
            encoding = torch.stack((phase[..., 0::2].sin(), phase[..., 1::2].cos()), dim=-1).flatten(-2)
            encodings.append(encoding)
        pos = torch.cat(encodings, dim=-1).permute(0, 3, 1, 2)  # (B, 2F, H, W)
        return pos.to(x.dtype) if x.is_floating_point() else pos

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale:.4f}"
        )
