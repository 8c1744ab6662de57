"""The synthetic Hungarian config with the one-to-many query group of influencer_hybrid.py: the
same 60 extra queries, supervised as H-DETR does -- the ground truth repeated 3 times and matched
to the group by the same Hungarian criterion -- so the A/B separates what the hybrid supervision
gives either criterion from what the matcher-free ownership adds."""
from detectron2.config import LazyCall as L

from projects.mask2former.hybrid import RepeatedTargetsCriterion

from ..common.criterion import hungarian as _group_criterion
from .hungarian import dataloader, lr_multiplier, model, optimizer, train

model.transformer_decoder.num_queries_one_to_many = 60
model.criterion_one_to_many = L(RepeatedTargetsCriterion)(criterion=_group_criterion, repeats=3)
model.criterion_one_to_many.criterion.num_classes = "${...num_classes}"
model.criterion_one_to_many.criterion.num_points = 2048
train.output_dir = "./output/synthetic_hungarian_hybrid"
