"""tools/demo.py writes the instance drawing and the query-ownership picture."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("detectron2")

import numpy as np  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402


def test_demo_writes_two_pngs_per_image(tiny_synthetic_root, tmp_path):
    from PIL import Image

    images = [os.path.join(tiny_synthetic_root, "val", f"{i:06d}.png") for i in range(2)]
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        os.path.join(REPO_ROOT, "tools", "demo.py"),
        "--config-file",
        "configs/synthetic/influencer.py",
        "--input",
        *images,
        "--output",
        str(out),
        "--confidence-threshold",
        "0.0",
        "model.transformer_decoder.num_queries=6",
        "model.transformer_decoder.dec_layers=2",
    ]
    env = dict(os.environ, INFLUENCERFORMER_SYNTHETIC_ROOT=tiny_synthetic_root, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(os.listdir(out)) == ["000000.png", "000000_queries.png", "000001.png", "000001_queries.png"]
    for name in os.listdir(out):
        im = np.asarray(Image.open(out / name))
        assert im.shape[2] == 3 and im.shape[0] >= 64
    a = np.asarray(Image.open(out / "000000.png"))
    b = np.asarray(Image.open(out / "000000_queries.png"))
    assert a.shape == b.shape == (512, 512, 3)  # small images are enlarged to --min-size


def test_draw_owners_colours_each_query():
    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        import demo
    finally:
        sys.path.pop(0)
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    owner = np.array([[-1, -1, 0, 0, 1, 1]] * 4)
    out = demo.draw_owners(image, owner, num_queries=2)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[:, 0] == 50).all()  # unowned: dimmed
    assert (out[:, 2] == 255).all()  # border between owners
    assert not np.array_equal(out[0, 3], out[0, 5])  # two queries, two colours
