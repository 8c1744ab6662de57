"""LR multiplier: x0.1 at 90 % and again at 95 % of ``train.max_iter`` (so overriding
``train.max_iter`` moves the steps with it), 10 constant warm-up iterations."""
from detectron2.config import LazyCall as L

from projects.mask2former.solver import step_lr_multiplier

lr_multiplier = L(step_lr_multiplier)(
    max_iter="${train.max_iter}",
    steps=[0.9, 0.95],
    gamma=0.1,
    warmup_iters=10,
    warmup_factor=1.0,
)
