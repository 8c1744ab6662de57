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
    hybrid = tmp_path / "hybrid"  # a further finer-grid A/B whose reference is a Hungarian variant
    write_run(hybrid / "hungarian_hybrid_seed0", "hungarian_hybrid", 0, [(49, 20), (99, 30)], 0.5)
    write_run(hybrid / "influencer_hybrid_seed0", "influencer_hybrid", 0, [(49, 28), (99, 33)], 0.5)
    bench = tmp_path / "bench.json"
    cpu = {"hungarian": {"ms": 200.0, "peak_mib": 100.0, "matcher_ms": 120.0},
           "influencer": {"ms": 100.0, "peak_mib": 50.0, "matcher_ms": None, "time_ratio_vs_hungarian": 0.5,
                          "memory_ratio_vs_hungarian": 0.5, "ops": 383, "syncs": 0}}
    config = dict(form="point", queries=400, instances=50, points=100000, layers=4, batch=2, image_size=1024)
    bench.write_text(json.dumps({"machine": {"commit": "bcd2345", "host": "vm", "cpu_count": 2, "torch_threads": 2,
                                             "torch": "2.5", "date": "2026-01-02T03:04:05", "gpu": "NVIDIA H200"},
                                 "records": [{"device": "cpu", "config": config, "results": cpu},
                                             {"device": "cuda", "config": config, "results": cpu},
                                             {"device": "cuda", "config": dict(config, queries=900),
                                              "skipped": True}]}))
    (ab / "PROVENANCE.md").write_text("a correction")
    out = tmp_path / "docs" / "results.md"
    page = results_page.main(["--ab", str(ab), "--focus", "influencer=the default", "--screen", str(screen),
                              "--fine-eval", str(ab), str(hybrid), "--criterion-benchmark", str(bench),
                              "--iteration-cost", str(cost), str(counted), str(synthetic), "--small-model", str(small),
                              "--mask-quality", str(quality), "--output", str(out)])
    assert out.read_text() == page
    ablations = (tmp_path / "docs" / "ablations.md").read_text()
    # the results page: Hungarian and the focus arm under its label, no ablation arm
    lead = page.split("## Iterations to 90%")[0]
    assert "(Hungarian (`hungarian`), the default (`influencer`))" in lead and "| slow |" not in lead
    # influencer: 44 / 40 = 110%, reaches 36 at iteration 99 vs 299 -> 0.33x
    assert "| the default | 44.00 | 110% | 99 | 0.33x |" in page
    assert ("In short: 1 of 1 arms reach Hungarian's final segm AP (influencer); 1 of 1 reach 90% of it in at "
            "most 0.7x its iterations (influencer); every other arm ends below Hungarian.") in page
    assert "[ablations.md](ablations.md)" in page and "uses the original formulation" in page
    # the ablation page: every arm, the same comparison
    assert "| influencer | 44.00 | 110% | 99 | 0.33x |" in ablations
    assert "| slow | 20.00 | 50% | never in 2 of 2 runs | – |" in ablations
    assert ("In short: 1 of 2 arms reach Hungarian's final segm AP (influencer); 1 of 2 reach 90% of it in at "
            "most 0.7x its iterations (influencer); every other arm ends below Hungarian.") in ablations
    assert "| exclusive | detach_ownership=True | 100 | 0 | abc1234 | 0.500 |" in page
    # the finer-grid A/Bs (here the same runs, and the hybrid one) get their own tables and plots
    assert "## Iterations to 90% of Hungarian's final AP, on a finer evaluation grid" in page
    assert page.count("| influencer | 44.00 | 110% | 99 | 0.33x |") == 1
    # hybrid: 33 / 30 = 110%; 90% of 30 = 27, reached at 49 vs 99 -> 0.49x
    assert f"### `{hybrid}`" in page and "Each arm against hungarian_hybrid:" in page
    assert "| influencer_hybrid | 33.00 | 110% | 49 | 0.49x |" in page
    for folder in ("ab", "hybrid"):
        assert (tmp_path / "docs" / "results" / "fine_eval" / folder / "ap_vs_iteration.png").is_file()
        assert f"(results/fine_eval/{folder}/ap_vs_iteration.png)" in page
    assert page.count(f"Corrections to this table, written by hand: `{ab / 'PROVENANCE.md'}`.") == 2
    assert ablations.count(f"Corrections to this table, written by hand: `{ab / 'PROVENANCE.md'}`.") == 1
    # the criterion alone: a row per device and criterion, the GPU named, a skipped setting said so
    assert page.index("## Criterion cost") < page.index("### The criterion alone") < page.index("### A whole")
    assert "| cpu | vm, 2 CPUs, 2 threads (torch 2.5) | bcd2345 | 2026-01-02 |" in page
    assert "| cuda | NVIDIA H200 (torch 2.5) | bcd2345 |" in page
    assert "points, 4 layers, batch 2 | influencer | 100 ms | 0.50x | 383 / 0 | 50 MiB | 0.50x |" in page
    assert "points, 4 layers, batch 2 | hungarian | 200 ms | – | – | 100 MiB | – |" in page  # older files: no counts
    assert page.count("skipped (over the memory cap)") == 1
    # share 0.25/3.85 vs 1/4.6, one per COCO measurement; none for the synthetic model's
    assert page.count("(at most half: yes)") == 2 and page.count("its share of the iteration is") == 3
    assert "| `cost.json` | cpu | ? | COCO R50 | influencer | 0.25x | 0.31x |" in page
    assert "| `cost_synthetic.json` | cpu | ? | synthetic | influencer |" in page
    assert "3 measurements, each a separate run of `tools/iteration_cost.py`" in page
    assert page.count("| not counted |") == 2 and "| 10000 |" in page
    assert page.count("it dispatches 2.50x Hungarian's operators") == 2
    assert "`python tools/iteration_cost.py` — cpu" in page  # recorded before the instruments moved
    assert "| hungarian_seed0 | medium (area <= 0.020) | 4 | 0.500 | 0.750 | 0.625 | - | - | - | 0.25 | 2.5 | - |" in page
    assert "| hungarian_seed0 | large" not in page  # no instances in that tercile
    assert "`python tools/mask_quality.py runs/h runs/i`" in page
    assert "## Early training" in ablations and "| hungarian | 1 | 24 / 49 | – | – | 0.50 / 0.60 | 60.00 |" in ablations
    for name in ("ap_vs_iteration", "assignment_diagnostics"):
        assert (tmp_path / "docs" / "results" / "ab" / f"{name}.png").is_file()
        assert f"(results/ab/{name}.png)" in ablations
        assert (tmp_path / "docs" / "results" / "ab" / "focus" / f"{name}.png").is_file()
        assert f"(results/ab/focus/{name}.png)" in page
    for text in (page, ablations):  # no process words
        assert "target" not in text.lower() and "issue" not in text.lower()


