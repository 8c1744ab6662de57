"""One CPU training step with each criterion; inference output format."""
import os

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.structures import BitMasks, Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402

TINY_OVERRIDES = [
    "model.transformer_decoder.num_queries=6",
    "model.transformer_decoder.dec_layers=3",
    "model.pixel_decoder.num_encoder_layers=1",
    "model.criterion.num_points=256",
]


def tiny_model(criterion, extra=()):
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs", "synthetic", f"{criterion}.py"))
    overrides = list(TINY_OVERRIDES) + list(extra)
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    torch.manual_seed(0)
    return cfg, instantiate(cfg.model)


def fake_input(h, w, k, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    masks = torch.zeros((k, h, w), dtype=torch.bool)
    for i in range(k):
        y0, x0 = int(torch.randint(0, h // 2, (1,), generator=g)), int(torch.randint(0, w // 2, (1,), generator=g))
        masks[i, y0 : y0 + h // 3, x0 : x0 + w // 3] = True
    inst.gt_masks = BitMasks(masks)
    inst.gt_classes = torch.randint(0, num_classes, (k,), generator=g)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return {"image": image, "instances": inst, "height": h, "width": w}


@pytest.mark.parametrize("criterion", ["influencer", "hungarian"])
def test_one_training_step(criterion):
    cfg, model = tiny_model(criterion)
    model.train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    # different sizes in a batch (padding), and an image without instances
    batch = [fake_input(64, 48, 3, seed=1), fake_input(40, 64, 0, seed=2)]
    with EventStorage():
        losses = model(batch)
    weights = model.criterion.weight_dict
    expected = {"loss_ce", "loss_mask", "loss_dice"}  # each summed over the 4 layers (dec_layers=3 + final)
    assert set(losses) == expected
    assert all(v.shape == (4,) for v in model.criterion.layer_losses.values())
    for v in losses.values():
        assert v.dim() == 0 and torch.isfinite(v)
    # weighted: the criterion's raw terms times weight_dict
    with EventStorage():
        torch.manual_seed(1)
        images = model.preprocess_image(batch)
        outputs = model.predict(images.tensor)
        raw = model.criterion(outputs, model.prepare_targets(batch, images))
    assert set(raw) == expected
    assert all(weights[k] > 0 for k in raw)

    before = [p.detach().clone() for p in model.parameters()]
    optimizer.zero_grad()
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:5])
    optimizer.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert changed > len(before) // 2


def test_prepare_targets_pads_to_batch():
    _, model = tiny_model("influencer")
    batch = [fake_input(64, 48, 2), fake_input(40, 64, 0)]
    images = model.preprocess_image(batch)
    assert tuple(images.tensor.shape[-2:]) == (64, 64)  # size_divisibility 32
    targets = model.prepare_targets(batch, images)
    assert targets[0]["masks"].shape == (2, 64, 64) and targets[0]["masks"].dtype == torch.bool
    assert torch.equal(targets[0]["masks"][:, :, :48], batch[0]["instances"].gt_masks.tensor)
    assert not targets[0]["masks"][:, :, 48:].any()
    assert targets[1]["masks"].shape == (0, 64, 64)
    assert targets[1]["labels"].dtype == torch.int64


def test_unweighted_terms_are_dropped_and_logged():
    _, model = tiny_model("influencer")
    model.criterion.weight_dict = {"loss_a": 2.0}
    with EventStorage() as storage:
        out = model.weigh_losses({"loss_a": torch.tensor(1.5), "loss_b": torch.tensor(3.0)})
        assert storage.latest()["unweighted/loss_b"][0] == 3.0
    assert set(out) == {"loss_a"} and float(out["loss_a"]) == 3.0


def test_inference_output_format():
    _, model = tiny_model("influencer", ["model.test_topk_per_image=10"])
    model.eval()
    # the network saw a resized 64x48 image; the original was 100x75
    batch = [dict(fake_input(64, 48, 0), height=100, width=75), fake_input(32, 32, 0)]
    with torch.no_grad():
        results = model(batch)
    assert len(results) == 2
    for res, (h, w) in zip(results, [(100, 75), (32, 32)]):
        inst = res["instances"]
        assert isinstance(inst, Instances) and inst.image_size == (h, w)
        assert len(inst) == 10
        assert inst.pred_masks.shape == (10, h, w) and inst.pred_masks.dtype == torch.bool
        assert isinstance(inst.pred_boxes, Boxes) and inst.pred_boxes.tensor.shape == (10, 4)
        assert inst.scores.shape == (10,) and ((inst.scores >= 0) & (inst.scores <= 1)).all()
        assert inst.pred_classes.dtype == torch.int64
        assert ((inst.pred_classes >= 0) & (inst.pred_classes < 5)).all()
        assert torch.all(inst.scores[:-1] >= 0)  # finite
    owners = model.query_ownership(batch)
    assert owners[0].shape == (100, 75) and owners[0].dtype == torch.int64
    assert ((owners[0] >= -1) & (owners[0] < 6)).all()


def test_test_mask_nms_threshold_is_a_config_key_that_thins_duplicates():
    _, model = tiny_model("influencer", ["model.test_topk_per_image=10", "model.test_mask_nms_threshold=0.5"])
    assert model.test_mask_nms_threshold == 0.5
    model.eval()
    batch = [fake_input(32, 32, 0)]
    with torch.no_grad():
        thinned = model(batch)[0]["instances"]
        model.test_mask_nms_threshold = None
        plain = model(batch)[0]["instances"]
    assert len(plain) == 10 and 0 < len(thinned) <= 10
    # what was kept has no same-class partner above the threshold among the kept
    masks = thinned.pred_masks.flatten(1).float()
    inter = masks @ masks.T
    iou = inter / (masks.sum(1)[:, None] + masks.sum(1)[None, :] - inter).clamp(min=1)
    same = thinned.pred_classes[:, None] == thinned.pred_classes[None, :]
    assert not ((iou > 0.5) & same & ~torch.eye(len(thinned), dtype=torch.bool)).any()
    with pytest.raises(ValueError, match="test_mask_nms_threshold"):
        tiny_model("influencer", ["model.test_mask_nms_threshold=1.5"])


@pytest.mark.parametrize("criterion", ["influencer_hybrid", "hungarian_hybrid"])
def test_hybrid_training_step_adds_the_group_terms_and_inference_is_unchanged(criterion):
    cfg, model = tiny_model(criterion, ["model.transformer_decoder.num_queries_one_to_many=12",
                                        "model.criterion_one_to_many.num_points=256"
                                        if criterion.startswith("influencer") else
                                        "model.criterion_one_to_many.criterion.num_points=256"])
    batch = [fake_input(64, 48, 3, seed=1), fake_input(40, 64, 0, seed=2)]
    model.train()
    with EventStorage():
        losses = model(batch)
    plain = {"loss_ce", "loss_mask", "loss_dice"}
    assert set(losses) == plain | {f"{k}_one_to_many" for k in plain}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    group = model.transformer_decoder.query_feat_one_to_many.weight.grad
    assert group is not None and group.abs().sum() > 0  # the group is trained
    model.eval()
    with torch.no_grad():
        (result,) = model([fake_input(64, 48, 3, seed=3)])
    # candidates come from the 6 one-to-one queries only: 6 x 5 classes = 30 < test_topk_per_image (50);
    # with the 12 group queries there would be 90 candidates and 50 instances
    assert model.test_topk_per_image == 50 and len(result["instances"]) == 6 * 5
