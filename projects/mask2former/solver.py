"""Optimiser and LR schedule of the Mask2Former recipe, as LazyConfig-friendly factories."""

import itertools
from typing import Dict, Iterable, List, Sequence

import torch
from torch import nn

from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import reduce_param_groups
from fvcore.common.param_scheduler import MultiStepParamScheduler

__all__ = ["mask2former_param_groups", "build_optimizer", "step_lr_multiplier"]

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def mask2former_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    backbone_multiplier: float = 0.1,
    backbone_prefix: str = "backbone.",
) -> List[Dict]:
    """Parameter groups: backbone parameters at ``base_lr * backbone_multiplier``;
    normalisation layers and ``nn.Embedding`` without weight decay (Mask2Former's rule)."""
    groups, seen = [], set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            lr = base_lr * (backbone_multiplier if full_name.startswith(backbone_prefix) else 1.0)
            wd = weight_decay
            if isinstance(module, _NORM_TYPES):
                wd = weight_decay_norm
            elif isinstance(module, nn.Embedding):
                wd = weight_decay_embed
            groups.append({"params": [param], "lr": lr, "weight_decay": wd})
    return reduce_param_groups(groups)


def _clipped(optimizer_cls, max_norm: float):
    class FullModelGradClip(optimizer_cls):
        """Clips the global gradient norm over all parameters before every step."""

        def step(self, closure=None):
            params = itertools.chain.from_iterable(group["params"] for group in self.param_groups)
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure=closure)

    FullModelGradClip.__name__ = f"FullModelGradClip{optimizer_cls.__name__}"
    FullModelGradClip.__qualname__ = FullModelGradClip.__name__
    return FullModelGradClip


def build_optimizer(
    params: Iterable, optimizer: str = "AdamW", clip_grad_norm: float = 0.0, **kwargs
) -> torch.optim.Optimizer:
    """``torch.optim.<optimizer>(params, **kwargs)``; with ``clip_grad_norm > 0`` the global
    (full-model) gradient norm is clipped to it before each step. Under detectron2's
    AMPTrainer the grad scaler unscales the gradients before ``step``, so the clip sees
    true gradients."""
    optimizer_cls = getattr(torch.optim, optimizer)
    if clip_grad_norm and clip_grad_norm > 0:
        optimizer_cls = _clipped(optimizer_cls, float(clip_grad_norm))
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return optimizer_cls(params, **kwargs)


def step_lr_multiplier(
    max_iter: int,
    steps: Sequence[float] = (0.9, 0.95),
    gamma: float = 0.1,
    warmup_iters: int = 10,
    warmup_factor: float = 1.0,
) -> WarmupParamScheduler:
    """LR multiplier: ``gamma ** k`` after the k-th step; steps are fractions of ``max_iter``."""
    max_iter = int(max_iter)
    milestones = sorted({min(max(int(round(s * max_iter)), 1), max_iter - 1) for s in steps}) if max_iter > 1 else []
    values = [gamma**k for k in range(len(milestones) + 1)]
    scheduler = MultiStepParamScheduler(values=values, milestones=milestones, num_updates=max_iter)
    return WarmupParamScheduler(
        scheduler,
        warmup_factor=warmup_factor,
        warmup_length=min(warmup_iters / max(max_iter, 1), 1.0),
        warmup_method="linear",
    )
