"""Pure-PyTorch Mask2Former modules (no detectron2 import here; meta_arch.py is separate)."""

from .ms_deform_attn import MSDeformAttn, ms_deform_attn
from .pixel_decoder import MSDeformAttnPixelDecoder
from .position_encoding import PositionEmbeddingSine
from .postprocess import instance_inference, masks_to_boxes_xyxy, resize_mask_logits
from .transformer_decoder import MultiScaleMaskedTransformerDecoder

__all__ = [
    "MSDeformAttn",
    "MSDeformAttnPixelDecoder",
    "MultiScaleMaskedTransformerDecoder",
    "PositionEmbeddingSine",
    "instance_inference",
    "masks_to_boxes_xyxy",
    "ms_deform_attn",
    "resize_mask_logits",
]
