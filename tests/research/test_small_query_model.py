import json

import torch

from research import small_query_model


def test_draw_batch_is_deterministic_and_consistent():
    a = small_query_model.draw_batch(3, 32, torch.Generator().manual_seed(0))
    b = small_query_model.draw_batch(3, 32, torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0])
    for tgt in a[1]:
        assert tgt["masks"].shape[1:] == (32, 32) and tgt["masks"].shape[0] == tgt["labels"].shape[0] >= 1
        assert tgt["masks"].sum(0).max() <= 1  # occlusion: disjoint visible masks


def test_runs_end_to_end_for_each_criterion(tmp_path):
    out = tmp_path / "r.json"
    results = small_query_model.main(["--steps", "3", "--batch", "2", "--val-batches", "1", "--points", "64",
                                      "--influencer", "excl_weight=0.5", "--json", str(out)])
    assert set(results) == {"hungarian", "original", "exclusive"}
    for m in results.values():
        assert 0 <= m["mean_best_iou"] <= m["mask_best_iou_any_query"] <= 1
        assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    saved = json.loads(out.read_text())
    assert saved["args"]["influencer"] == {"excl_weight": 0.5}
    assert saved["machine"]["torch"] == torch.__version__ and "commit" in saved["machine"]  # what "default" meant
