"""detectron2 training hook: assignment diagnostics of the criterion, logged to ``metrics.json``.

Every ``period`` iterations the model predicts a fixed probe batch (eval mode, no gradient,
the RNG state left untouched so both criteria of an A/B see the same data and sampling), the
criterion scores it, and :func:`influencerformer.diagnostics.assignment_diagnostics` turns the
criterion's assignments (Hungarian: matches; Influencer: ownership) into ``diag/*`` scalars:

* ``diag/unique_best_share``, ``diag/multi_claim_share``, ``diag/owner_iou``,
* ``diag/owner_change_rate``: owners that changed since the previous logging step.
"""
from __future__ import annotations

import copy

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.engine import HookBase
from detectron2.utils import comm

from influencerformer.diagnostics import query_objectness
from influencerformer.diagnostics import assignment_diagnostics, owners_of

PREFIX = "diag/"


def probe_grid_size(pred_masks: torch.Tensor, targets: Sequence[Dict], max_side: int = 256) -> Tuple[int, int]:
    """(h, w) of the grid :func:`probe_point_masks` flattens: the padded input size, scaled down
    to at most ``max_side``."""
    height, width = targets[0]["masks"].shape[-2:] if targets else pred_masks.shape[-2:]
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def probe_point_masks(pred_masks: torch.Tensor, targets: Sequence[Dict], max_side: int = 256):
    """Per image (Q, P) logits and (K, P) GT on one common grid of at most ``max_side``.

    Args:
        pred_masks: (B, Q, h, w) mask logits at the mask-feature resolution.
        targets: per image ``{"masks": (K, H, W)}`` at the padded input size.
    """
    size = probe_grid_size(pred_masks, targets, max_side)
    logits = F.interpolate(pred_masks.float(), size=size, mode="bilinear", align_corners=False).flatten(2)
    gts = []
    for t in targets:
        masks = t["masks"].float()
        if masks.shape[0]:
            masks = F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        else:
            masks = masks.new_zeros(0, *size)
        gts.append((masks > 0.5).float().flatten(1))
    return list(logits.unbind(0)), gts


def unaugmented_inputs(cfg, num_images: int, dataset_names=None) -> List[Dict]:
    """The first ``num_images`` images of ``dataset_names`` (default: the training datasets),
    mapped by the training mapper without augmentation: model inputs with their ``instances``."""
    from detectron2.config import instantiate

    dataset_cfg = copy.deepcopy(cfg.dataloader.train.dataset)
    if dataset_names:
        dataset_cfg.names = dataset_names
    dicts = instantiate(dataset_cfg)[:num_images]
    mapper_cfg = copy.deepcopy(cfg.dataloader.train.mapper)
    mapper_cfg.augmentations = []
    mapper = instantiate(mapper_cfg)
    return [mapper(d) for d in dicts]


class AssignmentDiagnosticsHook(HookBase):
    """Logs ``diag/*`` every ``period`` iterations (and after the last) on ``probe_inputs``.

    Args:
        probe_inputs: mapped training-format inputs (with ``instances``), the same every time.
        period: iterations between two logging steps.
    """

    def __init__(self, probe_inputs: List[Dict], period: int):
        if period <= 0:
            raise ValueError(f"period must be > 0; got {period}")
        if not probe_inputs:
            raise ValueError("probe_inputs is empty: the diagnostics need at least one image")
        self.probe_inputs = list(probe_inputs)
        self.period = int(period)
        self._previous_owners: Optional[List[torch.Tensor]] = None

    @staticmethod
    def _unwrap(model):
        return model.module if hasattr(model, "module") else model

    @torch.no_grad()
    def compute(self, model) -> Dict[str, float]:
        """The diagnostics of ``model`` on the probe batch (runs on every rank: the criterion
        averages its instance count over workers)."""
        model = self._unwrap(model)
        criterion = model.criterion
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                images = model.preprocess_image(self.probe_inputs)
                outputs = model.predict(images.tensor)
                targets = model.prepare_targets(self.probe_inputs, images)
                criterion(outputs, targets)
        finally:
            model.train(was_training)
        assignments = [a.detach().float().cpu() for a in criterion.last_assignments]
        logits, gts = probe_point_masks(outputs["pred_masks"], targets)
        objectness = list(query_objectness(outputs["pred_logits"]).cpu())
        stats = assignment_diagnostics([x.cpu() for x in logits], [g.cpu() for g in gts], assignments,
                                       previous_owners=self._previous_owners, objectness=objectness)
        self._previous_owners = owners_of(assignments)
        return stats

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter % self.period and next_iter != self.trainer.max_iter:
            return
        stats = self.compute(self.trainer.model)
        if comm.is_main_process():
            self.trainer.storage.put_scalars(**{PREFIX + k: v for k, v in stats.items()}, smoothing_hint=False)
