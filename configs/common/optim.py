"""AdamW of the Mask2Former recipe: lr 1e-4, weight decay 0.05 (none on norms and
embeddings), backbone lr x 0.1, full-model gradient-norm clipping at 0.01.

``optimizer.params.model`` is set to the model by tools/train_net.py.
"""
from detectron2.config import LazyCall as L

from projects.mask2former.solver import build_optimizer, mask2former_param_groups

AdamW = L(build_optimizer)(
    params=L(mask2former_param_groups)(
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        weight_decay_norm=0.0,
        weight_decay_embed=0.0,
        backbone_multiplier=0.1,
    ),
    optimizer="AdamW",
    lr=1e-4,
    betas=[0.9, 0.999],
    weight_decay=0.05,
    clip_grad_norm=0.01,
)
