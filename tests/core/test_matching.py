import itertools

import pytest
import torch

from influencerformer.losses import dice_loss, pairwise_dice_cost, pairwise_sigmoid_ce_cost, sigmoid_ce_loss
from influencerformer.matching import HungarianMatcher, assignment_matrix


def _blobs(num, size=32, gen=None):
    masks = torch.zeros(num, size, size)
    for k in range(num):
        r0, c0 = torch.randint(0, size - 8, (2,), generator=gen).tolist()
        masks[k, r0:r0 + 6 + k % 3, c0:c0 + 5 + k % 4] = 1
    return masks


def test_pairwise_costs_equal_elementwise_losses():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 50, generator=gen) * 3
    tgt = (torch.rand(4, 50, generator=gen) > 0.5).float()
    ce = pairwise_sigmoid_ce_cost(logits, tgt)
    dice = pairwise_dice_cost(logits, tgt)
    for q, k in itertools.product(range(5), range(4)):
        assert ce[q, k].item() == pytest.approx(sigmoid_ce_loss(logits[q:q + 1], tgt[k:k + 1], 1).item(), rel=1e-5)
        assert dice[q, k].item() == pytest.approx(dice_loss(logits[q:q + 1], tgt[k:k + 1], 1).item(), rel=1e-5)


@pytest.mark.parametrize("point_form", [False, True])
def test_matcher_recovers_a_known_permutation(point_form):
    gen = torch.Generator().manual_seed(1)
    num_inst, num_queries, num_classes = 6, 15, 4
    masks = _blobs(num_inst, gen=gen)
    labels = torch.randint(0, num_classes, (num_inst,), generator=gen)
    perm = torch.randperm(num_queries, generator=gen)[:num_inst]  # query perm[k] predicts instance k
    pred_masks = torch.full((num_queries, 32, 32), -6.0)
    pred_masks[perm] = torch.where(masks > 0, 6.0, -6.0) + 0.5 * torch.randn(num_inst, 32, 32, generator=gen)
    logits = torch.zeros(num_queries, num_classes + 1)
    logits[perm, labels] = 4.0
    if point_form:
        outputs = {"pred_logits": [logits], "pred_masks": [pred_masks.flatten(1)]}
        targets = [{"labels": labels, "masks": masks.flatten(1)}]
    else:
        outputs = {"pred_logits": logits[None], "pred_masks": pred_masks[None]}
        targets = [{"labels": labels, "masks": masks}]
    (q_idx, k_idx), = HungarianMatcher(num_points=2000)(outputs, targets)
    assert q_idx.dtype == torch.int64 and k_idx.dtype == torch.int64
    assert sorted(k_idx.tolist()) == list(range(num_inst))
    assert all(perm[k] == q for q, k in zip(q_idx.tolist(), k_idx.tolist()))


def test_matcher_empty_image_and_autocast():
    matcher = HungarianMatcher(num_points=100)
    outputs = {"pred_logits": torch.randn(2, 5, 3), "pred_masks": torch.randn(2, 5, 8, 8)}
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 8, 8)},
               {"labels": torch.tensor([1]), "masks": torch.ones(1, 16, 16)}]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = matcher(outputs, targets)
    assert out[0][0].numel() == 0 and out[1][0].numel() == 1


def test_assignment_matrix():
    mat = assignment_matrix((torch.tensor([3, 0]), torch.tensor([1, 0])), 2, 4)
    assert mat.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]


def test_matcher_rejects_all_zero_costs():
    with pytest.raises(ValueError):
        HungarianMatcher(0, 0, 0)
