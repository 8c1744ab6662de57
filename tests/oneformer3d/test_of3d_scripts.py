"""tools/oneformer3d_{train,test}.sh: argument handling and the commands they would run
(DRY_RUN=1 against a stand-in checkout; no training happens here)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from of3d_helpers import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
TRAIN = str(REPO_ROOT / "tools" / "oneformer3d_train.sh")
TEST = str(REPO_ROOT / "tools" / "oneformer3d_test.sh")


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "oneformer3d-checkout"
    for rel in ("tools/train.py", "tools/test.py", "tools/fix_spconv_checkpoint.py", "oneformer3d/__init__.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    return root


def run(script, *args, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("ONEFORMER3D_ROOT", "GPUS", "WORK_DIR", "RESUME")}
    full.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", script, *args], capture_output=True, text=True, env=full, timeout=60)


def test_missing_root_is_explained():
    res = run(TRAIN, "s3dis", "influencer")
    assert res.returncode == 2
    assert "ONEFORMER3D_ROOT is not set" in res.stderr


def test_not_a_checkout_is_explained(tmp_path):
    res = run(TRAIN, "s3dis", "influencer", ONEFORMER3D_ROOT=tmp_path)
    assert res.returncode == 2 and "tools/train.py" in res.stderr


@pytest.mark.parametrize("args", [("kitti", "baseline"), ("s3dis", "hungarian"), ("s3dis",)])
def test_bad_arguments(checkout, args):
    res = run(TRAIN, *args, ONEFORMER3D_ROOT=checkout, DRY_RUN=1)
    assert res.returncode == 2 and "error:" in res.stderr


def test_single_gpu_train_command(checkout, tmp_path):
    res = run(TRAIN, "s3dis", "influencer", "--cfg-options", "train_dataloader.batch_size=1",
              ONEFORMER3D_ROOT=checkout, DRY_RUN=1, WORK_DIR=tmp_path / "wd")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"cd {checkout}"
    assert lines[1] == f"PYTHONPATH={checkout}:{REPO_ROOT}" or lines[1].startswith(f"PYTHONPATH={checkout}:{REPO_ROOT}:")
    cmd = lines[2].split()
    assert cmd[1:3] == ["tools/train.py", str(REPO_ROOT / "configs/s3dis/influencer_oneformer3d_s3dis-area-5.py")]
    assert cmd[3:5] == ["--work-dir", str(tmp_path / "wd")]
    assert "--resume" not in cmd and "--launcher" not in cmd
    assert cmd[-2:] == ["--cfg-options", "train_dataloader.batch_size=1"]


def test_multi_gpu_uses_the_distributed_launcher(checkout):
    res = run(TRAIN, "scannet", "baseline", ONEFORMER3D_ROOT=checkout, DRY_RUN=1, GPUS=4, PORT=29555)
    assert res.returncode == 0, res.stderr
    cmd = res.stdout.splitlines()[2].split()
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node=4", "--master_port=29555"]
    assert cmd[5:8] == ["tools/train.py", "--launcher", "pytorch"]
    assert cmd[8].endswith("configs/scannet/baseline_oneformer3d_scannet.py")


def test_resume_only_when_a_checkpoint_exists(checkout, tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "last_checkpoint").write_text(str(wd / "epoch_16.pth"))
    res = run(TRAIN, "s3dis", "baseline", ONEFORMER3D_ROOT=checkout, DRY_RUN=1, WORK_DIR=wd)
    assert "--resume" in res.stdout.split() and "resuming from" in res.stderr
    res = run(TRAIN, "s3dis", "baseline", ONEFORMER3D_ROOT=checkout, DRY_RUN=1, WORK_DIR=wd, RESUME=0)
    assert "--resume" not in res.stdout.split()


def test_eval_command_with_spconv_fix(checkout, tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    ckpt = wd / "epoch_512.pth"
    ckpt.write_text("")
    (wd / "last_checkpoint").write_text(str(ckpt))
    res = run(TEST, "s3dis", "influencer", "last", ONEFORMER3D_ROOT=checkout, DRY_RUN=1, WORK_DIR=wd, FIX_SPCONV=1)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    fixed = str(wd / "epoch_512.spconv-fixed.pth")
    assert lines[0].split()[1:] == ["tools/fix_spconv_checkpoint.py", "--in-path", str(ckpt), "--out-path", fixed]
    cmd = lines[-1].split()
    assert cmd[1] == "tools/test.py" and cmd[3] == fixed and cmd[4:6] == ["--work-dir", str(wd / "test")]


def test_eval_needs_an_existing_checkpoint(checkout, tmp_path):
    res = run(TEST, "s3dis", "baseline", str(tmp_path / "missing.pth"), ONEFORMER3D_ROOT=checkout)
    assert res.returncode == 2 and "checkpoint not found" in res.stderr
