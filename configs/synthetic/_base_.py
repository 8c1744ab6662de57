"""Synthetic-shapes recipe: the scaled-down model on 128 px images, sized to train on
2 CPU cores in about 15 minutes (criterion left open; use influencer.py / hungarian.py)."""
from ..common.data.synthetic import dataloader
from ..common.models.mask2former_small import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

model.num_classes = 5

# trained from scratch: no ImageNet weights, full learning rate in the backbone
optimizer.lr = 4e-4
optimizer.params.backbone_multiplier = 1.0
optimizer.clip_grad_norm = 0.01

train.max_iter = 1000
train.init_checkpoint = ""
train.amp.enabled = False
train.checkpointer.period = 250
train.eval_period = 250
train.log_period = 20
train.seed = 0
train.diagnostics.period = 50
