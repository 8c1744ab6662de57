"""Shared helpers for the OneFormer3D adapter tests (imported by the test modules; not a conftest
so that it cannot clash with other test folders' conftest files)."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The instance-criterion keys of configs/s3dis/influencer_*.py (besides type, num_classes and
# iter_matcher); test_of3d_configs checks that the config says exactly this, the overfit test
# trains with it.
S3DIS_CRITERION = dict(loss_weight=[0.5, 1.0, 0.5], non_object_weight=0.05, potentials=dict(bg_weight=0.1))


def load_synthetic_s3dis():
    """The synthetic S3DIS generator module."""
    from projects.oneformer3d import synthetic_s3dis

    return synthetic_s3dis


# -- mmdet3d availability -----------------------------------------------------------------------
def mmdet3d_registry_or_skip():
    """mmdet3d's MODELS registry; the test is skipped when mmdet3d is not installed."""
    pytest.importorskip("mmengine")
    try:
        from mmdet3d.registry import MODELS
    except ImportError as err:  # mmdet3d, or the mmcv / mmdet it checks on import, is missing
        pytest.skip(f"mmdet3d is not importable: {err}")
    return MODELS


_MODELS_IMPORTABLE = None


def mmdet3d_models_importable() -> bool:
    """Whether ``import mmdet3d.models`` works (it needs mmcv's compiled ops, numba, ...)."""
    global _MODELS_IMPORTABLE
    if _MODELS_IMPORTABLE is None:
        try:
            importlib.import_module("mmdet3d.models")
            _MODELS_IMPORTABLE = True
        except Exception:  # noqa: BLE001 - any failure means "not usable here"
            _MODELS_IMPORTABLE = False
    return _MODELS_IMPORTABLE


@contextlib.contextmanager
def mmdet3d_build_scope():
    """Yield mmdet3d's real ``MODELS`` registry, ready for ``MODELS.build(cfg)``.

    mmdet3d's registry imports its ``locations`` (``mmdet3d.models``) before the first lookup.
    That import needs mmcv's compiled ops, which the CI environment (mmcv-lite) does not have.
    In that case -- and only then -- an empty module stands in for ``mmdet3d.models`` while the
    block runs, and the registry's "already imported" flag is restored afterwards. Everything
    else is the real path: the object registered by ``projects.oneformer3d`` in mmdet3d's
    registry, mmengine's scope switching and ``build_from_cfg``.
    """
    registry = mmdet3d_registry_or_skip()
    if mmdet3d_models_importable():
        yield registry
        return
    import mmdet3d.registry as mmdet3d_registries
    from mmengine.registry import Registry

    # every mmdet3d registry whose lazy import this block may trigger (MODELS, TASK_UTILS, ...)
    flags = {reg: reg._imported for reg in vars(mmdet3d_registries).values() if isinstance(reg, Registry)}
    saved_module = sys.modules.get("mmdet3d.models")
    sys.modules["mmdet3d.models"] = types.ModuleType("mmdet3d.models")
    try:
        yield registry
    finally:
        if saved_module is None:
            sys.modules.pop("mmdet3d.models", None)
        else:
            sys.modules["mmdet3d.models"] = saved_module
        for reg, flag in flags.items():
            reg._imported = flag


# -- OneFormer3D's own source (optional) ---------------------------------------------------------
def oneformer3d_root():
    root = os.environ.get("ONEFORMER3D_ROOT")
    if not root or not (Path(root) / "oneformer3d" / "instance_criterion.py").is_file():
        return None
    return Path(root)


def import_oneformer3d_module(name: str):
    """Import ``oneformer3d.<name>`` from the checkout in ``ONEFORMER3D_ROOT`` (skip without it).

    The package's ``__init__`` imports every model part (spconv, MinkowskiEngine, ...); the
    criteria need none of them. Unless the real package is already imported, a bare package
    object pointing at the checkout stands in for it, so only the requested submodule (and
    what it imports) runs.
    """
    root = oneformer3d_root()
    if root is None:
        pytest.skip("ONEFORMER3D_ROOT does not point at a OneFormer3D checkout")
    mmdet3d_registry_or_skip()
    if "oneformer3d" not in sys.modules:
        package = types.ModuleType("oneformer3d")
        package.__path__ = [str(root / "oneformer3d")]
        sys.modules["oneformer3d"] = package
    return importlib.import_module(f"oneformer3d.{name}")


# -- OneFormer3D-shaped inputs --------------------------------------------------------------------
class _FieldDict(dict):
    """A dict whose items are also attributes: what the tests read off ``InstanceData``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def instance_data(masks: torch.Tensor, labels: torch.Tensor):
    """An mmengine ``InstanceData`` with ``sp_masks`` / ``labels_3d`` (without mmengine, a dict whose
    items are also attributes)."""
    try:
        from mmengine.structures import InstanceData
    except ImportError:
        return _FieldDict(sp_masks=masks, labels_3d=labels)
    data = InstanceData()
    data.sp_masks = masks
    data.labels_3d = labels
    return data


def blob_masks(num_inst: int, num_points: int, generator: torch.Generator, overlap: bool = False) -> torch.Tensor:
    """(K, P) bool masks of disjoint contiguous runs of points (optionally one overlap)."""
    masks = torch.zeros(num_inst, num_points, dtype=torch.bool)
    if num_inst == 0:
        return masks
    order = torch.randperm(num_points, generator=generator)
    chunk = max(1, num_points // (num_inst + 2))
    for k in range(num_inst):
        masks[k, order[k * chunk:(k + 1) * chunk]] = True
    if overlap and num_inst > 1:
        masks[1, order[:chunk // 2]] = True
    return masks


def oneformer3d_pred(queries, points, num_classes, num_aux=2, scores=True, generator=None, requires_grad=True):
    """A OneFormer3D decoder output: per-scene lists plus ``aux_outputs``."""
    def layer():
        out = {
            "cls_preds": [torch.randn(q, num_classes + 1, generator=generator) for q in queries],
            "masks": [torch.randn(q, p, generator=generator) * 3 for q, p in zip(queries, points)],
            "scores": [torch.randn(q, 1, generator=generator) if scores else None for q in queries],
        }
        if requires_grad:
            for key in ("cls_preds", "masks"):
                out[key] = [t.requires_grad_() for t in out[key]]
        return out

    pred = layer()
    pred["aux_outputs"] = [layer() for _ in range(num_aux)]
    return pred


def leaf_tensors(pred):
    layers = [pred] + list(pred.get("aux_outputs", []))
    return [t for layer in layers for key in ("cls_preds", "masks") for t in layer[key]]
