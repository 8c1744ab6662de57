"""research/run_ab.py end to end with a stand-in training script (the real one needs detectron2;
tests/d2/test_d2_ab.py runs it)."""
import json

import pytest

from research import run_ab

FAKE_TRAIN = '''
import json, os, sys
args = sys.argv[1:]
opts = dict(a.split("=", 1) for a in args if "=" in a)
out = opts["train.output_dir"]
os.makedirs(out, exist_ok=True)
if opts.get("fail") == "1":
    sys.exit(3)
with open(os.path.join(out, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\\n")
ap = 10.0 * int(opts["train.seed"]) + (5.0 if "influencer" in opts["--config-file-copy"] else 0.0)
with open(os.path.join(out, "metrics.json"), "w") as f:
    f.write(json.dumps({"iteration": 9, "total_loss": 1.0, "time": 0.1}) + "\\n")
    f.write(json.dumps({"iteration": 9, "segm/AP": ap}) + "\\n")
open(os.path.join(out, "last_checkpoint"), "w").write("model_final.pth")
'''


@pytest.fixture
def fake_train(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return script


def arms(*names):
    return [a for n in names for a in ("--arm", f"{n}=configs/synthetic/{n}.py --config-file-copy={n}")]


def calls(folder):
    return [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]


def test_runs_every_arm_and_seed_then_skips_done(tmp_path, fake_train, capsys):
    out = tmp_path / "ab"
    argv = arms("influencer", "hungarian") + ["--seeds", "0", "1", "--output", str(out), "--parallel", "2",
                                               "--train-script", str(fake_train), "train.max_iter=10"]
    assert run_ab.main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 done, 4 to run" in printed and printed.count("] ") == 4 and "[4/4]" in printed
    for arm in ("influencer", "hungarian"):
        for seed in (0, 1):
            run_dir = out / f"{arm}_seed{seed}"
            info = json.loads((run_dir / "run_info.json").read_text())
            assert (info["arm"], info["seed"], info["status"], info["returncode"]) == (arm, seed, "done", 0)
            assert info["final_segm_AP"] == 10.0 * seed + (5.0 if arm == "influencer" else 0.0)
            (args,) = calls(run_dir)
            # the arm's config and overrides, the shared overrides, then seed and folder
            assert args[:2] == ["--config-file", f"configs/synthetic/{arm}.py"]
            assert args[-3:] == ["train.max_iter=10", f"train.seed={seed}", f"train.output_dir={run_dir}"]
            assert "--resume" not in args
    # started again: nothing to do; --force reruns from scratch
    assert run_ab.main(argv) == 0
    assert "4 done, 0 to run" in capsys.readouterr().out
    assert run_ab.main(argv[:-1] + ["--force", "train.max_iter=10"]) == 0
    assert len(calls(out / "hungarian_seed1")) == 1


def test_failed_run_is_reported_and_resumed(tmp_path, fake_train, capsys):
    out = tmp_path / "ab"
    argv = ["--arm", "hungarian=configs/synthetic/hungarian.py --config-file-copy=h", "--seeds", "0",
            "--output", str(out), "--train-script", str(fake_train)]
    assert run_ab.main(argv + ["fail=1"]) == 1
    assert "FAILED (exit 3" in capsys.readouterr().out
    info = json.loads((out / "hungarian_seed0" / "run_info.json").read_text())
    assert info["status"] == "failed"
    (out / "hungarian_seed0" / "last_checkpoint").write_text("model_0000004.pth")  # as if interrupted
    assert run_ab.main(argv) == 0
    assert "(resuming)" in capsys.readouterr().out
    assert calls(out / "hungarian_seed0")[0][0] == "--resume"


@pytest.mark.parametrize("spec, message", [
    ("influencer", "expected 'NAME=CONFIG"),
    ("a_seed1=configs/synthetic/influencer.py", "may not contain"),
    ("x=configs/synthetic/influencer.py notakeyvalue", "must be key=value"),
    ("x=configs/synthetic/missing.py", "does not exist"),
])
def test_bad_arms_are_rejected(spec, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_ab.main(["--arm", spec, "--output", str(tmp_path)])
    assert message in capsys.readouterr().err


def test_duplicate_arm_names(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_ab.main(["--arm", "a=configs/synthetic/influencer.py", "--arm", "a=configs/synthetic/hungarian.py",
                     "--output", str(tmp_path)])
    assert "unique" in capsys.readouterr().err


def test_each_run_records_the_commit_it_started_at(tmp_path, fake_train, capsys, monkeypatch):
    """A run imports the working tree when it starts: a commit made while the A/B runs is the
    one the later runs record (and the runner says so)."""
    commits = iter(["aaa1111", "aaa1111", "bbb2222", "bbb2222"])
    monkeypatch.setattr(run_ab, "git_commit", lambda: next(commits))
    out = tmp_path / "ab"
    argv = arms("influencer", "hungarian") + ["--seeds", "0", "--output", str(out), "--parallel", "1",
                                               "--train-script", str(fake_train)]
    assert run_ab.main(argv) == 0
    recorded = {arm: json.loads((out / f"{arm}_seed0" / "run_info.json").read_text())["commit"]
                for arm in ("influencer", "hungarian")}
    assert recorded == {"influencer": "aaa1111", "hungarian": "bbb2222"}
    assert "the working tree is now at bbb2222; the A/B started at aaa1111" in capsys.readouterr().out
