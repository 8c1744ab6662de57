import pytest
import torch
import torch.nn.functional as F

import influencerformer.criterion.influencer as influencer_module
from influencerformer.criterion import HungarianCriterion, InfluencerCriterion, assignment_cross_entropy
from influencerformer.losses import InfluencerPotentials
from influencerformer.losses.influencer import hard_owners
from influencerformer.matching import HungarianMatcher, SinkhornAssigner
from influencerformer.targets import pad_targets

C = 3
H_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0, "loss_score": 0.5}
I_WEIGHTS = dict(H_WEIGHTS)  # the default criterion: Mask2Former's terms on the ownership plan
P_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_influencer": 5.0, "loss_score": 0.5}
O_WEIGHTS = {"loss_ce": 2.0, "loss_influencer": 5.0, "loss_score": 0.5}


def make_criteria(num_points=200):
    return {
        "hungarian": HungarianCriterion(C, HungarianMatcher(num_points=num_points), H_WEIGHTS, num_points=num_points),
        "default": InfluencerCriterion(C, I_WEIGHTS, num_points=num_points),
        "potentials": InfluencerCriterion(C, P_WEIGHTS, SinkhornAssigner(1.0, 0.0, 0.0), InfluencerPotentials(),
                                          num_points=num_points),
        "original": InfluencerCriterion(C, O_WEIGHTS, potentials=InfluencerPotentials("original"),
                                        num_points=num_points),
    }


NAMES = ["hungarian", "default", "potentials", "original"]


def dense_batch(gen, batch=2, queries=8, aux=2, size=16):
    def layer():
        return {"pred_logits": torch.randn(batch, queries, C + 1, generator=gen).requires_grad_(True),
                "pred_masks": torch.randn(batch, queries, size, size, generator=gen).requires_grad_(True)}
    outputs = layer()
    outputs["aux_outputs"] = [layer() for _ in range(aux)]
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 5:30, 5:30] = True
    masks[1, 30:60, 20:50] = True
    targets = [{"labels": torch.tensor([0, 2]), "masks": masks},
               {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 64, 64)}][:batch]
    return outputs, targets


def point_batch(gen, scores=True):
    sizes = [(8, 50, 2), (11, 70, 1), (8, 30, 0)]
    outputs = {"pred_logits": [torch.randn(q, C + 1, generator=gen).requires_grad_(True) for q, _, _ in sizes],
               "pred_masks": [torch.randn(q, p, generator=gen).requires_grad_(True) for q, p, _ in sizes],
               "pred_scores": [torch.rand(q, 1, generator=gen) for q, _, _ in sizes] if scores else None}
    outputs["aux_outputs"] = [{k: ([t.detach().clone().requires_grad_(True) for t in v] if v is not None else None)
                               for k, v in outputs.items()}]
    targets = [{"labels": torch.randint(0, C, (k,), generator=gen), "masks": torch.rand(k, p, generator=gen) > 0.6}
               for _, p, k in sizes]
    return outputs, targets


def weighted_total(crit, losses):
    return sum(crit.weight_dict[k] * v for k, v in losses.items())


@pytest.mark.parametrize("name", NAMES)
def test_dense_call_convention_deep_supervision_and_gradients(name):
    """One key per term, summed over the layers; the per-layer values are kept detached."""
    gen = torch.Generator().manual_seed(0)
    crit = make_criteria()[name]
    outputs, targets = dense_batch(gen)
    losses = crit(outputs, targets)
    expected = {"hungarian": {"loss_ce", "loss_mask", "loss_dice"}, "default": {"loss_ce", "loss_mask", "loss_dice"},
                "potentials": {"loss_ce", "loss_mask", "loss_influencer"}, "original": {"loss_ce", "loss_influencer"}}
    assert set(losses) == expected[name]
    for key, value in losses.items():
        assert crit.layer_losses[key].shape == (3,)
        assert value.item() == pytest.approx(crit.layer_losses[key].sum().item(), rel=1e-6)
    weighted_total(crit, losses).backward()
    for layer in [outputs] + outputs["aux_outputs"]:
        for key in ("pred_logits", "pred_masks"):
            assert torch.isfinite(layer[key].grad).all() and layer[key].grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_point_form_with_objectness(name):
    gen = torch.Generator().manual_seed(1)
    crit = make_criteria()[name]
    outputs, targets = point_batch(gen)
    losses = crit(outputs, targets)
    assert "loss_score" in losses and crit.layer_losses["loss_score"].shape == (2,)
    weighted_total(crit, losses).backward()
    assert all(torch.isfinite(m.grad).all() for m in outputs["pred_masks"])
    outputs, targets = point_batch(gen, scores=False)
    assert "loss_score" not in crit(outputs, targets)


