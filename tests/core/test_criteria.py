import pytest
import torch
import torch.nn.functional as F

from influencerformer.criterion import HungarianCriterion, InfluencerCriterion, assignment_cross_entropy, hard_owners
from influencerformer.losses import mask_influencer_loss
from influencerformer.matching import HungarianMatcher

C = 3
H_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0, "loss_score": 0.5}
I_WEIGHTS = {"loss_ce": 2.0, "loss_influencer": 5.0, "loss_score": 0.5}


def make_criteria(**kw):
    return {
        "hungarian": HungarianCriterion(C, HungarianMatcher(num_points=200), H_WEIGHTS, num_points=200),
        "exclusive": InfluencerCriterion(C, I_WEIGHTS, num_points=200, **kw),
        "original": InfluencerCriterion(C, I_WEIGHTS, num_points=200, formulation="original"),
    }


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


def test_probability_class_evidence_lets_the_mask_decide_against_a_silent_class():
    """Query 0 covers the instance exactly but says "no object"; query 1 covers 7 of its 10 points
    and says the label. Log-odds evidence (unbounded) hands the instance to query 1, as the
    class head's past targets dictate; Mask2Former's bounded probability leaves it to the mask."""
    from influencerformer.criterion.influencer import class_probability
    masks = torch.zeros(1, 40, dtype=torch.bool)
    masks[0, :10] = True
    mask_logits = torch.full((3, 40), -6.0)
    mask_logits[0, :10] = mask_logits[1, :7] = 6.0
    logits = torch.zeros(3, C + 1)
    logits[0, C] = 8.0
    logits[1, 2] = 3.0
    targets = [{"labels": torch.tensor([2]), "masks": masks}]
    owner = {}
    for evidence in ("log_odds", "probability"):
        crit = InfluencerCriterion(C, I_WEIGHTS, class_ownership_weight=1.0, class_evidence=evidence,
                                   anneal_ownership=True, sinkhorn_iters=40)
        crit({"pred_logits": [logits], "pred_masks": [mask_logits]}, targets)
        owner[evidence] = crit.last_assignments[0][0]
    assert owner["log_odds"][1] > 0.9 and owner["probability"][0] > 0.9
    prob = class_probability(logits, torch.tensor([2, 0]))
    assert prob.shape == (2, 3) and torch.allclose(prob, logits.softmax(-1)[:, [2, 0]].T)


@pytest.mark.parametrize("name", ["hungarian", "exclusive", "original"])
def test_dense_call_convention_deep_supervision_and_gradients(name):
    gen = torch.Generator().manual_seed(0)
    crit = make_criteria()[name]
    outputs, targets = dense_batch(gen)
    losses = crit(outputs, targets)
    base = {"loss_ce", "loss_mask", "loss_dice"} if name == "hungarian" else {"loss_ce", "loss_influencer"}
    assert set(losses) == base | {f"{k}_{i}" for k in base for i in range(2)}
    assert all(crit.weight_dict[k] == crit.weight_dict[k.rsplit("_", 1)[0]] for k in losses if k[-1].isdigit())
    total = sum(crit.weight_dict[k] * v for k, v in losses.items())
    total.backward()
    for layer in [outputs] + outputs["aux_outputs"]:
        for key in ("pred_logits", "pred_masks"):
            assert torch.isfinite(layer[key].grad).all() and layer[key].grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["hungarian", "exclusive", "original"])
def test_point_form_with_objectness(name):
    gen = torch.Generator().manual_seed(1)
    crit = make_criteria()[name]
    outputs, targets = point_batch(gen)
    losses = crit(outputs, targets)
    assert "loss_score" in losses and "loss_score_0" in losses
    sum(crit.weight_dict[k] * v for k, v in losses.items()).backward()
    assert all(torch.isfinite(m.grad).all() for m in outputs["pred_masks"])
    outputs, targets = point_batch(gen, scores=False)
    assert "loss_score" not in crit(outputs, targets)


