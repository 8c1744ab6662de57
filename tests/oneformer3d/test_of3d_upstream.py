"""Against OneFormer3D's own code: its unified criteria build the adapter as ``inst_criterion``
and call it the way training does. Needs ``ONEFORMER3D_ROOT`` pointing at a OneFormer3D
checkout (skipped otherwise; OneFormer3D is not on the package registry)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from of3d_helpers import (REPO_ROOT, blob_masks, import_oneformer3d_module, mmdet3d_build_scope,
                          mmdet3d_models_importable, oneformer3d_root)

from projects.oneformer3d import OneFormer3DInfluencerCriterion

N_INST_CLS = 13  # S3DIS
N_SEM = 13


@pytest.fixture(scope="module")
def upstream():
    mods = {name: import_oneformer3d_module(name)
            for name in ("structures", "instance_criterion", "semantic_criterion", "unified_criterion")}
    return mods


def seg_loss_cfg():
    """S3DISSemanticCriterion's default seg loss is mmdet's CrossEntropyLoss, which needs mmdet's
    models (mmcv ops). Without them a plain cross-entropy stands in; the semantic branch is not
    what these tests are about."""
    if mmdet3d_models_importable():
        return {}
    from mmdet3d.registry import MODELS

    if "OF3DTestSegLoss" not in MODELS.module_dict:
        @MODELS.register_module(name="OF3DTestSegLoss")
        class _SegLoss:  # noqa: D401 - stand-in
            def __call__(self, pred, target):
                return F.cross_entropy(pred, target, ignore_index=pred.shape[1])  # "unlabeled" = C
    return {"seg_loss": dict(type="OF3DTestSegLoss")}


INFLUENCER = dict(type="OneFormer3DInfluencerCriterion", num_classes=N_INST_CLS, loss_weight=[0.5, 1.0, 0.5],
                  non_object_weight=0.05, potentials=dict(bg_weight=0.1), iter_matcher=True)
HUNGARIAN = dict(type="InstanceCriterion",
                 matcher=dict(type="HungarianMatcher", costs=[dict(type="QueryClassificationCost", weight=0.5),
                                                              dict(type="MaskBCECost", weight=1.0),
                                                              dict(type="MaskDiceCost", weight=1.0)]),
                 loss_weight=[0.5, 1.0, 1.0, 0.5], num_classes=N_INST_CLS, non_object_weight=0.05,
                 fix_dice_loss_weight=True, iter_matcher=True, fix_mean_loss=True)


def s3dis_batch(upstream, g, n_inst_queries=20, points=(300, 240), counts=(6, 0), num_aux=2):
    """S3DIS decoder output (instance + semantic queries) and ground truth as OneFormer3D
    builds them in ``S3DISOneFormer3D.loss``."""
    q = n_inst_queries + N_SEM

    def layer():
        return {"cls_preds": [torch.randn(q, N_INST_CLS + 1, generator=g).requires_grad_() for _ in points],
                "masks": [(torch.randn(q, p, generator=g) * 3).requires_grad_() for p in points],
                "scores": [torch.randn(q, 1, generator=g).requires_grad_() for _ in points]}

    pred = layer()
    pred["aux_outputs"] = [layer() for _ in range(num_aux)]
    insts = []
    for k, p in zip(counts, points):
        gt = upstream["structures"].InstanceData_()
        gt.sp_inst_masks = blob_masks(k, p, g)
        gt.labels_3d = torch.randint(0, N_INST_CLS, (k,), generator=g)
        sem = torch.randint(0, N_SEM + 1, (p,), generator=g)
        gt.sp_sem_masks = F.one_hot(sem, N_SEM + 1).T.bool()
        insts.append(gt)
    return pred, insts


def fresh_lists(pred):
    """The same tensors in new lists (S3DISUnifiedCriterion replaces list items in place)."""
    out = {key: list(pred[key]) for key in ("cls_preds", "masks", "scores")}
    out["aux_outputs"] = [fresh_lists(a) for a in pred.get("aux_outputs", [])]
    return out


def instance_part(pred):
    """What S3DISUnifiedCriterion hands to inst_criterion: the instance queries only."""
    def cut(layer):
        return {key: [t[:-N_SEM] for t in layer[key]] for key in ("cls_preds", "masks", "scores")}

    out = cut(pred)
    out["aux_outputs"] = [cut(a) for a in pred["aux_outputs"]]
    return out


def test_s3dis_unified_criterion_calls_the_adapter(upstream):
    g = torch.Generator().manual_seed(0)
    pred, insts = s3dis_batch(upstream, g)
    with mmdet3d_build_scope() as models:
        unified = models.build(dict(type="S3DISUnifiedCriterion", num_semantic_classes=N_SEM,
                                    sem_criterion=dict(type="S3DISSemanticCriterion", loss_weight=5.0,
                                                       **seg_loss_cfg()),
                                    inst_criterion=dict(INFLUENCER)))
    assert isinstance(unified.inst_criterion, OneFormer3DInfluencerCriterion)
    expected_pred = instance_part(pred)
    expected_gt = [{"sp_masks": i.sp_inst_masks, "labels_3d": i.labels_3d} for i in insts]
    leaves = list(pred["masks"])
    losses = unified(fresh_lists(pred), insts)  # it slices the lists in place
    assert {"inst_loss", "last_layer_seg_loss"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    direct = OneFormer3DInfluencerCriterion(**{k: v for k, v in INFLUENCER.items() if k != "type"})
    torch.testing.assert_close(losses["inst_loss"], direct(expected_pred, expected_gt)["inst_loss"])
    total = sum(losses.values())
    total.backward()
    assert all(torch.isfinite(m.grad).all() for m in leaves)


def test_baseline_and_influencer_take_the_same_call(upstream):
    """OneFormer3D's InstanceCriterion and the adapter on identical inputs: both return a finite
    ``inst_loss`` (the interface is the same; the values are not meant to agree)."""
    g = torch.Generator().manual_seed(1)
    pred, insts = s3dis_batch(upstream, g, counts=(5, 7))
    inst_pred = instance_part(pred)
    gts = []
    for i in insts:
        gt = upstream["structures"].InstanceData_()
        gt.sp_masks, gt.labels_3d = i.sp_inst_masks, i.labels_3d
        gts.append(gt)
    with mmdet3d_build_scope() as models:
        baseline = models.build(dict(HUNGARIAN))
        influencer = models.build(dict(INFLUENCER))
    assert type(baseline).__name__ == "InstanceCriterion"
    out_b = baseline(inst_pred, gts)
    out_i = influencer(inst_pred, gts)
    assert set(out_b) == set(out_i) == {"inst_loss"}
    assert torch.isfinite(out_b["inst_loss"]) and torch.isfinite(out_i["inst_loss"])


def test_scannet_unified_criterion_without_objectness_and_with_query_masks(upstream):
    g = torch.Generator().manual_seed(2)
    n_sem, n_cls, n_sp = 20, 18, 80
    queries = n_sp  # ScanNet: queries are superpoints

    def layer():
        return {"cls_preds": [torch.randn(queries, n_cls + 1, generator=g).requires_grad_() for _ in range(2)],
                "sem_preds": [torch.randn(queries, n_sem + 1, generator=g).requires_grad_() for _ in range(2)],
                "masks": [(torch.randn(queries, n_sp, generator=g) * 3).requires_grad_() for _ in range(2)],
                "scores": [None, None]}

    pred = layer()
    pred["aux_outputs"] = [layer() for _ in range(3)]
    insts = []
    for k in (4, 0):
        gt = upstream["structures"].InstanceData_()
        sem = F.one_hot(torch.randint(0, n_sem + 1, (n_sp,), generator=g), n_sem + 1).T.bool()
        gt.sp_masks = torch.cat([blob_masks(k, n_sp, g), sem])
        gt.labels_3d = torch.cat([torch.randint(0, n_cls, (k,), generator=g), torch.arange(n_sem + 1)])
        gt.query_masks = torch.cat([blob_masks(k, queries, g), sem])
        insts.append(gt)
    with mmdet3d_build_scope() as models:
        unified = models.build(dict(
            type="ScanNetUnifiedCriterion", num_semantic_classes=n_sem,
            sem_criterion=dict(type="ScanNetSemanticCriterion", ignore_index=n_sem, loss_weight=0.2),
            inst_criterion=dict(type="OneFormer3DInfluencerCriterion", num_classes=n_cls, loss_weight=[0.5, 1.0],
                                non_object_weight=0.1, iter_matcher=True)))
    losses = unified(pred, insts)
    assert set(losses) == {"inst_loss", "seg_loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert not any(k.startswith("loss_score") for k in unified.inst_criterion.last_losses)
    sum(losses.values()).backward()
    assert all(torch.isfinite(m.grad).all() for m in pred["masks"])


def test_real_influencer_config_builds_the_unified_criterion(upstream):
    """configs/s3dis/influencer_*.py on top of the real OneFormer3D config: its whole
    ``model.criterion`` builds through the registry with the adapter inside."""
    from mmengine.config import Config

    if oneformer3d_root() is None:
        pytest.skip("ONEFORMER3D_ROOT does not point at a OneFormer3D checkout")
    cfg = Config.fromfile(str(REPO_ROOT / "configs/s3dis/influencer_oneformer3d_s3dis-area-5.py"),
                          import_custom_modules=False)
    criterion = cfg.model.criterion.to_dict()
    criterion["sem_criterion"].update(seg_loss_cfg())
    with mmdet3d_build_scope() as models:
        unified = models.build(criterion)
    assert type(unified).__name__ == "S3DISUnifiedCriterion"
    assert isinstance(unified.inst_criterion, OneFormer3DInfluencerCriterion)
    assert unified.inst_criterion.core.loss_kwargs["bg_weight"] == 0.1
    g = torch.Generator().manual_seed(3)
    pred, insts = s3dis_batch(upstream, g, n_inst_queries=cfg.model.decoder.num_instance_queries // 20)
    losses = unified(pred, insts)
    assert all(torch.isfinite(v) for v in losses.values())
