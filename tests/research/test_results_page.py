"""research/results_page.py: the page is generated from the artefacts and states the targets."""
import json

import pytest

from test_compare_runs import write_run
from research import results_page


def test_page_from_artefacts(tmp_path):
    ab = tmp_path / "ab"
    for seed in (0, 1):
        write_run(ab / f"hungarian_seed{seed}", "hungarian", seed, [(99, 10), (199, 30), (299, 40)], 0.5)
        write_run(ab / f"influencer_seed{seed}", "influencer", seed, [(99, 37), (199, 41), (299, 44)], 0.25)
        write_run(ab / f"slow_seed{seed}", "slow", seed, [(99, 1), (199, 5), (299, 20)], 0.25)
    cost = tmp_path / "cost.json"
    phases = dict(forward=1.0, criterion_forward=0.5, criterion_backward=0.5, network_backward=2.0, optimizer=0.1)
    results = {}
    for name, crit in (("hungarian", 1.0), ("influencer", 0.25)):
        r = dict(phases, criterion_forward=crit / 2, criterion_backward=crit / 2)
        r["total"] = sum(r.values())
        r["criterion"] = crit
        r["criterion_share"] = crit / r["total"]
        results[name] = r
    cost.write_text(json.dumps({"command": "iteration_cost.py", "device": "cpu", "batch": 2, "size": 384,
                                "instances": [3, 7], "iters": 3, "machine": {"cpu_count": 2}, "results": results}))
    counted = tmp_path / "cost_ops.json"  # the tool's newer output: also the criterion's operator count
    for name, ops in (("hungarian", 4000), ("influencer", 10000)):
        results[name]["criterion_ops"] = ops
    counted.write_text(json.dumps({"command": "iteration_cost.py", "device": "cpu", "batch": 2, "size": 384,
                                   "instances": [3, 7], "iters": 3, "machine": {"cpu_count": 2}, "results": results}))
    small = tmp_path / "small.json"
    metrics = dict(mean_best_iou=0.5, mask_best_iou_any_query=0.6, precision=0.7, recall=0.4,
                   instances_with_duplicates=0.0)
    small.write_text(json.dumps({"machine": {"commit": "abc1234"},
                                 "args": {"steps": 100, "seed": 0, "influencer": {"detach_ownership": True}},
                                 "results": {"hungarian": metrics, "exclusive": metrics}}))
    synthetic = tmp_path / "cost_synthetic.json"  # another model: no verdict on the COCO target
    synthetic.write_text(json.dumps({"command": "iteration_cost.py --config-files configs/synthetic/hungarian.py "
                                     "configs/synthetic/influencer.py", "device": "cpu", "batch": 8, "size": 128,
                                     "instances": [3], "iters": 3, "machine": {}, "results": results}))
    quality = tmp_path / "quality.json"
    size = dict(iou=0.5, recall=0.75, precision=0.625, missed=0.25, instances=4, max_area=0.02)
    quality.write_text(json.dumps({"command": "mask_quality.py runs/h runs/i", "images": 8, "confident": 0.5,
                                   "machine": {}, "results": {"runs/hungarian_seed0": {
                                       "instances": 12, "confident_queries_per_image": 2.5,
                                       "small": size, "medium": size, "large": None}}}))
    screen = tmp_path / "screen"
    write_run(screen / "hungarian_seed0", "hungarian", 0, [(24, 50), (49, 60)], 0.5)
    (ab / "PROVENANCE.md").write_text("a correction")
    out = tmp_path / "docs" / "results.md"
    page = results_page.main(["--ab", str(ab), "--focus", "influencer", "--screen", str(screen), "--fine-eval", str(ab),
                              "--iteration-cost", str(cost), str(counted), str(synthetic), "--small-model", str(small),
                              "--mask-quality", str(quality), "--output", str(out)])
    assert out.read_text() == page
    lines = {line.split("**")[1]: line for line in page.splitlines() if line.startswith("* **")}
    # influencer: 44 / 40 = 110%, reaches 36 at iteration 99 vs 299 -> 0.33x: both met
    assert "110% of Hungarian's (target ≥ 100%: met)" in lines["influencer"]
    assert "0.33x Hungarian's iterations (target ≤ 0.7x: met)" in lines["influencer"]
    assert "50% of Hungarian's (target ≥ 100%: NOT met)" in lines["slow"] and "2 of 2 runs never reach" in lines["slow"]
    assert ("In short: 1 of 2 arms reach Hungarian's final segm AP (influencer); 1 of 2 reach 90% of it in at "
            "most 0.7x its iterations (influencer); every other arm ends below Hungarian.") in page
    assert "| exclusive | detach_ownership=True | 100 | 0 | abc1234 | 0.500 |" in page
    # the finer-grid A/B (here the same runs) gets its own section with the same target lines
    assert "## Iterations to 90% of Hungarian's final AP, on a finer evaluation grid" in page
    assert page.count("0.33x Hungarian's iterations (target ≤ 0.7x: met)") == 2
    assert (tmp_path / "docs" / "results" / "fine_eval" / "ap_vs_iteration.png").is_file()
    assert "(results/fine_eval/ap_vs_iteration.png)" in page
    assert page.count(f"Corrections to this table, written by hand: `{ab / 'PROVENANCE.md'}`.") == 2
    # share 0.25/3.85 vs 1/4.6, one per COCO measurement; none for the synthetic model's
    assert page.count("(target ≤ 0.5: met)") == 2 and page.count("its share of the iteration is") == 3
    assert "3 measurements, each a separate run of the tool" in page
    assert page.count("| not counted |") == 2 and "| 10000 |" in page
    assert page.count("it dispatches 2.50x Hungarian's operators") == 2
    assert "| hungarian_seed0 | medium (area <= 0.020) | 4 | 0.500 | 0.750 | 0.625 | - | - | - | 0.25 | 2.5 | - |" in page
    assert "| hungarian_seed0 | large" not in page  # no instances in that tercile
    assert "## Early training" in page and "| hungarian | 1 | 24 / 49 | – | – | 0.50 / 0.60 | 60.00 |" in page
    for name in ("ap_vs_iteration", "assignment_diagnostics"):
        assert (tmp_path / "docs" / "results" / "ab" / f"{name}.png").is_file()
        assert f"(results/ab/{name}.png)" in page
    # --focus: the same plots for Hungarian and the named arm, first
    assert "Hungarian and influencer alone:" in page
    assert page.index("(results/ab/focus/ap_vs_iteration.png)") < page.index("(results/ab/ap_vs_iteration.png)")
    assert (tmp_path / "docs" / "results" / "ab" / "focus" / "ap_vs_iteration.png").is_file()


def test_focus_on_an_arm_the_runs_lack_names_it(tmp_path):
    ab = tmp_path / "ab"
    write_run(ab / "hungarian_seed0", "hungarian", 0, [(99, 10)], 0.5)
    with pytest.raises(SystemExit, match="nope"):
        results_page.main(["--ab", str(ab), "--focus", "nope", "--output", str(tmp_path / "r.md")])
