"""research/mask_quality.py: the per-instance statistics (framework-free parts; the run loading
is exercised end to end by tests/d2/test_d2_train_net.py)."""
import pytest
import torch

from research import mask_quality


def test_instance_rows_take_the_best_confident_query():
    # 10 points; instance 0 = points 0-3, instance 1 = points 6-7.
    gt = torch.zeros(2, 10)
    gt[0, :4] = 1
    gt[1, 6:8] = 1
    logits = torch.full((3, 10), -5.0)
    logits[0, :4] = 5.0  # exact on instance 0, but not confident
    logits[1, :6] = 5.0  # covers instance 0 and two background points
    logits[2, 7:10] = 5.0  # half of instance 1 and two background points
    objectness = torch.tensor([[0.2, 0.9, 0.8]])
    rows = mask_quality.instance_rows([logits], [gt], objectness, confident=0.5)
    assert len(rows) == 2
    assert rows[0] == pytest.approx({"area": 0.4, "iou": 4 / 6, "recall": 1.0, "precision": 4 / 6,
                                     "on_other_instances": 0.0, "on_background": 2 / 6, "shared": 0.0, "query": 1})
    assert rows[1] == pytest.approx({"area": 0.2, "iou": 1 / 4, "recall": 0.5, "precision": 1 / 3,
                                     "on_other_instances": 0.0, "on_background": 2 / 3, "shared": 0.0, "query": 2})
    # a query merging both instances: its excess area is on the other instance
    merged = logits.clone()
    merged[2] = -5.0
    merged[2, :4] = merged[2, 6:8] = 5.0
    rows = mask_quality.instance_rows([merged], [gt], objectness, confident=0.5)
    assert rows[1]["on_other_instances"] == pytest.approx(4 / 6) and rows[1]["on_background"] == 0.0
    assert rows[1]["precision"] == pytest.approx(2 / 6)
    assert [r["query"] for r in rows] == [1, 2] and [r["shared"] for r in rows] == [0.0, 0.0]
    # with query 1 unsure, the merging query is the best of both instances: shared
    rows = mask_quality.instance_rows([merged], [gt], torch.tensor([[0.2, 0.2, 0.8]]), confident=0.5)
    assert [r["query"] for r in rows] == [2, 2] and [r["shared"] for r in rows] == [1.0, 1.0]
    # no confident query overlaps instance 1: no best query, and instance 0's is not shared
    alone = logits.clone()
    alone[2] = -5.0
    rows = mask_quality.instance_rows([alone], [gt], objectness, confident=0.5)
    assert [r["query"] for r in rows] == [1, -1] and [r["shared"] for r in rows] == [0.0, 0.0]
    # with every query confident, the exact one wins instance 0
    everyone = mask_quality.instance_rows([logits], [gt], torch.ones(1, 3), confident=0.5)
    assert everyone[0]["iou"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="must agree"):
        mask_quality.instance_rows([logits, logits], [gt], objectness, confident=0.5)


def test_summary_splits_sizes_into_terciles_and_counts_misses():
    rows = [{"area": a, "iou": i, "recall": 1.0, "precision": i, "on_other_instances": 0.0, "on_background": 1 - i,
             "shared": float(q == 3), "query": q}
            for a, i, q in [(0.01, 0.2, 3), (0.02, 0.6, 3), (0.03, 0.9, 1), (0.1, 0.4, -1), (0.2, 0.8, 0), (0.3, 1.0, 1)]]
    bounds = mask_quality.size_boundaries([r["area"] for r in rows])
    assert bounds == [0.03, 0.2]
    out = mask_quality.summarise(rows, bounds, num_images=3, num_confident=12, num_queries=10)
    assert out["instances"] == 6 and out["confident_queries_per_image"] == 4.0
    assert out["queries_in_use"] == pytest.approx(0.3)  # queries 0, 1, 3; -1 is "none"
    assert out["small"]["shared"] == pytest.approx(2 / 3)
    assert out["small"]["instances"] == 3 and out["small"]["missed"] == pytest.approx(1 / 3)
    assert out["small"]["iou"] == pytest.approx((0.2 + 0.6 + 0.9) / 3)
    assert out["small"]["on_background"] == pytest.approx((0.8 + 0.4 + 0.1) / 3)
    assert out["medium"]["instances"] == 2 and out["medium"]["missed"] == pytest.approx(0.5)
    assert out["large"]["instances"] == 1 and out["large"]["iou"] == pytest.approx(1.0)
    table = mask_quality.format_table({"seed0": out})
    assert table.count("| seed0 |") == 3 and "| seed0 | small (area <= 0.030) | 3 | 0.567 |" in table
    assert table.splitlines()[2].endswith("| 0.667 | 0.33 | 4.0 | 0.30 | - | - | - |")  # rows without interiors
    with pytest.raises(ValueError, match="no GT instances"):
        mask_quality.size_boundaries([])