def test_queries_per_instance_falls_to_one_to_one_and_resumes_from_a_checkpoint():
    """m = 3 over 4 training calls: 3, 2.5, 2, 1.5, then 1 for good; the final layer's plan (the class
    targets) has that row mass; eval calls do not count; a loaded state continues the schedule."""
    gen = torch.Generator().manual_seed(6)
    crit = InfluencerCriterion(C, I_WEIGHTS, queries_per_instance=3.0, queries_per_instance_iters=4)
    outputs, targets = point_batch(gen, scores=False)  # Q = 8 and 11 for K = 2 and 1
    seen = []
    for step in range(6):
        mass = float(crit.current_queries_per_instance())
        seen.append(mass)
        crit(outputs, targets)
        assert torch.allclose(crit.last_assignments[0].sum(1), torch.full((2,), mass), atol=1e-4)
        if step == 1:
            crit.eval()
            crit(outputs, targets)
            assert float(crit.current_queries_per_instance()) == 2.0
            crit.train()
    assert seen == [3.0, 2.5, 2.0, 1.5, 1.0, 1.0]
    resumed = InfluencerCriterion(C, I_WEIGHTS, queries_per_instance=3.0, queries_per_instance_iters=4)
    state = {k: v.clone() for k, v in crit.state_dict().items()}
    assert int(state["training_calls"]) == 6
    resumed.load_state_dict(state)
    assert float(resumed.current_queries_per_instance()) == 1.0
    assert InfluencerCriterion(C, I_WEIGHTS, queries_per_instance=3.0).state_dict() == {}
    with pytest.raises(ValueError, match="queries_per_instance must be >= 1"):
        InfluencerCriterion(C, I_WEIGHTS, queries_per_instance=0.0)
    with pytest.raises(ValueError, match="num_iters > 0"):
        InfluencerCriterion(C, I_WEIGHTS, SinkhornAssigner(num_iters=0), queries_per_instance=2.0)
    with pytest.raises(ValueError, match="queries_per_instance_iters must be >= 0"):
        InfluencerCriterion(C, I_WEIGHTS, queries_per_instance_iters=-1)


def test_hungarian_point_form_perfect_prediction_has_near_zero_mask_loss():
    masks = torch.zeros(2, 40, dtype=torch.bool)
    masks[0, :10] = masks[1, 10:25] = True
    pred = torch.full((5, 40), -20.0)
    pred[3] = torch.where(masks[0], 20.0, -20.0)
    pred[1] = torch.where(masks[1], 20.0, -20.0)
    logits = torch.full((5, C + 1), -10.0)
    logits[:, C] = 10.0
    logits[3, 2] = logits[1, 0] = 20.0
    logits[3, C] = logits[1, C] = -10.0
    crit = HungarianCriterion(C, HungarianMatcher(), H_WEIGHTS)
    losses = crit({"pred_logits": [logits], "pred_masks": [pred]}, [{"labels": torch.tensor([2, 0]), "masks": masks}])
    assert losses["loss_mask"] < 1e-6 and losses["loss_dice"] < 1e-6 and losses["loss_ce"] < 1e-6
    assert crit.last_assignments[0].tolist()[0][3] == 1 and crit.last_assignments[0].tolist()[1][1] == 1


def test_class_loss_with_one_hot_assignment_is_mask2formers_cross_entropy():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 6, C + 1, generator=gen)
    assign = torch.zeros(2, 1, 2, 6)
    assign[0, 0, 0, 4] = assign[0, 0, 1, 1] = 1  # image 1 has no instance: its padded rows stay 0
    labels = torch.tensor([[2, 0], [0, 0]])
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    classes = torch.full((2, 6), C)
    classes[0, 4], classes[0, 1] = 2, 0
    expected = F.cross_entropy(logits[:, 0].transpose(1, 2), classes, weight)
    assert assignment_cross_entropy(logits, assign, labels, weight).item() == pytest.approx(expected.item(), rel=1e-6)