def test_mask_quality_command_recorded_with_its_path():
    assert results_page.recorded_command("research/mask_quality.py a b") == "research/mask_quality.py a b"
    assert results_page.recorded_command("mask_quality.py a b") == "tools/mask_quality.py a b"


def test_focus_on_an_arm_the_runs_lack_names_it(tmp_path):
    ab = tmp_path / "ab"
    write_run(ab / "hungarian_seed0", "hungarian", 0, [(99, 10)], 0.5)
    with pytest.raises(SystemExit, match="nope"):
        results_page.main(["--ab", str(ab), "--focus", "nope", "--output", str(tmp_path / "r.md")])


def test_gpu_report_section(tmp_path):
    """A tools/gpu_report.py report goes on the page as the tool's own tables, with its provenance note."""
    config = dict(form="dense", queries=100, instances=50, points=12544, layers=10, batch=2, image_size=1024)
    results = {"hungarian": {"ms": 50.0, "time_ratio_vs_hungarian": 1.0, "ops": 1866, "syncs": 22, "cuda_syncs": 121},
               "influencer": {"ms": 10.0, "time_ratio_vs_hungarian": 0.2, "ops": 383, "syncs": 0, "cuda_syncs": 0},
               "influencer_graph": {"ms": 8.0, "time_ratio_vs_hungarian": 0.16},
               "influencer_compiled": {"failed": "RuntimeError: no triton"}}
    iteration = {"influencer": {"total": 0.2, "criterion": 0.01, "criterion_share": 0.05, "criterion_ops": 384}}
    report = {"device": "cuda", "machine": {"date": "2026-12-04T18:35:30", "commit": "61df490", "gpu": "NVIDIA H200"},
              "parts": {"criterion": {"status": 0, "records": [{"device": "cuda", "config": config,
                                                                  "results": results}]},
                        "iteration_coco": {"status": 0, "results": iteration, "batch": 2, "size": 1024},
                        "train_hungarian": {"status": "timeout"}}}
    folder = tmp_path / "gpu"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "PROVENANCE.md").write_text("how")
    page = results_page.main(["--gpu-report", str(folder / "report.json"), "--output", str(tmp_path / "results.md")])
    assert page.index("## Criterion cost") < page.index("### On a GPU: NVIDIA H200, 2026-12-04")
    assert "#### Criterion forward + backward" in page and "#### R50 COCO training iteration (2 x 1024 px)" in page
    assert "| dense Q=100 K=50 P=12544 L=10 | influencer | 10.00 | 0.20x | 383 / 0 (0 CUDA) |" in page
    assert "| dense Q=100 K=50 P=12544 L=10 | hungarian | 50.00 | 1.00x | 1866 / 22 (121 CUDA) |" in page
    assert "influencer_compiled | failed: RuntimeError: no triton" in page
    assert "| influencer | 200.0 | 10.0 | 5.0% | 384 |" in page
    assert "- train_hungarian: timeout" in page and f"How it was run: {folder / 'PROVENANCE.md'}" in page
