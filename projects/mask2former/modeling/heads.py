"""Factory for the Mask2Former heads (pixel decoder + transformer decoder) on top of a backbone."""

from typing import Dict, Mapping, Sequence, Tuple

import torch
from torch import nn

from .pixel_decoder import MSDeformAttnPixelDecoder
from .transformer_decoder import MultiScaleMaskedTransformerDecoder


def build_mask2former_heads(
    input_shape: Mapping[str, object],
    num_classes: int,
    num_queries: int = 100,
    hidden_dim: int = 256,
    conv_dim: int = 256,
    mask_dim: int = 256,
    nheads: int = 8,
    enc_layers: int = 6,
    enc_dim_feedforward: int = 1024,
    enc_num_points: int = 4,
    dec_layers: int = 9,
    dec_dim_feedforward: int = 2048,
    pre_norm: bool = False,
    dropout: float = 0.0,
    transformer_in_features: Sequence[str] = ("res3", "res4", "res5"),
    common_stride: int = 4,
) -> Tuple[MSDeformAttnPixelDecoder, MultiScaleMaskedTransformerDecoder]:
    """Published R50 instance-segmentation defaults. input_shape: name -> (channels, stride) or
    ShapeSpec, e.g. {"res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}.
    ``dec_layers`` counts masked-attention layers (the config's DEC_LAYERS minus one)."""
    pixel_decoder = MSDeformAttnPixelDecoder(
        input_shape,
        transformer_in_features=transformer_in_features,
        conv_dim=conv_dim,
        mask_dim=mask_dim,
        num_encoder_layers=enc_layers,
        num_heads=nheads,
        dim_feedforward=enc_dim_feedforward,
        dropout=dropout,
        num_points=enc_num_points,
        common_stride=common_stride,
    )
    transformer_decoder = MultiScaleMaskedTransformerDecoder(
        in_channels=conv_dim,
        num_classes=num_classes,
        hidden_dim=hidden_dim,
        num_queries=num_queries,
        nheads=nheads,
        dim_feedforward=dec_dim_feedforward,
        dec_layers=dec_layers,
        pre_norm=pre_norm,
        mask_dim=mask_dim,
        dropout=dropout,
    )
    return pixel_decoder, transformer_decoder


class Mask2FormerHeads(nn.Module):
    """Pixel decoder followed by the transformer decoder: backbone features -> predictions."""

    def __init__(self, pixel_decoder: MSDeformAttnPixelDecoder, transformer_decoder: MultiScaleMaskedTransformerDecoder):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, object]:
        """features: name -> (B, C, H/stride, W/stride). Returns the transformer decoder's dict."""
        mask_features, multi_scale_features = self.pixel_decoder(features)
        return self.transformer_decoder(multi_scale_features, mask_features)
