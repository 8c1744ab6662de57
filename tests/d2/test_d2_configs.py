"""Every config builds; the COCO model has the published R50 size; the paired configs
differ only in the criterion."""
import os

import pytest

pytest.importorskip("detectron2")

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402

CONFIGS = ["coco/influencer.py", "coco/hungarian.py", "coco/influencer_potentials.py", "synthetic/influencer.py",
           "synthetic/hungarian.py", "synthetic/influencer_potentials.py", "synthetic/influencer_one_to_few.py",
           "synthetic/influencer_hybrid.py", "synthetic/hungarian_hybrid.py", "coco/influencer_hybrid.py",
           "coco/hungarian_hybrid.py"]
CRITERIA = {"influencer": "InfluencerCriterion", "influencer_potentials": "InfluencerCriterion",
            "influencer_one_to_few": "InfluencerCriterion", "hungarian": "HungarianCriterion",
            "influencer_hybrid": "InfluencerCriterion", "hungarian_hybrid": "HungarianCriterion"}


def load(name):
    return LazyConfig.load(os.path.join(REPO_ROOT, "configs", name))


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", CONFIGS)
def test_model_builds(name):
    cfg = load(name)
    model = instantiate(cfg.model)
    kind = os.path.basename(name)[: -len(".py")]
    assert type(model.criterion).__name__ == CRITERIA[kind]
    assert model.criterion.num_classes == model.num_classes == model.transformer_decoder.num_classes
    if kind.startswith("influencer"):  # the measured ownership setting reaches the core
        crit = model.criterion
        assigner = crit.assigner
        assert (assigner.anneal, assigner.num_iters, assigner.temperature, assigner.detach) == (True, 40, 0.2, True)
        assert crit.importance_sample_ratio == 0.75 and crit.oversample_ratio == 3.0
        # the default weighs Mask2Former's owner losses with the plan; the potentials config the potentials
        owner_losses = kind in ("influencer", "influencer_one_to_few", "influencer_hybrid")
        costs = (assigner.cost_class, assigner.cost_mask, assigner.cost_dice)
        assert costs == ((1.0, 5.0, 5.0) if owner_losses else (1.0, 0.0, 0.0))
        if owner_losses:
            assert crit.potentials is None and crit.weight_dict == {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
        else:
            assert list(crit.potentials.weights.values()) == [1.0] * 4 and crit.potentials.exclusion == "sum"
            assert crit.weight_dict == {"loss_ce": 2.0, "loss_mask": 5.0, "loss_influencer": 5.0}
    assert len(model.transformer_decoder.cross_attention_layers) == cfg.model.transformer_decoder.dec_layers
    if name.startswith("coco/"):
        total, backbone = count(model), count(model.backbone)
        assert model.num_classes == 80
        assert model.transformer_decoder.num_queries == 100
        assert abs(total - 44.0e6) / 44.0e6 < 0.03, total
        assert abs(backbone - 23.5e6) / 23.5e6 < 0.03, backbone
    else:
        assert count(model) < 15e6


@pytest.mark.parametrize("other", ["hungarian", "influencer_potentials"])
@pytest.mark.parametrize("dataset", ["coco", "synthetic"])
def test_pair_differs_only_in_criterion(dataset, other):
    a = OmegaConf.to_container(load(f"{dataset}/influencer.py"), resolve=False)
    b = OmegaConf.to_container(load(f"{dataset}/{other}.py"), resolve=False)
    for cfg in (a, b):
        cfg["model"].pop("criterion")
        cfg["train"].pop("output_dir")
    assert a == b


def test_one_to_few_config_is_the_default_with_annealed_queries_per_instance():
    a = OmegaConf.to_container(load("synthetic/influencer.py"), resolve=False)
    b = OmegaConf.to_container(load("synthetic/influencer_one_to_few.py"), resolve=False)
    criterion = b["model"]["criterion"]
    assert (criterion.pop("queries_per_instance"), criterion.pop("queries_per_instance_iters")) == (3.0, 600)
    for cfg in (a, b):
        cfg["train"].pop("output_dir")
    assert a == b
    criterion = instantiate(load("synthetic/influencer_one_to_few.py").model.criterion)
    assert float(criterion.current_queries_per_instance()) == 3.0 and "training_calls" in criterion.state_dict()


def test_the_default_config_criterion_is_the_cores_default():
    """configs/common/criterion.py: influencer is InfluencerCriterion(num_classes, weight_dict): the
    shipped recipe is what the core builds by default."""
    from influencerformer.criterion import InfluencerCriterion
    built = instantiate(load("coco/influencer.py").model.criterion)
    default = InfluencerCriterion(80, {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0})
    assert repr(built) == repr(default) and built.weight_dict == default.weight_dict


def test_coco_recipe():
    cfg = load("coco/influencer.py")
    assert cfg.dataloader.train.total_batch_size == 16
    assert cfg.train.max_iter == 368750
    assert cfg.train.amp.enabled
    assert cfg.train.init_checkpoint == "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    assert cfg.optimizer.optimizer == "AdamW"
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 0.05
    assert cfg.optimizer.params.backbone_multiplier == 0.1
    assert cfg.optimizer.clip_grad_norm == 0.01
    aug = cfg.dataloader.train.mapper.augmentations
    assert (aug.image_size, aug.min_scale, aug.max_scale, aug.horizontal_flip) == (1024, 0.1, 2.0, True)
    assert cfg.dataloader.test.dataset.names == "coco_2017_val"
    assert cfg.dataloader.evaluator.dataset_name == "coco_2017_val"
    assert dict(cfg.model.criterion.weight_dict) == {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    assert dict(load("coco/hungarian.py").model.criterion.weight_dict) == {
        "loss_ce": 2.0,
        "loss_mask": 5.0,
        "loss_dice": 5.0,
    }

    sched = instantiate(cfg.lr_multiplier)
    assert sched(0.0) == 1.0
    assert sched(0.899) == pytest.approx(1.0)
    assert sched(0.901) == pytest.approx(0.1)
    assert sched(0.951) == pytest.approx(0.01)
    # the steps follow train.max_iter overrides
    cfg = LazyConfig.apply_overrides(cfg, ["train.max_iter=1000"])
    sched = instantiate(cfg.lr_multiplier)
    assert [sched(i / 1000) for i in (899, 900, 949, 950)] == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_optimizer_groups_and_clipping():
    import torch

    cfg = load("synthetic/influencer.py")
    cfg = LazyConfig.apply_overrides(cfg, ["optimizer.params.backbone_multiplier=0.1", "optimizer.clip_grad_norm=0.01"])
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    lr = cfg.optimizer.lr
    backbone = {id(p) for p in model.backbone.parameters()}
    embeds = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    norms = {id(p) for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm2d)) for p in m.parameters(recurse=False)}
    n_params = 0
    for group in opt.param_groups:
        for p in group["params"]:
            n_params += 1
            assert group["lr"] == pytest.approx(lr * (0.1 if id(p) in backbone else 1.0))
            expected_wd = 0.0 if (id(p) in embeds or id(p) in norms) else cfg.optimizer.weight_decay
            assert group["weight_decay"] == expected_wd
    assert n_params == len([p for p in model.parameters() if p.requires_grad])

    # full-model clipping: the global norm after step's clip is <= 0.01
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    assert total <= 0.01 + 1e-6
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("dataset, group", [("synthetic", 60), ("coco", 300)])
@pytest.mark.parametrize("criterion", ["influencer", "hungarian"])
def test_hybrid_configs_differ_from_their_sibling_only_in_the_query_group(dataset, criterion, group):
    plain = OmegaConf.to_container(load(f"{dataset}/{criterion}.py"), resolve=False)
    hybrid = OmegaConf.to_container(load(f"{dataset}/{criterion}_hybrid.py"), resolve=False)
    assert hybrid["model"]["transformer_decoder"].pop("num_queries_one_to_many") == group
    group_criterion = hybrid["model"].pop("criterion_one_to_many")
    for cfg in (plain, hybrid):
        cfg["train"].pop("output_dir")
    assert plain == hybrid
    model = instantiate(load(f"{dataset}/{criterion}_hybrid.py").model)
    crit = model.criterion_one_to_many
    if criterion == "influencer":  # three owners per instance, by the plan's marginals
        assert crit.queries_per_instance == 3.0 and crit.queries_per_instance_iters == 0
        assert crit.weight_dict == model.criterion.weight_dict
    else:  # the ground truth three times, matched by the baseline's own criterion
        assert group_criterion["repeats"] == 3 and crit.repeats == 3
        assert type(crit.criterion) is type(model.criterion) and crit.weight_dict == model.criterion.weight_dict
        assert crit.criterion.num_points == model.criterion.num_points