def test_point_form_mask_term_is_the_core_loss():
    gen = torch.Generator().manual_seed(2)
    crit = InfluencerCriterion(C, I_WEIGHTS, bg_weight=0.1, temperature=0.3)
    outputs, targets = point_batch(gen, scores=False)
    losses = crit(outputs, targets)
    expected = torch.stack([mask_influencer_loss(m, t["masks"], bg_weight=0.1, temperature=0.3)["loss"]
                            for m, t in zip(outputs["pred_masks"], targets)]).mean()
    assert losses["loss_influencer"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_instance_mass_falls_to_one_to_one_and_resumes_from_a_checkpoint():
    """instance_mass 3 over 4 training calls: 3, 2.5, 2, 1.5, then 1 for good; every layer's plan
    (the class targets) has that row mass; eval calls do not count; a loaded state continues."""
    gen = torch.Generator().manual_seed(6)
    flags = dict(anneal_ownership=True, sinkhorn_iters=40, instance_mass=3.0)
    crit = InfluencerCriterion(C, I_WEIGHTS, instance_mass_iters=4, **flags)
    outputs, targets = point_batch(gen, scores=False)  # Q = 8 and 11 for K = 2 and 1
    seen = []
    for step in range(6):
        mass = crit.current_instance_mass()
        seen.append(mass)
        crit(outputs, targets)
        assert torch.allclose(crit.last_assignments[0].sum(1), torch.full((2,), mass), atol=1e-4)
        if step == 1:
            crit.eval()
            crit(outputs, targets)
            assert crit.current_instance_mass() == 2.0
            crit.train()
    assert seen == [3.0, 2.5, 2.0, 1.5, 1.0, 1.0]
    resumed = InfluencerCriterion(C, I_WEIGHTS, instance_mass_iters=4, **flags)
    state = {k: v.clone() for k, v in crit.state_dict().items()}
    assert int(state["training_calls"]) == 6
    resumed.load_state_dict(state)
    assert resumed.current_instance_mass() == 1.0
    # a constant mass (no schedule) adds nothing to checkpoints
    assert InfluencerCriterion(C, I_WEIGHTS, **flags).state_dict() == {}
    with pytest.raises(ValueError, match="instance_mass must be >= 1"):
        InfluencerCriterion(C, I_WEIGHTS, instance_mass=0.0)
    with pytest.raises(ValueError, match="needs formulation='exclusive' and sinkhorn_iters > 0"):
        InfluencerCriterion(C, I_WEIGHTS, instance_mass=2.0, sinkhorn_iters=0)
    with pytest.raises(ValueError, match="instance_mass_iters must be >= 0"):
        InfluencerCriterion(C, I_WEIGHTS, instance_mass_iters=-1)


def test_variant_flags_reach_the_core_loss():
    gen = torch.Generator().manual_seed(4)
    flags = dict(exclusion="owned", dice_weight=0.5, claim_floor=-2.3, detach_ownership=False,
                 anneal_ownership=True, sinkhorn_iters=12, bce_weight=0.7)
    crit = InfluencerCriterion(C, I_WEIGHTS, **flags)
    outputs, targets = point_batch(gen, scores=False)
    losses = crit(outputs, targets)
    expected = torch.stack([mask_influencer_loss(m, t["masks"], **flags)["loss"]
                            for m, t in zip(outputs["pred_masks"], targets)]).mean()
    assert losses["loss_influencer"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert "dice" in crit.last_stats and crit.last_stats["dice"] > 0
    assert "bce" in crit.last_stats and crit.last_stats["bce"] > 0
    assert crit.loss_kwargs.items() >= flags.items()
    # the default ownership is detached; the flag changes gradients, not values
    assert InfluencerCriterion(C, I_WEIGHTS).loss_kwargs["detach_ownership"] is True
    assert InfluencerCriterion(C, I_WEIGHTS, exclusion_scale="point").loss_kwargs["exclusion_scale"] == "point"
    with pytest.raises(ValueError, match="exclusion_scale must be one of"):
        InfluencerCriterion(C, I_WEIGHTS, exclusion_scale="pixels")


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
    logits = [torch.randn(6, C + 1, generator=gen), torch.randn(6, C + 1, generator=gen)]
    assign = [torch.zeros(2, 6), torch.zeros(0, 6)]
    assign[0][0, 4] = assign[0][1, 1] = 1
    labels = [torch.tensor([2, 0]), torch.zeros(0, dtype=torch.long)]
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    classes = torch.full((2, 6), C)
    classes[0, 4], classes[0, 1] = 2, 0
    expected = F.cross_entropy(torch.stack(logits).transpose(1, 2), classes, weight)
    assert assignment_cross_entropy(logits, assign, labels, weight).item() == pytest.approx(expected.item(), rel=1e-6)


def test_hard_owners_resolves_conflicts_by_strongest_claim():
    own = torch.tensor([[0.7, 0.2, 0.1],   # instance 0 -> query 0 (0.7)
                        [0.9, 0.05, 0.05],  # instance 1 -> query 0 (0.9): stronger, wins query 0
                        [0.1, 0.1, 0.8]])
    assert hard_owners(own).tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert hard_owners(torch.zeros(0, 3)).shape == (0, 3)


def test_exclusive_ownership_teaches_the_owner_its_class():
    """An ideal prediction: the owner's class target is its instance's class, the rest 'no object'."""
    from influencerformer.testing import query_configurations
    masks, configs = query_configurations(3, 6)
    logits = torch.zeros(6, C + 1, requires_grad=True)
    crit = InfluencerCriterion(C, I_WEIGHTS)
    labels = torch.tensor([2, 0, 1])
    crit({"pred_logits": [logits], "pred_masks": [configs["ideal"]]}, [{"labels": labels, "masks": masks}])
    own = crit.last_assignments[0]
    assert own.argmax(1).tolist() == [0, 1, 2] and own.max(1).values.min() > 0.99
    crit({"pred_logits": [logits], "pred_masks": [configs["ideal"]]}, [{"labels": labels, "masks": masks}])["loss_ce"].backward()
    # gradient descent raises the owner's own class and "no object" for the spare queries
    assert logits.grad[0].argmin() == 2 and logits.grad[1].argmin() == 0 and logits.grad[2].argmin() == 1
    assert (logits.grad[3:].argmin(1) == C).all()


def test_class_evidence_decides_between_duplicate_masks():
    """Two queries predict the same mask: the claims tie, so without class evidence the ownership
    splits; with ``class_ownership_weight`` it goes to the query that predicts the label."""
    from influencerformer.criterion.influencer import class_log_odds
    masks = torch.zeros(1, 40, dtype=torch.bool)
    masks[0, :10] = True
    mask_logits = torch.full((4, 40), -6.0)
    mask_logits[:2, :10] = 6.0  # queries 0 and 1 are duplicates
    logits = torch.zeros(4, C + 1)
    logits[1, 2] = 3.0  # query 1 says "class 2", query 0 is undecided
    targets = [{"labels": torch.tensor([2]), "masks": masks}]
    owners = {}
    for weight in (0.0, 1.0):
        crit = InfluencerCriterion(C, I_WEIGHTS, class_ownership_weight=weight, anneal_ownership=True,
                                   sinkhorn_iters=40)
        crit({"pred_logits": [logits], "pred_masks": [mask_logits]}, targets)
        owners[weight] = crit.last_assignments[0][0]
    assert owners[0.0][0].item() == pytest.approx(owners[0.0][1].item(), abs=1e-6)
    assert owners[1.0][1] > 0.9 and owners[1.0][0] < 0.1
    odds = class_log_odds(logits, torch.tensor([2, 0]))
    log_p = logits.log_softmax(-1)
    assert odds.shape == (2, 4)
    assert torch.allclose(odds[0], log_p[:, 2] - log_p[:, C]) and torch.allclose(odds[1], log_p[:, 0] - log_p[:, C])
    with pytest.raises(ValueError, match="class_ownership_weight"):
        InfluencerCriterion(C, I_WEIGHTS, class_ownership_weight=-1.0)
    with pytest.raises(ValueError, match="class_evidence must be one of"):
        InfluencerCriterion(C, I_WEIGHTS, class_ownership_weight=1.0, class_evidence="odds")
    with pytest.raises(ValueError, match="class_ownership_weight needs formulation='exclusive'"):
        InfluencerCriterion(C, I_WEIGHTS, formulation="original", class_ownership_weight=1.0)


@pytest.mark.parametrize("name", ["hungarian", "exclusive", "original"])
def test_images_without_instances_give_finite_loss_and_gradients(name):
    gen = torch.Generator().manual_seed(4)
    crit = make_criteria()[name]
    outputs, targets = dense_batch(gen)
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 64, 64)}] * 2
    losses = crit(outputs, targets)
    total = sum(crit.weight_dict[k] * v for k, v in losses.items())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(outputs["pred_logits"].grad).all()
    # everything is pushed to "no object"
    assert (outputs["pred_logits"].grad[..., C] < 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["hungarian", "exclusive", "original", "2d-config", "2d-potentials"])
