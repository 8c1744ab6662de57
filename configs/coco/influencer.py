"""COCO instance segmentation, Mask2Former R50, trained with the matcher-free Influencer criterion
(ownership + Mask2Former's owner losses; configs/common/criterion.py)."""
from ._base_ import dataloader, lr_multiplier, model, optimizer, train
from ..common.criterion import influencer as _criterion

model.criterion = _criterion
train.output_dir = "./output/coco_influencer"
