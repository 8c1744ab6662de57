"""Mask2Former instance-segmentation model at its published R50 scale (about 44 M parameters).

``model.criterion`` is left empty here: the configs in configs/coco and
configs/synthetic pick it from configs/common/criterion.py.
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from projects.mask2former.modeling.meta_arch import InstanceMask2Former
from projects.mask2former.modeling.pixel_decoder import MSDeformAttnPixelDecoder
from projects.mask2former.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder

model = L(InstanceMask2Former)(
    # detectron2's ResNet-50 (torchvision-style: stride in the 3x3 conv), res2-res5,
    # frozen BatchNorm, every stage trainable
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res2", "res3", "res4", "res5"],
        freeze_at=0,
    ),
    # 6-layer multi-scale deformable-attention encoder over res3-res5 + FPN step to stride 4
    pixel_decoder=L(MSDeformAttnPixelDecoder)(
        input_shape={"res2": [256, 4], "res3": [512, 8], "res4": [1024, 16], "res5": [2048, 32]},
        transformer_in_features=["res3", "res4", "res5"],
        conv_dim=256,
        mask_dim=256,
        num_encoder_layers=6,
        num_heads=8,
        dim_feedforward=1024,
        num_points=4,
        common_stride=4,
    ),
    # 100 queries, 9 masked-attention layers cycling over 3 scales, 10 supervised outputs
    transformer_decoder=L(MultiScaleMaskedTransformerDecoder)(
        in_channels="${..pixel_decoder.conv_dim}",
        num_classes="${..num_classes}",
        hidden_dim=256,
        num_queries=100,
        nheads=8,
        dim_feedforward=2048,
        dec_layers=9,
        mask_dim="${..pixel_decoder.mask_dim}",
    ),
    criterion=None,
    num_classes=80,
    # torchvision ImageNet statistics, RGB input
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
    size_divisibility=32,
    test_topk_per_image=100,
)
