"""The OneFormer3D adapter: interface, format conversion, one code path with the core."""
from __future__ import annotations

import warnings

import pytest
import torch

from of3d_helpers import blob_masks, instance_data, leaf_tensors, oneformer3d_pred

from influencerformer.criterion import InfluencerCriterion as CoreCriterion
from influencerformer.losses import InfluencerPotentials, mask_influencer_loss
from influencerformer.matching import SinkhornAssigner
from projects.oneformer3d import OneFormer3DInfluencerCriterion

NUM_CLASSES = 13


def make_insts(counts, points, generator, overlap=False):
    insts = []
    for k, p in zip(counts, points):
        insts.append(instance_data(blob_masks(k, p, generator, overlap=overlap),
                                   torch.randint(0, NUM_CLASSES, (k,), generator=generator)))
    return insts


def criterion(**kwargs):
    cfg = dict(num_classes=NUM_CLASSES, loss_weight=[0.5, 1.0, 0.5], non_object_weight=0.05,
               potentials=dict(bg_weight=0.1))
    cfg.update(kwargs)
    return OneFormer3DInfluencerCriterion(**cfg)


# Three scenes with different query counts (ScanNet samples queries per scene), one scene
# without instances and one with more instances than queries.
QUERIES = (12, 6, 15)
POINTS = (240, 150, 300)
COUNTS = (5, 9, 0)


