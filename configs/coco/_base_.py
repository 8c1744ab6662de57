"""Mask2Former R50 COCO instance-segmentation recipe, criterion left open.

Batch 16, 368,750 iterations (50 epochs), AdamW lr 1e-4 / wd 0.05, backbone lr x0.1,
LR x0.1 at 90 % and 95 %, full-model gradient clipping 0.01, AMP, large-scale jitter
(1024, 0.1-2.0), COCOEvaluator on coco_2017_val.  Not meant to be run directly:
use influencer.py or hungarian.py next to it.
"""
from ..common.data.coco_instance_lsj import dataloader
from ..common.models.mask2former_r50 import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

model.num_classes = 80

train.max_iter = 368750
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.amp.enabled = True
train.checkpointer.period = 5000
train.eval_period = 5000
train.output_dir = "./output/coco"
