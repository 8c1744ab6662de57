"""COCO instance segmentation, Mask2Former R50, the Influencer ownership with the Influencer
potentials (the previous default criterion; docs/loss.md section 9)."""
from ._base_ import dataloader, lr_multiplier, model, optimizer, train
from ..common.criterion import influencer_potentials as _criterion

model.criterion = _criterion
train.output_dir = "./output/coco_influencer_potentials"
