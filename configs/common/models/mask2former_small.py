"""Scaled-down model of the same family for the synthetic dataset (CPU-trainable).

A half-width detectron2 ResNet-18 (BasicBlocks, widths 32-64-128-256, BatchNorm,
trained from scratch), a 2-layer deformable encoder at width 128, and a 6-layer
masked-attention decoder with 20 queries: about 5 M parameters.
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.backbone.resnet import BasicBlock

from .mask2former_r50 import model

_widths = [32, 64, 128, 256]
model.backbone = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=_widths[0], norm="BN"),
    stages=[
        L(ResNet.make_stage)(
            block_class=BasicBlock,
            num_blocks=2,
            stride_per_block=[1 if i == 0 else 2, 1],
            in_channels=_widths[max(i - 1, 0)],
            out_channels=_widths[i],
            norm="BN",
        )
        for i in range(4)
    ],
    out_features=["res2", "res3", "res4", "res5"],
    freeze_at=0,
)
model.pixel_decoder.input_shape = {"res2": [32, 4], "res3": [64, 8], "res4": [128, 16], "res5": [256, 32]}
model.pixel_decoder.conv_dim = 128
model.pixel_decoder.mask_dim = 128
model.pixel_decoder.num_encoder_layers = 2
model.pixel_decoder.num_heads = 4
model.pixel_decoder.dim_feedforward = 512
model.transformer_decoder.hidden_dim = 128
model.transformer_decoder.nheads = 4
model.transformer_decoder.num_queries = 20
model.transformer_decoder.dim_feedforward = 512
model.transformer_decoder.dec_layers = 6
model.test_topk_per_image = 50
