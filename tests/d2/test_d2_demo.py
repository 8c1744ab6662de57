"""demo/demo.py draws the instances and the query-ownership picture, and never damages its inputs."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("detectron2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402

DEMO = os.path.join(REPO_ROOT, "demo", "demo.py")
SMALL = ["model.transformer_decoder.num_queries=6", "model.transformer_decoder.dec_layers=2"]


def load_demo():
    spec = importlib.util.spec_from_file_location("influencerformer_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_demo(args, root, expect_rc=0):
    env = dict(os.environ, INFLUENCERFORMER_SYNTHETIC_ROOT=root, OMP_NUM_THREADS="1")
    cmd = [sys.executable, DEMO, "--config-file", "configs/synthetic/influencer.py"] + args
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect_rc, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def saved_model(tmp_path, root, monkeypatch):
    """A (random) model saved as a checkpoint, and the same model here to predict with."""
    from detectron2.config import LazyConfig, instantiate

    monkeypatch.setenv("INFLUENCERFORMER_SYNTHETIC_ROOT", root)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(os.path.join(REPO_ROOT, "configs/synthetic/influencer.py")),
                                     SMALL + ["train.device=cpu"])
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    return model, instantiate(cfg.dataloader.test.mapper), str(path)


def test_demo_draws_the_predicted_masks_and_the_owners(tiny_synthetic_root, tmp_path, monkeypatch):
    from PIL import Image

    demo = load_demo()
    model, mapper, checkpoint = saved_model(tmp_path, tiny_synthetic_root, monkeypatch)
    images = [os.path.join(tiny_synthetic_root, "val", f"{i:06d}.png") for i in range(2)]
    out = tmp_path / "demo"
    proc = run_demo(["--input", *images, "--output", str(out), "--checkpoint", checkpoint,
                     "--confidence-threshold", "0.0", "--owner-threshold", "0.0"] + SMALL, tiny_synthetic_root)
    assert "WARNING" not in proc.stderr
    assert sorted(os.listdir(out)) == ["000000.png", "000000_queries.png", "000001.png", "000001_queries.png"]
    for name in os.listdir(out):
        im = np.asarray(Image.open(out / name))
        assert im.shape[2] == 3 and im.shape[0] >= 64
    a = np.asarray(Image.open(out / "000000.png")).astype(int)
    b = np.asarray(Image.open(out / "000000_queries.png")).astype(int)
    assert a.shape == (512, 512, 3)  # small images are enlarged to --min-size
    assert b.shape == (512, 512 + demo.LEGEND_WIDTH, 3)  # the picture and its legend

    # the same weights here: where the demo drew the predicted masks, the pixels differ from the input
    with torch.no_grad():
        instances = model([mapper({"file_name": images[0]})])[0]["instances"]
    masks = instances.pred_masks[instances.scores >= 0.0].numpy()
    assert masks.any(), "the random model predicts no mask at all: the check below would be empty"
    region = masks.any(axis=0).repeat(8, axis=0).repeat(8, axis=1)  # 64 -> 512 pixels
    enlarged = np.asarray(Image.open(images[0])).astype(int).repeat(8, axis=0).repeat(8, axis=1)
    changed = np.abs(a - enlarged).max(axis=-1) > 8
    assert changed[region].mean() > 0.5
    # every pixel is owned at --owner-threshold 0: the ownership picture is coloured everywhere
    assert (np.abs(b[:, :512] - enlarged).max(axis=-1) > 8).mean() > 0.9
    assert (b[:, 512:] != 255).any()  # the legend has content


def test_demo_refuses_to_write_over_its_inputs(tiny_synthetic_root, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(os.path.join(tiny_synthetic_root, "val", "000000.png"), folder / "000000.png")
    before = (folder / "000000.png").read_bytes()
    proc = run_demo(["--input", str(folder), "--output", str(folder)] + SMALL, tiny_synthetic_root, expect_rc=2)
    assert "is the folder of the input" in proc.stderr
    assert os.listdir(folder) == ["000000.png"] and (folder / "000000.png").read_bytes() == before


def test_demo_warns_loudly_without_weights_and_defaults_to_the_runs_model(tiny_synthetic_root, tmp_path,
                                                                         monkeypatch):
    image = os.path.join(tiny_synthetic_root, "val", "000000.png")
    run_dir = tmp_path / "run"
    common = ["--input", image, "--output", str(tmp_path / "out")] + SMALL + [f"train.output_dir={run_dir}"]
    proc = run_demo(common, tiny_synthetic_root)
    assert "WARNING" in proc.stderr and "RANDOMLY INITIALISED" in proc.stderr
    _, _, checkpoint = saved_model(tmp_path, tiny_synthetic_root, monkeypatch)
    run_dir.mkdir()
    shutil.copy(checkpoint, run_dir / "model_final.pth")
    proc = run_demo(common, tiny_synthetic_root)
    assert "RANDOMLY" not in proc.stderr
    assert f"Weights: {run_dir}/model_final.pth (from the config's train.output_dir)" in proc.stdout + proc.stderr


def test_demo_help_names_the_checkpoint():
    proc = subprocess.run([sys.executable, DEMO, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--checkpoint" in proc.stdout and "model_final.pth" in proc.stdout


def test_output_paths_refuse_collisions(tmp_path):
    demo = load_demo()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]
    with pytest.raises(ValueError, match="both be drawn"):
        demo.output_paths(files, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="is the folder of the input"):
        demo.output_paths([str(tmp_path / "b" / "y.png"), str(tmp_path / "a" / "y_queries.png")], str(tmp_path / "a"))
    assert demo.output_paths(files[:1], str(tmp_path / "out")) == {
        files[0]: (str(tmp_path / "out" / "x.png"), str(tmp_path / "out" / "x_queries.png"))}


def test_draw_owners_colours_each_query():
    demo = load_demo()
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    owner = np.array([[-1, -1, 0, 0, 1, 1]] * 4)
    out = demo.draw_owners(image, owner, num_queries=2)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[:, 0] == 50).all()  # unowned: dimmed
    assert (out[:, 2] == 255).all()  # border between owners
    assert not np.array_equal(out[0, 3], out[0, 5])  # two queries, two colours


def test_touching_queries_never_share_a_colour():
    demo = load_demo()
    # queries 0 and 74 shared a colour with detectron2's 74-colour map; here 30 queries in stripes,
    # each touching the next, plus one query touching all of them
    owner = np.repeat(np.arange(30)[None, :], 5, axis=0).repeat(3, axis=1)
    owner[-1, :] = 74
    colours = demo.owner_colours(owner)
    assert set(colours) == set(range(30)) | {74}
    for a, b in demo.touching_owners(owner):
        assert not np.array_equal(colours[a], colours[b]), (a, b)
    few = demo.owner_colours(np.array([[0, 1], [2, 3]]))  # within the palette: all different
    assert len({tuple(c) for c in few.values()}) == 4
