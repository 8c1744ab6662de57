"""Optimisation landscape: free logits under Adam reach the one-to-one assignment."""
import pytest
import torch

from research.testing import is_one_to_one, optimise_free_logits, random_instance_masks

CASES = [(k, q) for k in (1, 5, 20) for q in sorted({k, 2 * k, 100})]


@pytest.mark.parametrize("start", ["random", "symmetric"])
@pytest.mark.parametrize("num_inst,num_queries", CASES)
def test_exclusive_reaches_one_to_one(num_inst, num_queries, start):
    masks = random_instance_masks(num_inst, torch.Generator().manual_seed(0))
    logits = optimise_free_logits(masks, num_queries, start=start, seed=0, steps=400)
    assert is_one_to_one(logits, masks, min_iou=0.95)


def test_original_does_not_reach_one_to_one():
    """Documented behaviour: with spare queries the original formula spreads instances over many."""
    masks = random_instance_masks(5, torch.Generator().manual_seed(0))
    logits = optimise_free_logits(masks, 10, start="random", seed=0, steps=400, formulation="original")
    assert not is_one_to_one(logits, masks)
    claimants = ((logits > 0).float() @ masks.T / masks.sum(1) > 0.9).sum(0)  # queries covering >90% of k
    assert (claimants > 1).any()


def test_is_one_to_one_detects_defects():
    from research.testing import query_configurations
    masks, configs = query_configurations(3, 6)
    assert is_one_to_one(configs["ideal"], masks)
    for name in ("one_duplicate", "merge_two_instances", "split_instance", "background_leak", "covers_90_percent"):
        assert not is_one_to_one(configs[name], masks, min_iou=0.95), name


def test_instance_points_only_forgives_a_spare_querys_background_but_not_a_duplicate():
    from research.testing import query_configurations
    masks, configs = query_configurations(3, 6)
    background = masks.amax(dim=0) == 0
    spare = configs["ideal"].clone()
    owners = (configs["ideal"] > 0).float() @ masks.T  # (Q, K) overlap
    spare_query = int((owners.sum(1) == 0).nonzero()[0])
    spare[spare_query, background] = 8.0  # a spare query says "yes" on the background only
    assert not is_one_to_one(spare, masks) and is_one_to_one(spare, masks, instance_points_only=True)
    assert not is_one_to_one(configs["one_duplicate"], masks, instance_points_only=True)



def test_owner_losses_with_the_exclusion_reach_one_to_one_on_the_instances():
    """Mask2Former's owner losses and the non-owners' exclusion, no background term: instances end
    one-to-one; spare queries keep a free background. Without the exclusion nothing pushes a spare
    query off an instance: duplicates stay."""
    variant = dict(attr_weight=0.0, rep_weight=0.0, bg_weight=0.0, excl_weight=1.0, dice_weight=1.0, bce_weight=1.0)
    masks = random_instance_masks(5, torch.Generator().manual_seed(0))
    logits = optimise_free_logits(masks, 10, start="random", seed=0, steps=400, **variant)
    assert is_one_to_one(logits, masks, instance_points_only=True)
    free = optimise_free_logits(masks, 10, start="random", seed=0, steps=400, **(variant | {"excl_weight": 0.0}))
    assert not is_one_to_one(free, masks, instance_points_only=True)
