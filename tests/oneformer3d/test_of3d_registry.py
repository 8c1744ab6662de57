"""Registration in mmdet3d's MODELS registry and building from config dicts."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from of3d_helpers import (REPO_ROOT, blob_masks, instance_data, mmdet3d_build_scope, mmdet3d_registry_or_skip,
                          oneformer3d_pred)

import projects.oneformer3d as adapter
from projects.oneformer3d import OneFormer3DInfluencerCriterion

CFG = dict(type="OneFormer3DInfluencerCriterion", num_classes=13, loss_weight=[0.5, 1.0, 0.5], non_object_weight=0.05,
           potentials=dict(attr_weight=1.0, rep_weight=1.0, bg_weight=0.1), assigner=dict(temperature=0.5),
           iter_matcher=True)

# Subprocesses see the repository root first, like the run scripts set it up.
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))

# Makes ``import mmdet3d`` fail in a subprocess, as on a machine without it.
BLOCK_MMDET3D = (
    "import sys, importlib.abc\n"
    "class _Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'mmdet3d' or name.startswith('mmdet3d.'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)')\n"
    "        return None\n"
    "sys.meta_path.insert(0, _Block())\n"
)


def _call(crit):
    g = torch.Generator().manual_seed(0)
    pred = oneformer3d_pred((8, 8), (60, 50), 13, num_aux=1, generator=g)
    insts = [instance_data(blob_masks(k, p, g), torch.randint(0, 13, (k,), generator=g)) for k, p in ((3, 60), (2, 50))]
    return crit(pred, insts)["inst_loss"]


def test_import_registers_in_mmdet3d_models():
    models = mmdet3d_registry_or_skip()
    assert adapter.registration_error() is None
    assert models.module_dict["OneFormer3DInfluencerCriterion"] is OneFormer3DInfluencerCriterion
    assert adapter.is_registered()
    # idempotent: registering again (a second import / reload) is not an error
    adapter.register(models)
    assert models.module_dict["OneFormer3DInfluencerCriterion"] is OneFormer3DInfluencerCriterion


def test_build_from_config_dict_through_mmdet3d_registry():
    with mmdet3d_build_scope() as models:
        crit = models.build(dict(CFG))
    assert isinstance(crit, OneFormer3DInfluencerCriterion)
    assert crit.loss_weight == [0.5, 1.0, 0.5] and crit.core.potentials.weights["background"] == 0.1
    assert crit.core.assigner.temperature == 0.5
    loss = _call(crit)
    assert torch.isfinite(loss)


def test_build_under_mmdet3d_default_scope():
    """What the Runner does: default scope 'mmdet3d', lookup through mmengine's root MODELS."""
    pytest.importorskip("mmengine")
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import DefaultScope

    with mmdet3d_build_scope():
        with DefaultScope.overwrite_default_scope("mmdet3d"):  # restores the scope state afterwards
            assert DefaultScope.get_current_instance().scope_name == "mmdet3d"
            crit = ROOT_MODELS.build(dict(CFG))
            scoped = ROOT_MODELS.build(dict(CFG, type="mmdet3d.OneFormer3DInfluencerCriterion"))
    assert isinstance(crit, OneFormer3DInfluencerCriterion)
    assert isinstance(scoped, OneFormer3DInfluencerCriterion)


def test_unknown_config_key_is_an_error():
    with mmdet3d_build_scope() as models:
        with pytest.raises(TypeError, match="fix_dice_loss_weight"):
            models.build(dict(CFG, fix_dice_loss_weight=True))


def test_name_clash_with_another_class_is_an_error():
    pytest.importorskip("mmengine")
    from mmengine.registry import Registry

    probe = Registry("of3d_probe")

    @probe.register_module(name="OneFormer3DInfluencerCriterion")
    class Other:  # noqa: D401 - a stand-in
        pass

    with pytest.raises(KeyError, match="already registered"):
        adapter.register(probe)
    fresh = Registry("of3d_probe_fresh")
    adapter.register(fresh)
    assert fresh.get("OneFormer3DInfluencerCriterion") is OneFormer3DInfluencerCriterion


def _run(code):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                          timeout=180)


def test_without_mmdet3d_core_and_adapter_import_unregistered():
    """One subprocess (torch start-up is slow on small CI machines) where mmdet3d cannot be
    imported: the core loads no mm* package, and the adapter imports unregistered and says why."""
    res = _run(BLOCK_MMDET3D +
               "import influencerformer, influencerformer.criterion, influencerformer.losses\n"
               "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mmdet3d', 'mmdet', 'mmengine', 'mmcv'))\n"
               "print('LOADED', bad)\n"
               "import projects.oneformer3d as a\n"
               "print('REGISTERED', a.is_registered())\n"
               "print('ERROR', a.registration_error())\n"
               "a.OneFormer3DInfluencerCriterion(num_classes=3)\n")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "LOADED []" in out
    assert "REGISTERED False" in out
    assert "ERROR mmdet3d is not importable" in out
