import pytest
import torch

from influencerformer.diagnostics import assignment_diagnostics, owners, owners_of
from research.testing import query_configurations


def test_ideal_and_duplicate_statistics():
    masks, configs = query_configurations(3, 6)
    assign = torch.eye(3, 6)
    ideal = assignment_diagnostics([configs["ideal"]], [masks], [assign])
    assert ideal == {"unique_best_share": 1.0, "multi_claim_share": 0.0, "owner_iou": 1.0, "queries_in_use": 0.5}
    merged = assignment_diagnostics([configs["merge_two_instances"]], [masks], [assign])
    assert merged["multi_claim_share"] == 1 / 6  # query 0 claims instances 0 and 1
    assert merged["unique_best_share"] == 1 / 3  # instances 0 and 1 share their best query
    assert merged["owner_iou"] < 1.0
    assert merged["queries_in_use"] == pytest.approx(2 / 6)


def test_queries_in_use_is_the_union_over_images():
    # the same three queries serve both images, or the second image's instances go to three others
    masks, configs = query_configurations(3, 6)
    shifted = configs["ideal"].roll(3, dims=0)  # queries 3..5 take the instances
    assign = torch.eye(3, 6)
    same = assignment_diagnostics([configs["ideal"]] * 2, [masks] * 2, [assign] * 2)
    spread = assignment_diagnostics([configs["ideal"], shifted], [masks] * 2, [assign] * 2)
    assert same["queries_in_use"] == 0.5 and spread["queries_in_use"] == 1.0


def test_owner_change_rate():
    masks, configs = query_configurations(2, 4)
    first = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    second = torch.tensor([[0, 0, 1.0, 0], [0, 1.0, 0, 0]])
    stats = assignment_diagnostics([configs["ideal"]], [masks], [second], previous_owners=owners_of([first]))
    assert stats["owner_change_rate"] == 0.5
    assert owners(torch.zeros(0, 4)).numel() == 0
    empty = assignment_diagnostics([configs["ideal"]], [masks[:0]], [torch.zeros(0, 4)])
    assert empty["multi_claim_share"] == 0.0


def test_duplicate_share_counts_confident_duplicates_only():
    masks, configs = query_configurations(3, 6)
    assign = torch.eye(3, 6)
    dup = configs["one_duplicate"]  # a second query repeats one instance's mask
    confident = torch.ones(6)
    stats = assignment_diagnostics([dup], [masks], [assign], objectness=[confident])
    assert stats["duplicate_share"] == 1 / 3
    ideal = assignment_diagnostics([configs["ideal"]], [masks], [assign], objectness=[confident])
    assert ideal["duplicate_share"] == 0.0
    # the duplicate says "no object": not counted
    iou_dup = [q for q in range(6) if q >= 3 and (dup[q] > 0).any()]
    unsure = confident.clone()
    unsure[iou_dup] = 0.1
    assert assignment_diagnostics([dup], [masks], [assign], objectness=[unsure])["duplicate_share"] == 0.0
    assert "duplicate_share" not in assignment_diagnostics([dup], [masks], [assign])


def test_shares_best_query_marks_merges_only_among_found_instances():
    from influencerformer.diagnostics import shares_best_query
    best = torch.tensor([2, 2, 0, 5])
    assert shares_best_query(best).tolist() == [True, True, False, False]
    # instance 1 has no best query: instance 0 no longer shares
    assert shares_best_query(best, torch.tensor([True, False, True, True])).tolist() == [False, False, False, False]
