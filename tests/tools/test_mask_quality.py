"""tools/mask_quality.py: the per-instance statistics (framework-free parts; the run loading
is exercised end to end by tests/d2/test_d2_train_net.py)."""
import pytest
import torch

from tools import mask_quality


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
    assert table.splitlines()[2].endswith("| 0.667 | 0.33 | 4.0 | 0.30 |")
    with pytest.raises(ValueError, match="no GT instances"):
        mask_quality.size_boundaries([])


def test_cli_rejects_a_folder_without_config(tmp_path):
    with pytest.raises(SystemExit):
        mask_quality.main([str(tmp_path)])