def test_autocast(name, dtype):
    gen = torch.Generator().manual_seed(5)
    # the flags of configs/common/criterion.py: influencer_potentials, and influencer on top of them
    potentials = dict(num_points=200, anneal_ownership=True, sinkhorn_iters=40, bce_weight=1.0,
                      class_ownership_weight=1.0, importance_sample_ratio=0.75)
    if name == "2d-potentials":
        crit = InfluencerCriterion(C, I_WEIGHTS, **potentials)
    elif name == "2d-config":
        crit = InfluencerCriterion(C, I_WEIGHTS, **potentials, ownership_mask_cost=5.0, attr_weight=0.0,
                                   rep_weight=0.0, bg_weight=0.0, excl_weight=0.0, dice_weight=1.0)
    else:
        crit = make_criteria()[name]
    outputs, targets = dense_batch(gen)
    outputs["pred_masks"] = (outputs["pred_masks"].detach() * 1e3).to(dtype).requires_grad_(True)
    outputs["pred_logits"] = (outputs["pred_logits"].detach() * 1e3).to(dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        losses = crit(outputs, targets)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_bad_inputs_raise_clear_errors():
    gen = torch.Generator().manual_seed(6)
    crit = make_criteria()["exclusive"]
    outputs, targets = dense_batch(gen, aux=0)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        crit(outputs, [{"labels": torch.tensor([0, 3]), "masks": targets[0]["masks"]}, targets[1]])
    with pytest.raises(ValueError, match="2 labels but masks of shape"):
        crit(outputs, [{"labels": torch.tensor([0, 1]), "masks": torch.zeros(3, 8, 8)}, targets[1]])
    with pytest.raises(ValueError, match="got 1 targets for a batch of 2"):
        crit(outputs, targets[:1])
    bad = dict(outputs, pred_logits=torch.randn(2, 7, C + 1))
    with pytest.raises(ValueError, match=r"\(7, 4\).*Q = 8"):
        crit(bad, targets)
    with pytest.raises(ValueError, match="must be \\(B, Q, H, W\\)"):
        crit(dict(outputs, pred_masks=torch.randn(2, 8, 16)), targets)
    pts, ptargets = point_batch(gen)
    ptargets[1] = {"labels": ptargets[1]["labels"], "masks": torch.zeros(1, 69)}
    with pytest.raises(ValueError, match=r"\(1, 69\) must be \(K, P\) with P = 70"):
        crit(pts, ptargets)
    with pytest.raises(KeyError, match="no weight"):
        InfluencerCriterion(C, {"loss_ce": 1.0})(outputs, targets)
    with pytest.raises(ValueError, match="formulation"):
        InfluencerCriterion(C, I_WEIGHTS, formulation="sinkhorn")
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        InfluencerCriterion(C, I_WEIGHTS, importance_sample_ratio=1.0)
    with pytest.raises(ValueError, match="oversample_ratio"):
        InfluencerCriterion(C, I_WEIGHTS, importance_sample_ratio=0.5, oversample_ratio=0.5)


def test_importance_sampling_weighs_where_a_query_is_uncertain():
    # The owner is right; a non-owner is undecided (z = 0) on a background blob of 6% of the
    # image and silent elsewhere. Importance points gather on the blob, so the background term
    # weighs it more than its share of the area, and its gradient grows.
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 16:48, 16:48] = True  # cells 4..11 of a 16 x 16 map
    pred = torch.full((1, 4, 16, 16), -12.0)
    pred[0, 0] = F.interpolate(masks[None].float(), size=(16, 16), mode="area")[0, 0].mul(24).sub(12)
    pred[0, 1, 12:16, 0:4] = 0.0
    targets = [{"labels": torch.tensor([1]), "masks": masks}]
    blob_grad = {}
    for ratio in (0.0, 0.75):
        crit = InfluencerCriterion(C, I_WEIGHTS, num_points=600, importance_sample_ratio=ratio)
        torch.manual_seed(0)
        masks_in = pred.clone().requires_grad_(True)
        loss = crit({"pred_logits": torch.zeros(1, 4, C + 1), "pred_masks": masks_in}, targets)["loss_influencer"]
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(masks_in.grad).all()
        blob_grad[ratio] = float(masks_in.grad[0, 1, 12:16, 0:4].sum())
    assert blob_grad[0.0] > 0 and blob_grad[0.75] > 1.3 * blob_grad[0.0]


