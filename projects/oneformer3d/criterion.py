"""OneFormer3D-facing wrapper of the shared Influencer criterion.

OneFormer3D's unified criteria (``S3DISUnifiedCriterion``, ``ScanNetUnifiedCriterion``) build
their ``inst_criterion`` from a config dict and call it as ``inst_criterion(pred, insts)``:

* ``pred['cls_preds']``: list over scenes of (n_queries, n_classes + 1) class logits;
* ``pred['masks']``: list over scenes of (n_queries, n_points) mask logits, where a "point" is
  whatever the model predicts over (points on S3DIS, superpoints on ScanNet);
* ``pred['scores']``: list over scenes of (n_queries, 1) objectness logits, or ``None`` entries
  (or no list at all) when the decoder runs without objectness;
* ``pred['aux_outputs']``: optional list of dicts with the same three lists, one per earlier
  decoder layer;
* ``insts``: list over scenes of ``InstanceData`` with ``sp_masks`` (n_gts, n_points) and
  ``labels_3d`` (n_gts,); an optional ``query_masks`` is accepted and not used.

and expect ``{'inst_loss': Tensor}`` back. This module only renames those fields into the
point form of :class:`influencerformer.criterion.InfluencerCriterion` and folds the returned
unweighted terms with the criterion's ``weight_dict``; every loss value is computed by the core.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Dict, List, Optional

from torch import Tensor

from influencerformer.criterion import InfluencerCriterion as CoreInfluencerCriterion
from influencerformer.losses import InfluencerPotentials
from influencerformer.matching import SinkhornAssigner

# Core term name -> position in OneFormer3D-style ``loss_weight``.
_WEIGHT_KEYS = ("loss_ce", "loss_influencer", "loss_score")

# How the core's names map back to OneFormer3D's, for error messages.
_NAME_HINT = ("[OneFormer3D -> core names: cls_preds -> pred_logits, masks -> pred_masks, "
              "scores -> pred_scores, insts[i].labels_3d -> targets[i]['labels'], "
              "insts[i].sp_masks -> targets[i]['masks']]")


def _field(inst: Any, name: str) -> Any:
    """Read ``name`` from an InstanceData-like object or a mapping; None when absent."""
    if isinstance(inst, Mapping):
        return inst.get(name)
    getter = getattr(inst, "get", None)
    if callable(getter):
        return getter(name, None)
    return getattr(inst, name, None)


def _scene_list(layer: Mapping, key: str, where: str) -> List[Tensor]:
    if key not in layer:
        raise ValueError(f"{where}: missing key {key!r}; got keys {sorted(layer)}")
    value = layer[key]
    if isinstance(value, Tensor) or not isinstance(value, Sequence):
        raise ValueError(f"{where}[{key!r}] must be a list with one tensor per scene; "
                         f"got {type(value).__name__}")
    return list(value)


def _scene_scores(layer: Mapping, num_scenes: int, where: str) -> Optional[List[Tensor]]:
    """``None`` when objectness is off (key absent, ``None``, or all entries ``None``)."""
    value = layer.get("scores")
    if value is None:
        return None
    if isinstance(value, Tensor) or not isinstance(value, Sequence):
        raise ValueError(f"{where}['scores'] must be a list with one (n_queries, 1) tensor (or None) "
                         f"per scene; got {type(value).__name__}")
    value = list(value)
    present = [s is not None for s in value]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"{where}['scores'] mixes tensors and None across scenes "
                         f"({present}); objectness must be on or off for the whole batch")
    if len(value) != num_scenes:
        raise ValueError(f"{where}['scores'] has {len(value)} scenes but {where}['masks'] has {num_scenes}")
    return value


# The measured 3D setting (docs/oneformer3d.md section 6): the Influencer potentials with the
# "owned" exclusion, and an ownership plan that sees the claims only, 40 annealed Sinkhorn
# iterations at T = 0.05. With the core's 2D defaults a network on a synthetic 31-instance room
# collapses to one silent mask (tests/oneformer3d/test_of3d_overfit.py).
DEFAULT_ASSIGNER = dict(cost_class=0.0, cost_mask=0.0, cost_dice=0.0, temperature=0.05)
DEFAULT_POTENTIALS = dict(exclusion="owned")


class OneFormer3DInfluencerCriterion:
    """Drop-in replacement for OneFormer3D's ``InstanceCriterion`` (registered as
    ``OneFormer3DInfluencerCriterion`` in mmdet3d's ``MODELS``; the core's class is ``InfluencerCriterion``).

    Args:
        num_classes: number of instance classes (the "no object" class is index ``num_classes``).
        loss_weight: ``[cls, influencer]`` or ``[cls, influencer, score]``; the third value
            weights the objectness term when the decoder predicts ``scores``.
        non_object_weight: class weight of "no object" in the classification loss
            (the core's ``eos_coef``).
        assigner: keywords of :class:`influencerformer.matching.SinkhornAssigner` over
            :data:`DEFAULT_ASSIGNER` (e.g. ``dict(temperature=0.1)``).
        potentials: keywords of :class:`influencerformer.losses.InfluencerPotentials` over
            :data:`DEFAULT_POTENTIALS` (e.g. ``dict(bg_weight=0.1)``, ``dict(formulation="original")``).
        iter_matcher: accepted so that OneFormer3D configs can switch criteria by changing
            ``type`` only; there is no matcher, so it has no effect.
        **criterion_kwargs: the core criterion's own keywords
            (:class:`influencerformer.criterion.InfluencerCriterion`, e.g. ``queries_per_instance``).
            OneFormer3D keeps its criterion outside the model's modules, so a
            ``queries_per_instance_iters`` schedule restarts when a run is resumed.
    """

    def __init__(self, num_classes: int, loss_weight: Sequence[float] = (0.5, 1.0, 0.5),
                 non_object_weight: float = 0.1, assigner: Optional[Mapping] = None,
                 potentials: Optional[Mapping] = None, iter_matcher: Optional[bool] = None, **criterion_kwargs):
        weights = [float(w) for w in loss_weight]
        if len(weights) not in (2, 3):
            raise ValueError(f"loss_weight must be [cls, influencer] or [cls, influencer, score]; "
                             f"got {list(loss_weight)}")
        self.num_classes = int(num_classes)
        self.loss_weight = weights
        self.iter_matcher = iter_matcher  # kept for config round-trips only
        self.use_scores = len(weights) == 3
        self._warned_scores = False
        self.core = CoreInfluencerCriterion(
            num_classes=self.num_classes,
            weight_dict=dict(zip(_WEIGHT_KEYS, weights)),
            eos_coef=non_object_weight,
            assigner=SinkhornAssigner(**{**DEFAULT_ASSIGNER, **(assigner or {})}),
            potentials=InfluencerPotentials(**{**DEFAULT_POTENTIALS, **(potentials or {})}),
            **criterion_kwargs,
        )
        self.last_losses: Dict[str, Tensor] = {}

    @property
    def weight_dict(self) -> Dict[str, float]:
        return self.core.weight_dict

    # -- format conversion -------------------------------------------------------------------
    def _layer(self, layer: Mapping, where: str) -> Dict[str, Any]:
        if not isinstance(layer, Mapping):
            raise ValueError(f"{where} must be a dict with 'cls_preds', 'masks' and 'scores'; "
                             f"got {type(layer).__name__}")
        masks = _scene_list(layer, "masks", where)
        cls_preds = _scene_list(layer, "cls_preds", where)
        if len(cls_preds) != len(masks):
            raise ValueError(f"{where}: 'cls_preds' has {len(cls_preds)} scenes but 'masks' has {len(masks)}")
        scores = _scene_scores(layer, len(masks), where)
        if scores is not None and not self.use_scores:
            if not self._warned_scores:
                warnings.warn("the decoder predicts objectness 'scores' but loss_weight has no third "
                              "(score) weight, so the objectness head is not trained; give "
                              "loss_weight=[cls, influencer, score] to train it", stacklevel=3)
                self._warned_scores = True
            scores = None
        return {"pred_logits": cls_preds, "pred_masks": masks, "pred_scores": scores}

    def convert(self, pred: Mapping, insts: Sequence[Any]):
        """OneFormer3D ``(pred, insts)`` -> the core's point-form ``(outputs, targets)``."""
        outputs = self._layer(pred, "pred")
        aux = pred.get("aux_outputs") or []
        outputs["aux_outputs"] = [self._layer(a, f"pred['aux_outputs'][{i}]") for i, a in enumerate(aux)]
        num_scenes = len(outputs["pred_masks"])
        if len(insts) != num_scenes:
            raise ValueError(f"got {len(insts)} scenes of ground truth (insts) for {num_scenes} scenes "
                             f"of predictions (pred['masks'])")
        targets = []
        for i, inst in enumerate(insts):
            masks = _field(inst, "sp_masks")
            labels = _field(inst, "labels_3d")
            if masks is None or labels is None:
                raise ValueError(f"insts[{i}] needs 'sp_masks' (n_gts, n_points) and 'labels_3d' (n_gts,); "
                                 f"got {type(inst).__name__} without "
                                 f"{'sp_masks' if masks is None else 'labels_3d'}")
            targets.append({"labels": labels, "masks": masks})
        return outputs, targets

    # -- the call OneFormer3D makes ----------------------------------------------------------
    def __call__(self, pred: Mapping, insts: Sequence[Any]) -> Dict[str, Tensor]:
        if not isinstance(pred, Mapping):
            raise ValueError(f"pred must be a dict of per-scene lists; got {type(pred).__name__}")
        outputs, targets = self.convert(pred, insts)
        try:
            losses = self.core(outputs, targets)
        except ValueError as err:
            raise ValueError(f"{err} {_NAME_HINT}") from err
        weights = self.core.weight_dict
        total = sum(weights[key] * value for key, value in losses.items())
        self.last_losses = dict(self.core.layer_losses)  # (num_layers,) per term, final layer first
        return {"inst_loss": total}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, loss_weight={self.loss_weight}, "
                f"core={self.core!r})")
