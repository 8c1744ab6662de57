"""The checks tools/train_net.py runs before a run writes anything (no detectron2 needed)."""
import json
import os

import pytest

from projects.mask2former import train_setup
from projects.mask2former.train_setup import (
    AtomicJSONWriter,
    OutputDirInUseError,
    UnknownOverrideKeyError,
    atomic_write_text,
    check_output_dir,
    check_override_keys,
    choose_cpu_threads,
    config_keys,
)

CFG = {
    "train": {"max_iter": 1000, "output_dir": "./output", "amp": {"enabled": False}, "init_checkpoint": ""},
    "dataloader": {"train": {"num_workers": 1, "dataset": {"names": ["a", "b"]}}},
}


def test_config_keys_are_dotted_and_include_parents():
    keys = config_keys(CFG)
    assert {"train", "train.max_iter", "train.amp.enabled", "dataloader.train.dataset.names.1"} <= set(keys)


def test_existing_keys_pass():
    check_override_keys(CFG, ["train.max_iter=5", "train.amp.enabled=True", "dataloader.train.num_workers=0"])


def test_mistyped_key_names_the_key_and_the_nearest_one():
    with pytest.raises(UnknownOverrideKeyError) as err:
        check_override_keys(CFG, ["train.max_iter=5", "train.max_itr=5"])
    message = str(err.value)
    assert "'train.max_itr'" in message and "did you mean 'train.max_iter'" in message


def test_key_without_a_near_match_and_explicit_add():
    with pytest.raises(UnknownOverrideKeyError, match="no similar key"):
        check_override_keys(CFG, ["zzzz.qqqq=1"])
    check_override_keys(CFG, ["+train.new_key=1"])  # hydra's explicit addition is let through
    with pytest.raises(ValueError, match="key=value"):
        check_override_keys(CFG, ["train.max_iter"])


def test_omegaconf_config_is_checked_like_a_dict():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(CFG)
    check_override_keys(cfg, ["train.max_iter=5"])
    with pytest.raises(UnknownOverrideKeyError, match="train.output_dir"):
        check_override_keys(cfg, ["train.output_dri=x"])


@pytest.mark.parametrize("existing", ["last_checkpoint", "model_0000999.pth", "metrics.json"])
def test_fresh_run_refuses_a_folder_with_another_run(tmp_path, existing):
    (tmp_path / existing).write_text("x")
    with pytest.raises(OutputDirInUseError) as err:
        check_output_dir(str(tmp_path), resume=False, overwrite=False)
    message = str(err.value)
    assert existing in message and "--resume" in message and "train.output_dir=" in message
    assert "--overwrite" in message
    assert sorted(os.listdir(tmp_path)) == [existing]  # nothing written
    for flags in (dict(resume=True, overwrite=False), dict(resume=False, overwrite=True),
                  dict(resume=False, overwrite=False, eval_only=True)):
        assert check_output_dir(str(tmp_path), **flags) == [str(tmp_path / existing)]


def test_fresh_run_into_empty_or_config_only_folder_is_allowed(tmp_path):
    assert check_output_dir(str(tmp_path / "missing"), resume=False, overwrite=False) == []
    (tmp_path / "config.yaml").write_text("x")
    (tmp_path / "log.txt").write_text("x")
    assert check_output_dir(str(tmp_path), resume=False, overwrite=False) == []


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    atomic_write_text(str(path), "old\n")
    atomic_write_text(str(path), "new\n")
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["config.yaml"]

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(train_setup.os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_text(str(path), "half")
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["config.yaml"]


def test_metrics_writer_keeps_only_lines_before_the_resumed_iteration(tmp_path):
    path = tmp_path / "metrics.json"
    lines = [json.dumps({"iteration": i, "loss": 1.0}) for i in (19, 39, 59)] + ['{"iteration": 7']  # torn
    path.write_text("\n".join(lines) + "\n")
    writer = AtomicJSONWriter(str(path), start_iter=40)
    assert [json.loads(line)["iteration"] for line in writer._lines] == [19, 39]
    assert [json.loads(line)["iteration"] for line in AtomicJSONWriter(str(path))._lines] == []


def test_cpu_threads_leave_cores_to_the_workers(monkeypatch):
    monkeypatch.delenv(train_setup.CPU_THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_cpu_threads(1, cores=2)[0] == 1
    assert choose_cpu_threads(0, cores=2)[0] == 2
    assert choose_cpu_threads(4, cores=16)[0] == 12
    assert choose_cpu_threads(2, num_processes=2, cores=16)[0] == 6
    assert choose_cpu_threads(8, cores=2)[0] == 1  # never below one
    assert choose_cpu_threads(1, cores=2, requested=3) == (3, "--cpu-threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_cpu_threads(1, cores=8) == (2, "$OMP_NUM_THREADS")
    monkeypatch.setenv(train_setup.CPU_THREADS_ENV, "5")
    assert choose_cpu_threads(1, cores=8) == (5, f"${train_setup.CPU_THREADS_ENV}")
    monkeypatch.setenv(train_setup.CPU_THREADS_ENV, "many")
    with pytest.raises(ValueError, match="many"):
        choose_cpu_threads(1, cores=8)