def test_objectness_exclusion_reads_the_class_head():
    # Point form, one image: query 1 half-claims the instance that query 0 owns. With
    # objectness_exclusion, its push off that instance shrinks as its "no object" logit grows.
    masks = torch.zeros(1, 20, dtype=torch.bool)
    masks[0, :8] = True
    z = torch.full((3, 20), -8.0)
    z[0, :8] = z[1, :4] = 8.0
    targets = [{"labels": torch.tensor([0]), "masks": masks}]
    push = {}
    for no_object_logit in (0.0, 8.0):
        logits = torch.zeros(3, C + 1)
        logits[1, C] = no_object_logit
        pred = {"pred_logits": [logits], "pred_masks": [z.clone().requires_grad_(True)]}
        crit = InfluencerCriterion(C, I_WEIGHTS, objectness_exclusion=True, anneal_ownership=True, sinkhorn_iters=40)
        crit(pred, targets)["loss_influencer"].backward()
        push[no_object_logit] = pred["pred_masks"][0].grad[1, :4].sum().item()
    assert push[0.0] > 0 and push[8.0] < 0.05 * push[0.0]
    with pytest.raises(ValueError, match="objectness_exclusion needs formulation='exclusive'"):
        InfluencerCriterion(C, I_WEIGHTS, formulation="original", objectness_exclusion=True)