def test_hard_owners_resolves_conflicts_by_strongest_claim():
    own = torch.tensor([[0.7, 0.2, 0.1],   # instance 0 -> query 0 (0.7)
                        [0.9, 0.05, 0.05],  # instance 1 -> query 0 (0.9): stronger, wins query 0
                        [0.1, 0.1, 0.8],
                        [0.0, 0.0, 0.0]])  # an invalid (empty) instance owns nothing
    valid = torch.tensor([[True, True, True, False]])
    assert hard_owners(own[None, None], valid)[0, 0].tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_ownership_teaches_the_owner_its_class():
    """An ideal prediction: the owner's class target is its instance's class, the rest 'no object'."""
    from research.testing import query_configurations
    masks, configs = query_configurations(3, 6)
    logits = torch.zeros(6, C + 1, requires_grad=True)
    labels = torch.tensor([2, 0, 1])
    for crit in (InfluencerCriterion(C, I_WEIGHTS), make_criteria()["potentials"]):
        logits.grad = None
        crit({"pred_logits": [logits], "pred_masks": [configs["ideal"]]}, [{"labels": labels, "masks": masks}])
        own = crit.last_assignments[0]
        assert own.argmax(1).tolist() == [0, 1, 2] and own.max(1).values.min() > 0.99
        crit({"pred_logits": [logits], "pred_masks": [configs["ideal"]]},
             [{"labels": labels, "masks": masks}])["loss_ce"].backward()
        # gradient descent raises the owner's own class and "no object" for the spare queries
        assert logits.grad[0].argmin() == 2 and logits.grad[1].argmin() == 0 and logits.grad[2].argmin() == 1
        assert (logits.grad[3:].argmin(1) == C).all()


def test_class_cost_decides_between_duplicate_masks():
    """Two queries predict the same mask: the claims and mask costs tie, so without a class cost the
    ownership splits; with ``cost_class`` it goes to the query that predicts the label."""
    masks = torch.zeros(1, 40, dtype=torch.bool)
    masks[0, :10] = True
    mask_logits = torch.full((4, 40), -6.0)
    mask_logits[:2, :10] = 6.0  # queries 0 and 1 are duplicates
    logits = torch.zeros(4, C + 1)
    logits[1, 2] = 3.0  # query 1 says "class 2", query 0 is undecided
    targets = [{"labels": torch.tensor([2]), "masks": masks}]
    owners = {}
    for cost in (0.0, 1.0):
        crit = InfluencerCriterion(C, I_WEIGHTS, SinkhornAssigner(cost_class=cost))
        crit({"pred_logits": [logits], "pred_masks": [mask_logits]}, targets)
        owners[cost] = crit.last_assignments[0][0]
    assert owners[0.0][0].item() == pytest.approx(owners[0.0][1].item(), abs=1e-6)
    assert owners[1.0][1] > 0.9 and owners[1.0][0] < 0.1
    odds = influencer_module.class_log_odds(logits[None, None], torch.tensor([[2, 0]]))[0, 0]
    log_p = logits.log_softmax(-1)
    assert odds.shape == (2, 4)
    assert torch.allclose(odds[0], log_p[:, 2] - log_p[:, C]) and torch.allclose(odds[1], log_p[:, 0] - log_p[:, C])
    with pytest.raises(ValueError, match="costs must be >= 0"):
        SinkhornAssigner(cost_class=-1.0)


