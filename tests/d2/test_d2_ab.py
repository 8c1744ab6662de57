"""research/run_ab.py for real: two arms x one seed of tools/train_net.py on the tiny synthetic
dataset, then research/compare_runs.py and research/results_page.py on its folders."""
import json

import pytest

pytest.importorskip("detectron2")

from test_d2_train_net import SMALL  # noqa: E402

from research import results_page, run_ab  # noqa: E402


def test_ab_trains_both_arms_and_its_folders_feed_the_comparison(tiny_synthetic_root, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setenv("INFLUENCERFORMER_SYNTHETIC_ROOT", tiny_synthetic_root)
    out, compare = tmp_path / "ab", tmp_path / "compare"
    overrides = SMALL + ["dataloader.train.total_batch_size=2", "train.max_iter=2", "train.eval_period=0",
                         "train.checkpointer.period=100", "train.diagnostics.period=1"]
    rc = run_ab.main(["--arm", "hungarian=configs/synthetic/hungarian.py",
                      "--arm", "influencer=configs/synthetic/influencer.py", "--seeds", "0", "--threads", "1",
                      "--output", str(out), "--compare", str(compare), *overrides])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["hungarian_seed0", "influencer_seed0"]
    for arm in ("hungarian", "influencer"):
        run = out / f"{arm}_seed0"
        info = json.loads((run / "run_info.json").read_text())
        assert info["status"] == "done" and info["returncode"] == 0, (run / "train.log").read_text()[-3000:]
        assert info["arm"] == arm and info["seed"] == 0 and info["config"] == f"configs/synthetic/{arm}.py"
        assert "train.max_iter=2" in info["command"] and info["wall_s"] > 0
        assert {"model_final.pth", "metrics.json", "config.yaml", "train.log"} <= {p.name for p in run.iterdir()}
        assert info["final_segm_AP"] is not None  # the evaluation after the last iteration
    # compare_runs (through --compare) read both runs
    table = (compare / "results.md").read_text()
    assert "| hungarian | 1 |" in table and "| influencer | 1 |" in table
    assert (compare / "ap_vs_iteration.png").is_file()
    # and the results page reads the folder as an A/B
    page = results_page.main(["--ab", str(out), "--focus", "influencer=the default",
                              "--output", str(tmp_path / "docs" / "results.md")])
    assert "| Hungarian | 1 |" in page and "| the default | 1 |" in page and "Each arm against Hungarian:" in page
    assert "| influencer | 1 |" in (tmp_path / "docs" / "ablations.md").read_text()
    # a rerun skips the finished runs and leaves their records alone
    before = {p.name: (p / "run_info.json").read_text() for p in out.iterdir()}
    capsys.readouterr()
    assert run_ab.main(["--arm", "hungarian=configs/synthetic/hungarian.py",
                        "--arm", "influencer=configs/synthetic/influencer.py", "--seeds", "0",
                        "--output", str(out), *overrides]) == 0
    assert "2 done, 0 to run" in capsys.readouterr().out
    assert before == {p.name: (p / "run_info.json").read_text() for p in out.iterdir()}
