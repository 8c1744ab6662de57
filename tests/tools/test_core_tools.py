import json

from tools import benchmark_criterion


def test_benchmark_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    benchmark_criterion.main(["--form", "point", "--queries", "12", "--instances", "3", "--points", "400",
                              "--layers", "2", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    benchmark_criterion.main(["--queries", "8", "--instances", "2", "--points", "256", "--layers", "1",
                              "--image-size", "64", "--repeats", "1", "--warmup", "0"])
    printed = capsys.readouterr().out
    assert printed.count("Q=12") == 3 and printed.count("Q=8 ") == 3  # a row per criterion
    data = json.loads(out.read_text())
    assert {"date", "commit", "torch", "cpu_count"} <= set(data["machine"])
    (record,) = data["records"]
    assert record["config"]["form"] == "point" and record["config"]["layers"] == 2
    res = record["results"]
    assert set(res) == {"hungarian", "influencer", "influencer_original"}
    assert res["hungarian"]["matcher_ms"] > 0 and res["hungarian"]["matcher_ms"] <= res["hungarian"]["ms"]
    ratio = res["influencer"]["time_ratio_vs_hungarian"]
    assert abs(ratio - res["influencer"]["ms"] / res["hungarian"]["ms"]) < 1e-9
    # the matcher-free criteria read nothing back to the host
    assert res["influencer"]["syncs"] == 0 and res["influencer_original"]["syncs"] == 0
    assert res["influencer"]["ops"] > 50


def test_host_sync_count_sees_a_read_back():
    import torch
    a = torch.arange(4.0)
    assert benchmark_criterion.count_ops_and_syncs(lambda: a.sum().item())["syncs"] == 1
    assert benchmark_criterion.count_ops_and_syncs(lambda: a.nonzero())["syncs"] == 1
    assert benchmark_criterion.count_ops_and_syncs(lambda: a * 2)["syncs"] == 0


def test_benchmark_skips_configurations_over_the_memory_cap(capsys):
    records = benchmark_criterion.main(["--form", "point", "--queries", "900", "--points", "200000",
                                        "--layers", "10", "--max-gb", "1"])
    assert records[0]["skipped"] and "skipped" in capsys.readouterr().out


def test_dispatched_op_count_sees_each_operator_once():
    import torch

    from tools.iteration_cost import count_dispatched_ops
    a, b = torch.ones(4), torch.ones(4)
    one = count_dispatched_ops(lambda: a + b)
    assert one >= 1
    assert count_dispatched_ops(lambda: (a + b) * b) == one + 1
    # a composite operator counts the operators it calls, not itself
    assert count_dispatched_ops(lambda: torch.logsumexp(a[None], dim=1)) > 1
    # views and allocations launch nothing
    assert count_dispatched_ops(lambda: a[None].transpose(0, 1).reshape(2, 2)[0]) == 0
    assert count_dispatched_ops(lambda: torch.empty(3).detach()) == 0


def test_gpu_report_runs_end_to_end_and_never_overwrites(tmp_path, capsys):
    """--quick on the CPU: the criterion parts run (eager, then compiled), the detectron2 parts run
    or say why not, and both files are written; a second run into the same folder refuses."""
    import pytest

    from tools import gpu_report
    report = gpu_report.main(["--out", str(tmp_path), "--quick", "--device", "cpu", "--train-iters", "2"])
    criterion, compiled = report["parts"]["criterion"], report["parts"]["criterion_compiled"]
    assert criterion["status"] == 0, criterion["output_tail"]
    assert compiled["status"] == 0, compiled["output_tail"]
    (record,) = criterion["records"]
    assert set(record["results"]) == {"hungarian", "influencer", "influencer_original"}
    assert record["results"]["influencer"]["syncs"] == 0
    (record,) = compiled["records"]
    assert "ms" in record["results"]["influencer_compiled"]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["parts"]["criterion"]["records"] == criterion["records"]
    text = (tmp_path / "report.md").read_text()
    assert "| influencer_compiled |" in text and "commit" in text
    with pytest.raises(SystemExit):
        gpu_report.main(["--out", str(tmp_path), "--quick", "--device", "cpu"])
    assert "exists" in capsys.readouterr().err


def test_gpu_report_starts_no_part_past_its_budget(tmp_path):
    from tools import gpu_report
    report = gpu_report.main(["--out", str(tmp_path), "--quick", "--device", "cpu", "--budget-s", "0"])
    assert report["parts"] and all(str(part["status"]).startswith("skipped") for part in report["parts"].values())
    assert json.loads((tmp_path / "report.json").read_text())["parts"].keys() == report["parts"].keys()