def test_interior_masks_erode_by_the_edge_width():
    grid = torch.zeros(2, 9, 9)
    grid[0, 1:8, 1:8] = 1  # a 7 x 7 square
    grid[1, 0:3, 0:9] = 1  # a 3-row band along the top border
    interior = mask_quality.interior_masks(grid.flatten(1), (9, 9), edge_width=2).reshape(2, 9, 9)
    expected = torch.zeros(9, 9)
    expected[3:6, 3:6] = 1
    assert torch.equal(interior[0], expected)
    # the image border is not a boundary: the band along it keeps its row on the border, full width
    assert torch.equal(interior[1][0], torch.ones(9)) and interior[1][1:].sum() == 0
    assert torch.equal(mask_quality.interior_masks(grid.flatten(1), (9, 9), 0), grid.flatten(1))
    with pytest.raises(ValueError, match="edge_width"):
        mask_quality.interior_masks(grid.flatten(1), (9, 9), -1)


def test_instance_rows_split_recall_into_interior_and_edge():
    # 1D "grid" of 12 points; instance 0 = points 0-7 with interior 2-5, instance 1 = points 9-10.
    gt = torch.zeros(2, 12)
    gt[0, :8] = 1
    gt[1, 9:11] = 1
    interior = torch.zeros(2, 12)
    interior[0, 2:6] = 1  # instance 1 has no interior
    logits = torch.full((3, 12), -5.0)
    logits[0, [0, 1, 2, 3, 6]] = 5.0  # the best query of instance 0: a hole at 4-5, half of its edge band
    logits[1, 5:7] = 5.0  # another confident query covers point 5 of the hole
    logits[2, 9:11] = 5.0
    objectness = torch.tensor([[0.9, 0.9, 0.9]])
    rows = mask_quality.instance_rows([logits], [gt], objectness, confident=0.5, interiors=[interior])
    assert rows[0]["query"] == 0
    assert rows[0]["interior_recall"] == pytest.approx(2 / 4)
    assert rows[0]["edge_recall"] == pytest.approx(3 / 4)
    assert rows[0]["interior_missed_elsewhere"] == pytest.approx(1 / 2)  # point 5 of the hole 4-5
    assert rows[1]["interior_recall"] is None and rows[1]["edge_recall"] == pytest.approx(1.0)
    assert rows[1]["interior_missed_elsewhere"] is None
    # query 1 not confident: the hole is a hole
    rows = mask_quality.instance_rows([logits], [gt], torch.tensor([[0.9, 0.2, 0.9]]), confident=0.5,
                                      interiors=[interior])
    assert rows[0]["interior_missed_elsewhere"] == 0.0
    # summaries average over the instances that have the part: instance 1 (medium) has no interior
    out = mask_quality.summarise(rows, [0.1, 0.5], num_images=1, num_confident=2, num_queries=3)
    assert out["large"]["interior_recall"] == pytest.approx(0.5) and out["large"]["edge_recall"] == pytest.approx(0.75)
    assert "interior_recall" not in out["medium"] and out["medium"]["edge_recall"] == pytest.approx(1.0)
    assert mask_quality.format_table({"r": out}).splitlines()[2].endswith("| - | 1.000 | - |")
    with pytest.raises(ValueError, match="interiors"):
        mask_quality.instance_rows([logits], [gt], objectness, confident=0.5, interiors=[interior[:1]])


def test_cli_rejects_a_folder_without_config(tmp_path):
    with pytest.raises(SystemExit):
        mask_quality.main([str(tmp_path)])