def test_objectness_background_frees_a_no_object_query_on_the_background():
    # Point form: query 2 owns nothing and is "yes" on a background blob. With objectness_background
    # its push to "no" there shrinks as its "no object" logit grows; without it, it does not.
    masks = torch.zeros(1, 20, dtype=torch.bool)
    masks[0, :8] = True
    z = torch.full((3, 20), -8.0)
    z[0, :8], z[2, 14:18] = 8.0, 2.0
    targets = [{"labels": torch.tensor([0]), "masks": masks}]
    push = {}
    for background in (False, True):
        for no_object_logit in (0.0, 8.0):
            logits = torch.zeros(3, C + 1)
            logits[2, C] = no_object_logit
            pred = {"pred_logits": [logits], "pred_masks": [z.clone().requires_grad_(True)]}
            crit = InfluencerCriterion(C, I_WEIGHTS, objectness_exclusion=True, objectness_background=background,
                                       anneal_ownership=True, sinkhorn_iters=40)
            crit(pred, targets)["loss_influencer"].backward()
            push[background, no_object_logit] = pred["pred_masks"][0].grad[2, 14:18].sum().item()
    assert push[False, 8.0] == pytest.approx(push[False, 0.0]) and push[False, 0.0] > 0
    assert push[True, 0.0] > 0 and push[True, 8.0] < 0.05 * push[True, 0.0]
    with pytest.raises(ValueError, match="objectness_background .* needs objectness_exclusion=True"):
        InfluencerCriterion(C, I_WEIGHTS, objectness_background=True)


def test_ownership_mask_cost_reaches_the_ownership_of_the_criterion():
    # Point form, one image, two instances: query 0 says "yes" on both, queries 1 and 2 each on
    # one. The class targets follow the ownership: with the mask cost, query 0 is no one's owner
    # and its class target is "no object"; without it, it half-owns both instances.
    masks = torch.zeros(2, 40, dtype=torch.bool)
    masks[0, :10] = masks[1, 10:20] = True
    z = torch.full((4, 40), -6.0)
    z[0, :20], z[1, 10:20], z[2, :10] = 5.0, 1.0, 1.0
    targets = [{"labels": torch.tensor([0, 1]), "masks": masks}]
    pred = {"pred_logits": [torch.zeros(4, C + 1)], "pred_masks": [z]}
    kw = dict(anneal_ownership=True, sinkhorn_iters=40)
    plain = InfluencerCriterion(C, I_WEIGHTS, **kw)
    costed = InfluencerCriterion(C, I_WEIGHTS, ownership_mask_cost=5.0, **kw)
    plain(pred, targets)
    costed(pred, targets)
    assert (plain.last_assignments[0][:, 0] > 0.4).all()
    assert costed.last_assignments[0][:, 0].max() < 0.05
    assert torch.equal(costed.last_assignments[0].argmax(dim=1), torch.tensor([2, 1]))
    with pytest.raises(ValueError, match="ownership_mask_cost needs formulation='exclusive'"):
        InfluencerCriterion(C, I_WEIGHTS, formulation="original", ownership_mask_cost=1.0)
    with pytest.raises(ValueError, match="ownership_mask_cost must be >= 0"):
        InfluencerCriterion(C, I_WEIGHTS, ownership_mask_cost=-1.0)


