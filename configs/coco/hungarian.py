"""COCO instance segmentation, Mask2Former R50, trained with Hungarian matching (baseline)."""
from ._base_ import dataloader, lr_multiplier, model, optimizer, train
from ..common.criterion import hungarian as _criterion

model.criterion = _criterion
train.output_dir = "./output/coco_hungarian"
