"""Synthetic shapes, small Mask2Former, the matcher-free Influencer criterion (ownership +
Mask2Former's owner losses; configs/common/criterion.py)."""
from ._base_ import dataloader, lr_multiplier, model, optimizer, train
from ..common.criterion import influencer as _criterion

model.criterion = _criterion
train.output_dir = "./output/synthetic_influencer"
# the masks are predicted at 32x32: fewer sampled points suffice
model.criterion.num_points = 2048