def test_density_weighted_points_make_the_owner_bce_a_per_pixel_mean():
    # A small instance (1.6% of the image) and its owner, whose "yes" bloats onto a ring around
    # it. Half of the points are drawn inside the instance, where the owner is right, so the
    # unweighted owner BCE sees the ring (where it is wrong) far less than its share of pixels;
    # density-weighted, it estimates the BCE over all pixels, as uniform points would.
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 28:36, 28:36] = True  # cells 7..8 of the 16 x 16 prediction
    pred = torch.full((1, 3, 16, 16), -8.0)
    pred[0, 0] = -6.0
    pred[0, 0, 6:10, 6:10] = 4.0
    targets = [{"labels": torch.tensor([1]), "masks": masks}]
    centres = (torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="xy"), -1) + 0.5) / 64
    from influencerformer.point_sampling import point_sample
    dense = point_sample(pred[0, :1], centres.reshape(1, -1, 2))[0]
    per_pixel = F.binary_cross_entropy_with_logits(dense, masks.reshape(-1).float()).item()
    only_bce = dict(attr_weight=0.0, rep_weight=0.0, bg_weight=0.0, excl_weight=0.0, bce_weight=1.0,
                    num_points=4000, instance_point_share=0.5)
    estimate = {}
    for weighted in (False, True):
        crit = InfluencerCriterion(C, I_WEIGHTS, density_weighted_points=weighted, **only_bce)
        values = []
        for seed in range(8):
            torch.manual_seed(seed)
            crit({"pred_logits": torch.zeros(1, 3, C + 1), "pred_masks": pred}, targets)
            assert crit.last_assignments[0][0, 0] > 0.99
            values.append(float(crit.last_stats["bce"]))
        estimate[weighted] = sum(values) / len(values)
    assert estimate[True] == pytest.approx(per_pixel, rel=0.05)
    assert estimate[False] < 0.75 * per_pixel


def _shared_offset_batch(offset: float, num_images: int = 8, num_queries: int = 20):
    """A batch of 3-instance images whose mask logits are the same per query in every image up to
    noise, query q ahead of the others by ``offset * q / (Q - 1)``: the near-symmetric start."""
    gen = torch.Generator().manual_seed(0)
    masks = torch.zeros(num_images, 3, 16, 16, dtype=torch.bool)
    for b in range(num_images):
        for k in range(3):
            masks[b, k, :, k * 5 + b % 2:k * 5 + b % 2 + 4] = True
    targets = [{"labels": torch.tensor([0, 1, 2]), "masks": masks[b]} for b in range(num_images)]
    logits = torch.linspace(0, offset, num_queries)[None, :, None, None] + 0.02 * torch.randn(
        num_images, num_queries, 16, 16, generator=gen)
    return targets, logits


def test_query_balance_spreads_ownership_over_queries_but_keeps_clear_owners():
    targets, logits = _shared_offset_batch(1.0)
    usage = {}
    for balance in (0.0, 1.0):
        torch.manual_seed(0)
        crit = InfluencerCriterion(C, I_WEIGHTS, query_balance=balance, anneal_ownership=True, sinkhorn_iters=40,
                                   num_points=256)
        crit({"pred_logits": torch.zeros(8, 20, C + 1), "pred_masks": logits}, targets)
        usage[balance] = torch.stack(crit.last_assignments).sum(dim=(0, 1))  # (Q,)
    top5 = {b: float(u.topk(5).values.sum() / u.sum()) for b, u in usage.items()}
    assert top5[0.0] > 0.55 and top5[1.0] < 0.45  # the leading queries no longer take every image
    # clear claims: every image's instances have exact queries (different ones per image); the
    # balancing leaves them the owners
    clear = torch.full((8, 20, 16, 16), -8.0)
    for b, t in enumerate(targets):
        for k in range(3):
            clear[b, (3 * b + k) % 20][t["masks"][k]] = 8.0
    for balance in (0.0, 1.0):
        crit = InfluencerCriterion(C, I_WEIGHTS, query_balance=balance, anneal_ownership=True, sinkhorn_iters=40,
                                   num_points=256)
        crit({"pred_logits": torch.zeros(8, 20, C + 1), "pred_masks": clear}, targets)
        owners = torch.stack([a.argmax(dim=1) for a in crit.last_assignments])
        assert owners.tolist() == [[(3 * b + k) % 20 for k in range(3)] for b in range(8)]
    with pytest.raises(ValueError, match="query_balance must be >= 0"):
        InfluencerCriterion(C, I_WEIGHTS, query_balance=-1.0)
    with pytest.raises(ValueError, match="query_balance needs formulation='exclusive'"):
        InfluencerCriterion(C, I_WEIGHTS, formulation="original", query_balance=1.0)
