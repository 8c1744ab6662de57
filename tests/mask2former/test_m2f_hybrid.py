"""The one-to-many group's criteria: several queries per instance, by marginals or by repeats."""
import pytest
import torch

from influencerformer.criterion import HungarianCriterion, InfluencerCriterion
from influencerformer.matching import HungarianMatcher
from projects.mask2former.hybrid import RepeatedTargetsCriterion

C = 3
WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}


def group_batch(queries=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, :16, :16] = True
    masks[1, 16:, 8:30] = True
    outputs = {"pred_logits": torch.randn(1, queries, C + 1, generator=gen),
               "pred_masks": torch.randn(1, queries, 16, 16, generator=gen)}
    return outputs, [{"labels": torch.tensor([0, 2]), "masks": masks}]


def test_repeated_targets_give_each_instance_k_matched_queries():
    outputs, targets = group_batch()
    inner = HungarianCriterion(C, HungarianMatcher(num_points=256), WEIGHTS, num_points=256)
    crit = RepeatedTargetsCriterion(inner, repeats=3)
    losses = crit(outputs, targets)
    assert set(losses) == set(WEIGHTS) and crit.weight_dict is inner.weight_dict and crit.num_classes == C
    (assignment,) = inner.last_assignments  # (K * 3, Q) one-hot matches of the repeated instances
    assert assignment.shape == (6, 12) and assignment.sum().item() == 6
    assert (assignment.sum(0) <= 1).all()  # six distinct queries, three per instance
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        RepeatedTargetsCriterion(inner, repeats=0)


def test_queries_per_instance_gives_each_instance_k_owners_without_repeats():
    outputs, targets = group_batch()
    crit = InfluencerCriterion(C, WEIGHTS, num_points=256, queries_per_instance=3.0)
    crit(outputs, targets)
    (plan,) = crit.last_assignments  # (K, Q): each instance row holds 3 queries' worth of ownership
    assert plan.shape == (2, 12)
    assert torch.allclose(plan.sum(1), torch.full((2,), 3.0), atol=1e-4)
    # no query is owned twice over (the last normalisation is over rows: columns within 1% after 40 steps)
    assert (plan.sum(0) <= 1.01).all()
