"""COCO, Mask2Former R50, the Influencer criterion with a one-to-many query group (H-DETR's
hybrid scheme, no matcher): 300 extra training-only queries, about 3 owners per instance.
Not trained here (no GPU); the sizes follow configs/synthetic/influencer_hybrid.py's reasoning
(3x the one-to-one queries, 3 owners per instance), not a COCO measurement."""
from detectron2.config import LazyCall as L

from influencerformer.criterion import InfluencerCriterion

from .influencer import dataloader, lr_multiplier, model, optimizer, train

model.transformer_decoder.num_queries_one_to_many = 300
model.criterion_one_to_many = L(InfluencerCriterion)(
    num_classes="${..num_classes}",
    weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
    queries_per_instance=3.0,
)
train.output_dir = "./output/coco_influencer_hybrid"
