"""tools/train_net.py end to end on the CPU: train, resume, evaluate; 2 processes (gloo)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("detectron2")

from conftest import REPO_ROOT  # noqa: E402

SMALL = [
    "model.transformer_decoder.num_queries=6",
    "model.transformer_decoder.dec_layers=2",
    "model.pixel_decoder.num_encoder_layers=1",
    "model.criterion.num_points=256",
    "dataloader.train.mapper.augmentations.image_size=64",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.log_period=1",
    "train.diagnostics.num_images=2",
]
DIAG_KEYS = {"diag/unique_best_share", "diag/multi_claim_share", "diag/owner_iou", "diag/duplicate_share"}


def run(args, root, timeout=600, expect_rc=0, env_extra=None):
    env = dict(os.environ, INFLUENCERFORMER_SYNTHETIC_ROOT=root, OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py")] + args
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("criterion", ["hungarian", "influencer"])
def test_train_resume_eval(criterion, tiny_synthetic_root, tmp_path):
    out = str(tmp_path / "out")
    base = ["--config-file", f"configs/synthetic/{criterion}.py"] + SMALL + [
        f"train.output_dir={out}",
        "dataloader.train.total_batch_size=2",
        "train.checkpointer.period=2",
        "train.eval_period=0",
        "train.diagnostics.period=2",
    ]
    log = run(base + ["train.max_iter=3"], tiny_synthetic_root)
    assert "Starting training from iteration 0" in log
    assert "eta" in log.lower()
    files = set(os.listdir(out))
    assert {"model_final.pth", "model_0000001.pth", "last_checkpoint", "metrics.json", "config.yaml"} <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    iters = [m["iteration"] for m in metrics(out) if "total_loss" in m]
    assert iters[-1] == 2
    # the final evaluation (EvalHook after the last iteration)
    assert any("segm/AP" in m for m in metrics(out))
    # assignment diagnostics every 2 iterations and after the last one, in [0, 1]
    diag = {m["iteration"]: m for m in metrics(out) if DIAG_KEYS <= set(m)}
    assert sorted(diag) == [1, 2]
    assert all(0.0 <= diag[i][k] <= 1.0 for i in diag for k in DIAG_KEYS)
    assert "diag/owner_change_rate" not in diag[1] and 0.0 <= diag[2]["diag/owner_change_rate"] <= 1.0

    # a fresh run into the folder is refused before it writes anything
    before = {name: (tmp_path / "out" / name).read_bytes() for name in ("config.yaml", "metrics.json", "last_checkpoint")}
    log = run(base + ["train.max_iter=5"], tiny_synthetic_root, expect_rc=1)
    assert "already holds another run" in log and "--resume" in log and "--overwrite" in log
    assert before == {name: (tmp_path / "out" / name).read_bytes() for name in before}

    # what an interrupted run logged after its last checkpoint is dropped on resume
    with open(os.path.join(out, "metrics.json"), "a") as f:
        f.write(json.dumps({"iteration": 3, "stale": 1.0}) + "\n")
    log = run(["--resume"] + base + ["train.max_iter=5"], tiny_synthetic_root)
    assert "Starting training from iteration 3" in log
    assert "model_final.pth" in log  # resumed from it
    iters = [m["iteration"] for m in metrics(out) if "total_loss" in m]
    assert iters[-1] == 4 and 3 in iters
    assert not any("stale" in m for m in metrics(out))
    assert sorted(iters) == sorted(set(iters))  # no iteration twice

    log = run(
        ["--config-file", f"configs/synthetic/{criterion}.py", "--eval-only"]
        + SMALL
        + [f"train.output_dir={tmp_path / 'eval'}", f"train.init_checkpoint={out}/model_final.pth"],
        tiny_synthetic_root,
    )
    assert "Evaluation results for segm" in log

    # research/mask_quality.py on the trained run: a table per size tercile and its JSON
    env = dict(os.environ, INFLUENCERFORMER_SYNTHETIC_ROOT=tiny_synthetic_root, OMP_NUM_THREADS="1")
    report = tmp_path / "mask_quality.json"
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "research", "mask_quality.py"), out,
                           "--images", "4", "--json", str(report)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| out | small" in proc.stdout
    result = json.loads(report.read_text())["results"][out]
    assert result["instances"] > 0
    for size in ("small", "medium", "large"):
        if result[size] is not None:
            assert all(0.0 <= result[size][k] <= 1.0 for k in ("iou", "recall", "precision", "missed"))


def test_one_to_few_schedule_survives_resume(tiny_synthetic_root, tmp_path):
    """The queries-per-instance schedule counts training calls in a buffer the checkpoints carry: a run
    resumed from iteration 3 continues it (calls 3 -> 5), it does not restart it."""
    import torch

    out = str(tmp_path / "one_to_few")
    base = ["--config-file", "configs/synthetic/influencer_one_to_few.py"] + SMALL + [
        f"train.output_dir={out}", "dataloader.train.total_batch_size=2", "train.checkpointer.period=100",
        "train.eval_period=0", "model.criterion.queries_per_instance_iters=4"]

    def calls():
        state = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
        return int(state["criterion.training_calls"])

    run(base + ["train.max_iter=3"], tiny_synthetic_root)
    assert calls() == 3
    log = run(["--resume"] + base + ["train.max_iter=5"], tiny_synthetic_root)
    assert "Starting training from iteration 3" in log
    assert calls() == 5


def test_two_process_gloo(tiny_synthetic_root, tmp_path):
    out = str(tmp_path / "ddp")
    log = run(
        ["--config-file", "configs/synthetic/influencer.py", "--num-gpus", "2"]
        + SMALL
        + [
            f"train.output_dir={out}",
            "dataloader.train.total_batch_size=2",
            "train.max_iter=2",
            "train.checkpointer.period=100",
            "train.eval_period=0",
            "train.diagnostics.period=1",  # the criterion's all-reduce runs on every rank
        ],
        tiny_synthetic_root,
    )
    assert "Rank of current process: 0. World size: 2" in log
    # other ranks log to their own file only
    with open(os.path.join(out, "log.txt.rank1")) as f:
        assert "Rank of current process: 1. World size: 2" in f.read()
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert any("segm/AP" in m for m in metrics(out))
    assert sum(DIAG_KEYS <= set(m) for m in metrics(out)) == 2


def test_mistyped_override_fails_before_any_work(tiny_synthetic_root, tmp_path):
    out = tmp_path / "typo"
    log = run(["--config-file", "configs/synthetic/influencer.py", f"train.output_dir={out}", "train.max_itr=5"],
              tiny_synthetic_root, expect_rc=1)
    assert "'train.max_itr'" in log and "did you mean 'train.max_iter'" in log
    assert "Starting training" not in log
    assert not out.exists()


def test_overwrite_replaces_the_previous_run(tiny_synthetic_root, tmp_path):
    out = tmp_path / "old_run"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"iteration": 999, "total_loss": 1.0}) + "\n")
    (out / "last_checkpoint").write_text("model_0000999.pth")
    (out / "config.yaml").write_text("old: 1\n")
    args = ["--config-file", "configs/synthetic/influencer.py"] + SMALL + [
        f"train.output_dir={out}", "dataloader.train.total_batch_size=2", "train.max_iter=2",
        "train.checkpointer.period=100", "train.eval_period=0", "train.diagnostics.period=0"]
    run(args, tiny_synthetic_root, expect_rc=1)
    log = run(["--overwrite"] + args, tiny_synthetic_root, env_extra={"INFLUENCERFORMER_CPU_THREADS": "2"})
    assert "--overwrite: this run replaces" in log
    assert "CPU run: 2 torch thread(s) per process ($INFLUENCERFORMER_CPU_THREADS)" in log
    assert [m["iteration"] for m in metrics(out) if "total_loss" in m] == [0, 1]
    assert all(m["iteration"] <= 2 for m in metrics(out))  # the old run's line is gone
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert "old: 1" not in (out / "config.yaml").read_text()
    assert not [name for name in os.listdir(out) if ".tmp" in name]  # atomic writes leave no temp file

    # an eval-only run in a training run's folder keeps the run's config.yaml
    config = (out / "config.yaml").read_text()
    run(["--config-file", "configs/synthetic/influencer.py", "--eval-only"] + SMALL
        + [f"train.output_dir={out}", f"train.init_checkpoint={out}/model_final.pth"], tiny_synthetic_root)
    assert (out / "config.yaml").read_text() == config and (out / "config_eval.yaml").is_file()
