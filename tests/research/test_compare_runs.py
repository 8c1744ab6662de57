import json

import pytest

from research import compare_runs


def write_run(folder, arm, seed, ap_curve, time_per_iter):
    folder.mkdir(parents=True)
    rows = []
    for it, ap in ap_curve:
        rows.append({"iteration": it, "total_loss": 10.0 / (it + 1), "loss_ce": 1.0 / (it + 1),
                     "time": time_per_iter, "diag/owner_iou": ap / 100})
        rows.append({"iteration": it, "segm/AP": ap, "segm/AP50": ap + 10, "segm/AP75": ap - 5})
    (folder / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "run_info.json").write_text(json.dumps({"arm": arm, "seed": seed}))


def test_table_and_plots(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / f"h{seed}", "hungarian", seed, [(99, 10), (199, 30), (299, 40)], 0.5)
        write_run(tmp_path / f"i{seed}", "influencer", seed, [(99, 37), (199, 41), (299, 44)], 0.25)
    out = tmp_path / "report"
    report = compare_runs.main([str(p) for p in sorted(tmp_path.glob("[hi]*"))] + ["--output", str(out)])
    summary = report.split("\n\n")[0]  # the first table; the provenance table comes last
    rows = {line.split("|")[1].strip(): line for line in summary.splitlines() if line.startswith("| ")}
    # 90% of Hungarian's final AP (40) is 36: Hungarian reaches it at 299, Influencer at 99
    assert "(36.00)" in report.splitlines()[0]
    assert "| 299, 299 |" in rows["hungarian"] and "| 99, 99 |" in rows["influencer"]
    assert "44.00 ± 0.00" in rows["influencer"] and "0.25 ± 0.00" in rows["influencer"]
    for name in ("ap_vs_iteration", "ap_vs_wallclock", "losses", "assignment_diagnostics"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert (out / "results.md").read_text() == report
    assert "| hungarian | 0 |" in report.split("\n\n")[-1]  # provenance: one row per run


def test_arm_from_folder_name_and_errors(tmp_path):
    run_dir = tmp_path / "influencer_seed2"
    write_run(run_dir, None, None, [(9, 1.0)], 0.1)
    (run_dir / "run_info.json").unlink()
    run = compare_runs.Run(run_dir)
    assert (run.arm, run.seed) == ("influencer", 2)
    assert run.wall_clock()[9] == pytest.approx(0.9)
    with pytest.raises(SystemExit):
        compare_runs.main([str(tmp_path / "missing"), "--output", str(tmp_path / "o")])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{not json\n")
    with pytest.raises(ValueError, match="metrics.json:1"):
        compare_runs.Run(tmp_path / "bad")


def test_diagnostics_table_gives_each_arms_series_averaged_over_seeds(tmp_path):
    arms = {}
    for seed, shift in ((0, 0), (1, 10)):
        write_run(tmp_path / f"h{seed}", "hungarian", seed, [(24, 10 + shift), (49, 30 + shift)], 0.5)
        arms.setdefault("hungarian", []).append(compare_runs.Run(tmp_path / f"h{seed}"))
    table = compare_runs.diagnostics_table(arms, keys=("diag/owner_iou", "diag/queries_in_use"))
    header, _, row = table.splitlines()
    assert header == "| arm | runs | logged at iterations | owner_iou | queries_in_use | final segm AP |"
    # owner_iou = AP / 100 in write_run: (0.10 + 0.20) / 2 at 24, (0.30 + 0.40) / 2 at 49
    assert row == "| hungarian | 2 | 24 / 49 | 0.15 / 0.35 | – | 35.00 ± 7.07 |"
