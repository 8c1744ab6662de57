"""Synthetic shapes, small Mask2Former, the Influencer ownership with the Influencer potentials
(the previous default criterion; docs/loss.md section 9)."""
from ._base_ import dataloader, lr_multiplier, model, optimizer, train
from ..common.criterion import influencer_potentials as _criterion

model.criterion = _criterion
train.output_dir = "./output/synthetic_influencer_potentials"
# the masks are predicted at 32x32: fewer sampled points suffice
model.criterion.num_points = 2048
