"""COCO, Mask2Former R50, Hungarian matching with the one-to-many query group of
influencer_hybrid.py, supervised as H-DETR does: the ground truth repeated 3 times and matched to
the group's 300 queries. Not trained here (no GPU)."""
from detectron2.config import LazyCall as L

from projects.mask2former.hybrid import RepeatedTargetsCriterion

from ..common.criterion import hungarian as _group_criterion
from .hungarian import dataloader, lr_multiplier, model, optimizer, train

model.transformer_decoder.num_queries_one_to_many = 300
model.criterion_one_to_many = L(RepeatedTargetsCriterion)(criterion=_group_criterion, repeats=3)
model.criterion_one_to_many.criterion.num_classes = "${...num_classes}"
train.output_dir = "./output/coco_hungarian_hybrid"