@pytest.mark.parametrize("name", NAMES)
def test_images_without_instances_give_finite_loss_and_gradients(name):
    gen = torch.Generator().manual_seed(4)
    crit = make_criteria()[name]
    outputs, targets = dense_batch(gen)
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 64, 64)}] * 2
    losses = crit(outputs, targets)
    total = weighted_total(crit, losses)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(outputs["pred_logits"].grad).all()
    assert (outputs["pred_logits"].grad[..., C] < 0).all()  # everything is pushed to "no object"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_autocast_and_extreme_logits(name, dtype):
    gen = torch.Generator().manual_seed(5)
    crit = make_criteria()[name]
    outputs, targets = dense_batch(gen)
    outputs["pred_masks"] = (outputs["pred_masks"].detach() * 1e3).to(dtype).requires_grad_(True)
    outputs["pred_logits"] = (outputs["pred_logits"].detach() * 1e3).to(dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        losses = crit(outputs, targets)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    weighted_total(crit, losses).backward()
    assert torch.isfinite(outputs["pred_masks"].grad).all()


def test_bad_inputs_raise_clear_errors():
    gen = torch.Generator().manual_seed(6)
    crit = make_criteria()["default"]
    outputs, targets = dense_batch(gen, aux=0)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        crit(outputs, [{"labels": torch.tensor([0, 3]), "masks": targets[0]["masks"]}, targets[1]])
    with pytest.raises(ValueError, match="2 labels but masks of shape"):
        crit(outputs, [{"labels": torch.tensor([0, 1]), "masks": torch.zeros(3, 8, 8)}, targets[1]])
    with pytest.raises(ValueError, match="must be integer class ids"):
        crit(outputs, [{"labels": torch.tensor([0.0, 1.0]), "masks": targets[0]["masks"]}, targets[1]])
    with pytest.raises(ValueError, match="got 1 targets for a batch of 2"):
        crit(outputs, targets[:1])
    with pytest.raises(ValueError, match=r"share one \(H, W\)"):
        crit(outputs, [targets[0], {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 32, 32)}])
    with pytest.raises(ValueError, match=r"\(7, 4\).*Q = 8"):
        crit(dict(outputs, pred_logits=torch.randn(2, 7, C + 1)), targets)
    with pytest.raises(ValueError, match="must be \\(B, Q, H, W\\)"):
        crit(dict(outputs, pred_masks=torch.randn(2, 8, 16)), targets)
    pts, ptargets = point_batch(gen)
    ptargets[1] = {"labels": ptargets[1]["labels"], "masks": torch.zeros(1, 69)}
    with pytest.raises(ValueError, match=r"\(1, 69\) must be \(K, P\) with P = 70"):
        crit(pts, ptargets)
    with pytest.raises(ValueError, match="does not produce"):
        InfluencerCriterion(C, {"loss_ce": 1.0, "loss_mask_0": 1.0})
    with pytest.raises(ValueError, match="no potentials"):
        InfluencerCriterion(C, {"loss_ce": 1.0, "loss_influencer": 1.0})
    with pytest.raises(ValueError, match="formulation"):
        InfluencerPotentials("sinkhorn")
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        InfluencerCriterion(C, I_WEIGHTS, importance_sample_ratio=1.0)
    with pytest.raises(ValueError, match="oversample_ratio"):
        InfluencerCriterion(C, I_WEIGHTS, importance_sample_ratio=0.5, oversample_ratio=0.5)


def test_value_checks_run_in_the_first_calls_only():
    """Label ranges are read back from the device only in a criterion's first calls; padded targets
    (built once per step, where the values are on the host) are trusted."""
    gen = torch.Generator().manual_seed(7)
    crit = make_criteria()["default"]
    outputs, targets = dense_batch(gen, aux=0)
    bad = [{"labels": torch.tensor([0, 3]), "masks": targets[0]["masks"]}, targets[1]]
    crit._value_checks_left = 0
    crit(outputs, bad)  # no check: label 3 is the "no object" column, nothing fails
    crit._value_checks_left = 1
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        crit(outputs, bad)
    padded = pad_targets(targets, point_form=False)
    assert padded.labels.shape == (2, 8) and padded.present.sum().item() == 2
    losses = crit(outputs, padded)
    assert torch.isfinite(weighted_total(crit, losses))


def test_importance_sampling_weighs_where_a_query_is_uncertain():
    """The owner is right; a non-owner is undecided (z = 0) on a background blob of 6% of the image.
    Importance points gather on the blob, so its mask loss there weighs more than its share."""
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 16:48, 16:48] = True
    pred = torch.full((1, 4, 16, 16), -12.0)
    pred[0, 0] = F.interpolate(masks[None].float(), size=(16, 16), mode="area")[0, 0].mul(24).sub(12)
    pred[0, 1, 12:16, 0:4] = 0.0
    targets = [{"labels": torch.tensor([1]), "masks": masks}]
    weights = {"loss_ce": 1.0, "loss_influencer": 1.0}
    blob_grad = {}
    for ratio in (0.0, 0.75):
        crit = InfluencerCriterion(C, weights, potentials=InfluencerPotentials(), num_points=600,
                                   importance_sample_ratio=ratio)
        torch.manual_seed(0)
        masks_in = pred.clone().requires_grad_(True)
        loss = crit({"pred_logits": torch.zeros(1, 4, C + 1), "pred_masks": masks_in}, targets)["loss_influencer"]
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(masks_in.grad).all()
        blob_grad[ratio] = float(masks_in.grad[0, 1, 12:16, 0:4].sum())
    assert blob_grad[0.0] > 0 and blob_grad[0.75] > 1.3 * blob_grad[0.0]