@pytest.mark.parametrize("scores", [True, False])
def test_oneformer3d_shaped_call(scores):
    g = torch.Generator().manual_seed(0)
    pred = oneformer3d_pred(QUERIES, POINTS, NUM_CLASSES, num_aux=2, scores=scores, generator=g)
    insts = make_insts(COUNTS, POINTS, g, overlap=True)
    crit = criterion()
    out = crit(pred, insts)
    assert set(out) == {"inst_loss"}
    loss = out["inst_loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    expected = {"loss_ce", "loss_influencer"} | ({"loss_score"} if scores else set())
    assert set(crit.last_losses) == expected
    assert all(v.shape == (3,) for v in crit.last_losses.values())  # the final layer and 2 aux layers
    loss.backward()
    for t in leaf_tensors(pred):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    # every decoder layer is supervised: each aux layer's masks get a gradient
    assert all(m.grad.abs().sum() > 0 for layer in pred["aux_outputs"] for m in layer["masks"][:2])


@pytest.mark.parametrize("form", ["missing", "none", "list_of_none"])
def test_objectness_off_variants(form):
    g = torch.Generator().manual_seed(1)
    pred = oneformer3d_pred(QUERIES, POINTS, NUM_CLASSES, num_aux=1, scores=False, generator=g)
    if form == "missing":
        for layer in [pred] + pred["aux_outputs"]:
            del layer["scores"]
    elif form == "none":
        for layer in [pred] + pred["aux_outputs"]:
            layer["scores"] = None
    crit = criterion()
    out = crit(pred, make_insts(COUNTS, POINTS, g))
    assert torch.isfinite(out["inst_loss"])
    assert not any(k.startswith("loss_score") for k in crit.last_losses)


def test_scores_without_score_weight_warns_and_skips_objectness():
    g = torch.Generator().manual_seed(2)
    pred = oneformer3d_pred(QUERIES, POINTS, NUM_CLASSES, num_aux=0, scores=True, generator=g)
    crit = criterion(loss_weight=[0.5, 1.0])
    with pytest.warns(UserWarning, match="objectness"):
        crit(pred, make_insts(COUNTS, POINTS, g))
    assert "loss_score" not in crit.last_losses
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        crit(pred, make_insts(COUNTS, POINTS, g))


@pytest.mark.parametrize("formulation", ["exclusive", "original"])
def test_mask_term_is_the_core_mask_influencer_loss(formulation):
    """With only the mask weight on, the adapter's loss is the core function on the same tensors
    (value and gradient): no loss arithmetic of its own."""
    g = torch.Generator().manual_seed(3)
    pred = oneformer3d_pred(QUERIES, POINTS, NUM_CLASSES, num_aux=0, scores=False, generator=g)
    insts = make_insts(COUNTS, POINTS, g, overlap=True)
    weights = dict(attr_weight=0.7, rep_weight=1.3, bg_weight=0.1)
    if formulation == "original":
        crit = criterion(loss_weight=[0.0, 1.0], potentials=dict(weights, formulation="original", temperature=0.4))
    else:
        crit = criterion(loss_weight=[0.0, 1.0], potentials=weights, assigner=dict(temperature=0.4))
    loss = crit(pred, insts)["inst_loss"]
    (grad_adapter,) = torch.autograd.grad(loss, pred["masks"][0])

    masks = [m.detach().clone().requires_grad_() for m in pred["masks"]]
    exclusion = {"exclusion": "owned"} if formulation == "exclusive" else {}
    direct = torch.stack([
        mask_influencer_loss(m, inst.sp_masks, formulation=formulation, temperature=0.4, **weights, **exclusion)["loss"]
        for m, inst in zip(masks, insts)]).mean()
    (grad_direct,) = torch.autograd.grad(direct, masks[0])
    torch.testing.assert_close(loss, direct)
    torch.testing.assert_close(crit.last_losses["loss_influencer"][0], direct.detach())
    torch.testing.assert_close(grad_adapter, grad_direct)


def test_total_is_the_weighted_sum_of_the_core_terms():
    g = torch.Generator().manual_seed(4)
    pred = oneformer3d_pred(QUERIES, POINTS, NUM_CLASSES, num_aux=2, scores=True, generator=g, requires_grad=False)
    insts = make_insts(COUNTS, POINTS, g)
    crit = criterion(loss_weight=[0.3, 2.0, 0.7])
    total = crit(pred, insts)["inst_loss"]

    core = CoreCriterion(NUM_CLASSES, {"loss_ce": 0.3, "loss_influencer": 2.0, "loss_score": 0.7}, eos_coef=0.05,
                         assigner=SinkhornAssigner(0.0, 0.0, 0.0, temperature=0.05),
                         potentials=InfluencerPotentials(bg_weight=0.1, exclusion="owned"))
    outputs, targets = crit.convert(pred, insts)
    terms = core(outputs, targets)
    assert set(terms) == set(crit.last_losses)
    expected = sum(core.weight_dict[k] * v for k, v in terms.items())
    torch.testing.assert_close(total, expected)


def test_config_keys_reach_the_core():
    crit = criterion(loss_weight=[0.5, 1.0, 0.25], non_object_weight=0.07, iter_matcher=True,
                     potentials=dict(attr_weight=2.0, rep_weight=3.0, bg_weight=0.1, formulation="original",
                                     temperature=0.3))
    core = crit.core
    assert core.eos_coef == 0.07
    assert core.class_weight[-1].item() == pytest.approx(0.07) and core.class_weight[:-1].eq(1).all()
    assert core.weight_dict == {"loss_ce": 0.5, "loss_influencer": 1.0, "loss_score": 0.25}
    assert core.potentials.formulation == "original" and core.potentials.temperature == 0.3
    assert core.potentials.weights == {"attractive": 2.0, "repulsive": 3.0, "background": 0.1, "exclusion": 0.0}
    # the measured 3D setting is the default: the "owned" exclusion, a 40-step annealed plan at T = 0.05
    default = criterion().core
    assert default.potentials.exclusion == "owned" and default.potentials.weights["background"] == 0.1
    assert (default.assigner.temperature, default.assigner.num_iters, default.assigner.anneal) == (0.05, 40, True)
    assert (default.assigner.cost_class, default.assigner.cost_mask, default.assigner.cost_dice) == (0.0, 0.0, 0.0)
    plain = criterion(assigner=dict(num_iters=10, anneal=False, detach=False)).core.assigner
    assert (plain.num_iters, plain.anneal, plain.detach, plain.temperature) == (10, False, False, 0.05)
    one_to_few = criterion(queries_per_instance=2.0, queries_per_instance_iters=100).core
    assert (one_to_few.queries_per_instance, one_to_few.queries_per_instance_iters) == (2.0, 100)
    with pytest.raises(TypeError, match="rep_margin"):
        criterion(potentials=dict(rep_margin=0.5))


def test_iter_matcher_and_query_masks_do_not_change_the_loss():
    g = torch.Generator().manual_seed(5)
    pred = oneformer3d_pred(QUERIES, POINTS, NUM_CLASSES, num_aux=1, scores=True, generator=g, requires_grad=False)
    insts = make_insts(COUNTS, POINTS, g)
    a = criterion(iter_matcher=True)(pred, insts)["inst_loss"]
    b = criterion(iter_matcher=False)(pred, insts)["inst_loss"]
    for inst, q in zip(insts, QUERIES):
        inst.query_masks = torch.ones(len(inst.labels_3d), q, dtype=torch.bool)
    c = criterion()(pred, insts)["inst_loss"]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_plain_dict_ground_truth_is_accepted():
    g = torch.Generator().manual_seed(6)
    pred = oneformer3d_pred(QUERIES, POINTS, NUM_CLASSES, num_aux=0, generator=g, requires_grad=False)
    insts = make_insts(COUNTS, POINTS, g)
    as_dicts = [{"sp_masks": i.sp_masks, "labels_3d": i.labels_3d} for i in insts]
    torch.testing.assert_close(criterion()(pred, insts)["inst_loss"], criterion()(pred, as_dicts)["inst_loss"])


def test_extreme_logits_stay_finite():
    g = torch.Generator().manual_seed(7)
    pred = oneformer3d_pred(QUERIES, POINTS, NUM_CLASSES, num_aux=1, generator=g, requires_grad=False)
    for layer in [pred] + pred["aux_outputs"]:
        layer["masks"] = [(torch.sign(m) * 1e4).requires_grad_() for m in layer["masks"]]
        layer["cls_preds"] = [(c * 1e3).requires_grad_() for c in layer["cls_preds"]]
    loss = criterion()(pred, make_insts(COUNTS, POINTS, g))["inst_loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(t.grad).all() for t in leaf_tensors(pred))


def test_all_scenes_empty():
    g = torch.Generator().manual_seed(8)
    pred = oneformer3d_pred((8, 8), (100, 120), NUM_CLASSES, num_aux=1, generator=g)
    loss = criterion()(pred, make_insts((0, 0), (100, 120), g))["inst_loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(t.grad).all() for t in leaf_tensors(pred))


# -- bad input: ValueError naming the shapes ------------------------------------------------------
def _inputs(seed=9):
    g = torch.Generator().manual_seed(seed)
    pred = oneformer3d_pred((10, 10), (100, 80), NUM_CLASSES, num_aux=1, generator=g, requires_grad=False)
    return pred, make_insts((3, 4), (100, 80), g)


def test_point_count_mismatch_names_shapes():
    pred, insts = _inputs()
    insts[1].sp_masks = torch.zeros(4, 81, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\(4, 81\).*\(10, 80\)"):
        criterion()(pred, insts)


def test_query_count_mismatch_names_shapes():
    pred, insts = _inputs()
    pred["cls_preds"][0] = torch.randn(9, NUM_CLASSES + 1)
    with pytest.raises(ValueError, match=r"\(9, 14\)"):
        criterion()(pred, insts)


def test_class_count_mismatch_names_shapes():
    pred, insts = _inputs()
    pred["aux_outputs"][0]["cls_preds"][1] = torch.randn(10, NUM_CLASSES)
    with pytest.raises(ValueError, match=r"\(10, 13\)"):
        criterion()(pred, insts)


def test_label_count_mismatch():
    pred, insts = _inputs()
    wrong = {"sp_masks": insts[0].sp_masks, "labels_3d": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"2 labels but masks of shape \(3, 100\)"):
        criterion()(pred, [wrong, insts[1]])


def test_scene_count_mismatch():
    pred, insts = _inputs()
    with pytest.raises(ValueError, match="1 scenes of ground truth"):
        criterion()(pred, insts[:1])


def test_mixed_scores_rejected():
    pred, insts = _inputs()
    pred["scores"][1] = None
    with pytest.raises(ValueError, match="mixes tensors and None"):
        criterion()(pred, insts)


def test_missing_fields_rejected():
    pred, insts = _inputs()
    with pytest.raises(ValueError, match="sp_masks"):
        criterion()(pred, [{"labels_3d": torch.zeros(3, dtype=torch.long)}, insts[1]])
    del pred["cls_preds"]
    with pytest.raises(ValueError, match="cls_preds"):
        criterion()(pred, insts)


def test_bad_loss_weight_rejected():
    with pytest.raises(ValueError, match="loss_weight"):
        criterion(loss_weight=[0.5, 1.0, 1.0, 0.5])


def test_label_out_of_range_rejected():
    pred, insts = _inputs()
    insts[0].labels_3d = torch.tensor([0, 1, NUM_CLASSES])
    with pytest.raises(ValueError, match="outside"):
        criterion()(pred, insts)
