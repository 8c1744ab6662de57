"""Mask2Former pixel decoder: deformable-attention encoder over res3-res5 plus an FPN step to stride 4."""

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .ms_deform_attn import MSDeformAttn
from .position_encoding import PositionEmbeddingSine


def shape_to_channels_stride(shape) -> Tuple[int, int]:
    """Accept a ``(channels, stride)`` tuple or any object with ``.channels`` / ``.stride``
    (e.g. detectron2's ShapeSpec)."""
    if hasattr(shape, "channels") and hasattr(shape, "stride"):
        return int(shape.channels), int(shape.stride)
    channels, stride = shape
    return int(channels), int(stride)


def c2_xavier_fill_(conv: nn.Conv2d) -> None:
    """Caffe2-style 'xavier' fill used by detectron2: kaiming-uniform with a=1, zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """Deformable sampling is run in at least float32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention then ReLU FFN, each with residual + LayerNorm."""

    def __init__(
        self,
        embed_dim: int = 256,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        num_levels: int = 3,
        num_heads: int = 8,
        num_points: int = 4,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(embed_dim, num_heads, num_levels, num_points)
        self.attn_dropout = nn.Dropout(dropout)
        self.attn_norm = nn.LayerNorm(embed_dim)
        self.ffn_in = nn.Linear(embed_dim, dim_feedforward)
        self.ffn_dropout = nn.Dropout(dropout)
        self.ffn_out = nn.Linear(dim_feedforward, embed_dim)
        self.ffn_out_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(embed_dim)

    def forward(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        """tokens, pos: (B, S, C); reference_points: (B or 1, S, L or 1, 2). Returns (B, S, C)."""
        attended = self.self_attn(tokens + pos, reference_points, tokens, spatial_shapes, level_start_index)
        tokens = self.attn_norm(tokens + self.attn_dropout(attended))
        hidden = self.ffn_out(self.ffn_dropout(F.relu(self.ffn_in(tokens))))
        return self.ffn_norm(tokens + self.ffn_out_dropout(hidden))


def encoder_reference_points(spatial_shapes: torch.Tensor, device, dtype) -> torch.Tensor:
    """Normalised pixel centres of every level (no padding, so valid ratios are 1).

    spatial_shapes: (L, 2). Returns (1, S, 1, 2) as (x, y), shared by all levels.
    """
    centres = []
    for height, width in spatial_shapes.tolist():
        ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        centres.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1))
    return torch.cat(centres, dim=0)[None, :, None, :]


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder of Mask2Former.

    ``forward(features)`` returns ``(mask_features, multi_scale_features)``:
    mask_features (B, mask_dim, H/4, W/4) and a list of ``num_decoder_levels`` maps
    (B, conv_dim, h_l, w_l) ordered from lowest to highest resolution (res5, res4, res3).
    """

    def __init__(
        self,
        input_shape: Mapping[str, object],
        transformer_in_features: Sequence[str] = ("res3", "res4", "res5"),
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_encoder_layers: int = 6,
        num_heads: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        num_points: int = 4,
        common_stride: int = 4,
        num_decoder_levels: int = 3,
    ):
        """input_shape: feature name -> (channels, stride) or ShapeSpec; every entry is used."""
        super().__init__()
        shapes = {name: shape_to_channels_stride(shape) for name, shape in input_shape.items()}
        missing = [name for name in transformer_in_features if name not in shapes]
        if missing:
            raise ValueError(f"transformer_in_features {missing} not in input_shape {sorted(shapes)}")

        # all features, finest first (res2 .. res5)
        self.in_features: List[str] = sorted(shapes, key=lambda name: shapes[name][1])
        # transformer features, coarsest first (res5, res4, res3): the order the encoder and decoder use
        self.transformer_in_features: List[str] = sorted(
            transformer_in_features, key=lambda name: shapes[name][1], reverse=True
        )
        self.num_levels = len(self.transformer_in_features)
        self.num_decoder_levels = num_decoder_levels
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        self.common_stride = common_stride

        # per-level 1x1 projection to conv_dim + GroupNorm
        self.input_proj = nn.ModuleList()
        for name in self.transformer_in_features:
            conv = nn.Conv2d(shapes[name][0], conv_dim, kernel_size=1)
            nn.init.xavier_uniform_(conv.weight, gain=1)
            nn.init.zeros_(conv.bias)
            self.input_proj.append(nn.Sequential(conv, nn.GroupNorm(32, conv_dim)))

        self.position_encoding = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.level_embed = nn.Parameter(torch.empty(self.num_levels, conv_dim))
        self.encoder_layers = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, dim_feedforward, dropout, self.num_levels, num_heads, num_points)
            for _ in range(num_encoder_layers)
        )
        self._reset_encoder_parameters()

        # FPN path for features finer than the transformer's finest level, down to common_stride
        finest_transformer_stride = min(shapes[name][1] for name in self.transformer_in_features)
        num_fpn_levels = int(round(math.log2(finest_transformer_stride) - math.log2(common_stride)))
        # coarsest first (top-down order)
        self.fpn_in_features: List[str] = self.in_features[:num_fpn_levels][::-1]
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for name in self.fpn_in_features:
            lateral = nn.Conv2d(shapes[name][0], conv_dim, kernel_size=1, bias=False)
            output = nn.Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=False)
            c2_xavier_fill_(lateral)
            c2_xavier_fill_(output)
            self.lateral_convs.append(nn.Sequential(lateral, nn.GroupNorm(32, conv_dim)))
            self.output_convs.append(nn.Sequential(output, nn.GroupNorm(32, conv_dim), nn.ReLU()))

        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        c2_xavier_fill_(self.mask_features)

    def _reset_encoder_parameters(self) -> None:
        for layer in self.encoder_layers:
            for param in layer.parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)

    def encode(self, features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """Run the deformable encoder. Returns one (B, conv_dim, h_l, w_l) map per transformer level,
        coarsest first."""
        tokens, pos_tokens, sizes = [], [], []
        for level, name in enumerate(self.transformer_in_features):
            x = _full_precision(features[name])
            projected = self.input_proj[level](x)  # (B, C, h, w)
            pos = self.position_encoding(projected)  # (B, C, h, w)
            sizes.append(projected.shape[-2:])
            tokens.append(projected.flatten(2).transpose(1, 2))  # (B, h*w, C)
            pos_tokens.append(pos.flatten(2).transpose(1, 2) + self.level_embed[level].to(pos.dtype))
        tokens = torch.cat(tokens, dim=1)  # (B, S, C)
        pos_tokens = torch.cat(pos_tokens, dim=1)

        device = tokens.device
        spatial_shapes = torch.as_tensor([tuple(s) for s in sizes], dtype=torch.long, device=device)  # (L, 2)
        level_sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat([level_sizes.new_zeros(1), level_sizes.cumsum(0)[:-1]])
        reference_points = encoder_reference_points(spatial_shapes, device, tokens.dtype)

        for layer in self.encoder_layers:
            tokens = layer(tokens, pos_tokens, reference_points, spatial_shapes, level_start_index)

        batch = tokens.shape[0]
        per_level = torch.split(tokens, level_sizes.tolist(), dim=1)
        return [
            level_tokens.transpose(1, 2).reshape(batch, self.conv_dim, int(h), int(w))
            for level_tokens, (h, w) in zip(per_level, sizes)
        ]

    def forward(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """features: name -> (B, C_name, H/stride, W/stride).
        Returns mask_features (B, mask_dim, H/4, W/4) and multi_scale_features, a list of
        num_decoder_levels (B, conv_dim, h_l, w_l) maps from lowest to highest resolution."""
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            outputs = self.encode(features)
            for name, lateral, output_conv in zip(self.fpn_in_features, self.lateral_convs, self.output_convs):
                lateral_features = lateral(_full_precision(features[name]))
                upsampled = F.interpolate(
                    outputs[-1], size=lateral_features.shape[-2:], mode="bilinear", align_corners=False
                )
                outputs.append(output_conv(lateral_features + upsampled))
            mask_features = self.mask_features(outputs[-1])
        return mask_features, outputs[: self.num_decoder_levels]
