"""The synthetic Influencer config with a one-to-many query group beside the 20 one-to-one
queries, for the whole schedule (H-DETR's hybrid scheme, no matcher): 60 more learned queries
through the same decoder and heads, unseen by the one-to-one queries, supervised by the
Influencer criterion with about 3 owners per instance (``queries_per_instance=3``, a change of
the plan's marginals) at the one-to-one criterion's weights. Dropped at inference.

Group size and owners per instance: H-DETR uses 5x the one-to-one queries and 6 copies of the
ground truth for up to ~100 COCO instances; the synthetic images have 1-6 instances and 20
queries, so 3x the queries and 3 owners per instance leave the group room (18 owners at most
among 60) without a second tuning run. Not tuned on the evaluation set.
"""
from detectron2.config import LazyCall as L

from influencerformer.criterion import InfluencerCriterion

from .influencer import dataloader, lr_multiplier, model, optimizer, train

model.transformer_decoder.num_queries_one_to_many = 60
model.criterion_one_to_many = L(InfluencerCriterion)(
    num_classes="${..num_classes}",
    weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
    num_points=2048,
    queries_per_instance=3.0,
)
train.output_dir = "./output/synthetic_influencer_hybrid"
