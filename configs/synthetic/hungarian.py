"""Synthetic shapes, small Mask2Former, Hungarian matching (baseline)."""
from ._base_ import dataloader, lr_multiplier, model, optimizer, train
from ..common.criterion import hungarian as _criterion

model.criterion = _criterion
train.output_dir = "./output/synthetic_hungarian"
# the masks are predicted at 32x32: fewer sampled points suffice
model.criterion.num_points = 2048
