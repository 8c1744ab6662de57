"""The synthetic dataset generator: pure numpy, runs without detectron2."""
import json
import os

import numpy as np
import pytest

from conftest import load_generator

gen = load_generator()
SPEC = gen.SyntheticCocoSpec(num_train=6, num_val=3, image_size=48, max_objects=5, seed=3)


def _sample(spec, split_index, idx):
    return gen.generate_sample(np.random.default_rng([spec.seed, split_index, idx]), spec)


def test_sample_is_deterministic():
    a_img, a_obj = _sample(SPEC, 0, 4)
    b_img, b_obj = _sample(SPEC, 0, 4)
    assert a_img.dtype == np.uint8 and a_img.shape == (48, 48, 3)
    np.testing.assert_array_equal(a_img, b_img)
    assert [c for c, _ in a_obj] == [c for c, _ in b_obj]
    for (_, ma), (_, mb) in zip(a_obj, b_obj):
        np.testing.assert_array_equal(ma, mb)
    c_img, _ = _sample(SPEC, 0, 5)
    assert not np.array_equal(a_img, c_img)


def test_visible_masks_are_disjoint_nonempty_and_large_enough():
    spec = gen.SyntheticCocoSpec(image_size=96, max_objects=8, seed=1)
    seen_categories = set()
    for idx in range(30):
        _, objects = _sample(spec, 0, idx)
        union = np.zeros((96, 96), dtype=int)
        for cat, mask in objects:
            seen_categories.add(cat)
            assert mask.dtype == bool and mask.shape == (96, 96)
            assert mask.sum() >= spec.min_visible_area
            union += mask
        assert union.max() <= 1
    assert seen_categories == {c["id"] for c in gen.CATEGORIES}


def test_occlusion_happens():
    """Some shapes are partly hidden: a visible mask is not a full (convex-ish) shape."""
    spec = gen.SyntheticCocoSpec(image_size=96, max_objects=8, seed=1)
    # count objects whose visible part is adjacent to a later object's pixels
    touching = 0
    for idx in range(20):
        _, objects = _sample(spec, 0, idx)
        for i, (_, mask) in enumerate(objects):
            grown = mask.copy()
            grown[1:] |= mask[:-1]
            grown[:-1] |= mask[1:]
            grown[:, 1:] |= mask[:, :-1]
            grown[:, :-1] |= mask[:, 1:]
            if any((grown & later).any() for _, later in objects[i + 1 :]):
                touching += 1
    assert touching > 5


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (4, 1)])
def test_rle_round_trip(shape):
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random(shape) > 0.5
        rle = gen.rle_encode(mask)
        assert rle["size"] == list(shape)
        assert sum(rle["counts"]) == mask.size
        np.testing.assert_array_equal(gen.rle_decode(rle), mask)
    full = np.ones(shape, dtype=bool)
    assert gen.rle_encode(full)["counts"][0] == 0


def test_rle_matches_pycocotools():
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    mask = rng.random((13, 9)) > 0.6
    rle = gen.rle_encode(mask)
    decoded = mask_util.decode(mask_util.frPyObjects(rle, *rle["size"]))
    np.testing.assert_array_equal(decoded.astype(bool), mask)


def test_build_split_coco_structure():
    coco = gen.build_split(SPEC, "val")
    assert [im["id"] for im in coco["images"]] == [1, 2, 3]
    assert {c["id"] for c in coco["categories"]} == {1, 2, 3, 4, 5}
    ids = [a["id"] for a in coco["annotations"]]
    assert len(ids) == len(set(ids)) and len(ids) > 0
    for ann in coco["annotations"]:
        mask = gen.rle_decode(ann["segmentation"])
        assert ann["area"] == mask.sum()
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
        assert ann["iscrowd"] == 0
    # deterministic, and train/val differ
    assert json.dumps(coco) == json.dumps(gen.build_split(SPEC, "val"))
    assert gen.build_split(SPEC, "train")["annotations"][0] != coco["annotations"][0]


def test_write_is_atomic_and_refuses_to_overwrite(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "syn"
    gen.write_dataset(str(root), SPEC)
    assert gen.is_complete(str(root))
    assert len(os.listdir(root / "train")) == SPEC.num_train
    assert len(os.listdir(root / "val")) == SPEC.num_val
    assert gen.read_spec(str(root)) == SPEC
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]  # no temporary folders left
    first = (root / "annotations" / "instances_train.json").read_bytes()

    with pytest.raises(FileExistsError, match="force"):
        gen.write_dataset(str(root), SPEC)
    assert gen.main(["--root", str(root)]) == 1

    other = gen.SyntheticCocoSpec(num_train=2, num_val=1, image_size=32, seed=9)
    gen.write_dataset(str(root), other, force=True)
    assert gen.read_spec(str(root)) == other
    assert len(os.listdir(root / "train")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]

    # regenerating the original spec reproduces the same bytes
    gen.write_dataset(str(root), SPEC, force=True)
    assert (root / "annotations" / "instances_train.json").read_bytes() == first


def test_cli_and_ensure(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "a"
    assert gen.main(["--root", str(root), "--num-train", "2", "--num-val", "1", "--image-size", "32"]) == 0
    assert gen.is_complete(str(root))
    # ensure keeps an existing complete dataset (warning when it was made differently)
    mtime = os.path.getmtime(root / "generator.json")
    with pytest.warns(UserWarning, match="--force"):
        gen.ensure_dataset(str(root), SPEC)
    assert os.path.getmtime(root / "generator.json") == mtime
    # ensure generates a missing one
    gen.ensure_dataset(str(tmp_path / "b"), SPEC)
    assert gen.is_complete(str(tmp_path / "b"))
    # an incomplete folder is an error, not silently reused or replaced
    (tmp_path / "c").mkdir()
    with pytest.raises(FileExistsError, match="not a complete"):
        gen.ensure_dataset(str(tmp_path / "c"), SPEC)


def test_colour_follows_category_with_class_hue_prob():
    import colorsys

    rng = np.random.default_rng(0)
    spec = gen.SyntheticCocoSpec(class_hue_prob=1.0)
    for k in range(len(gen.CATEGORIES)):
        for _ in range(20):
            r, g, b = gen._object_colour(rng, k, spec) / 255.0
            hue = colorsys.rgb_to_hsv(r, g, b)[0]
            centre = k / len(gen.CATEGORIES)
            assert min(abs(hue - centre), 1 - abs(hue - centre)) < 0.15


def test_generation_prints_progress_on_stderr(tmp_path, capsys):
    pytest.importorskip("PIL")
    gen.write_dataset(str(tmp_path / "d"), gen.SyntheticCocoSpec(num_train=20, num_val=3, image_size=16))
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if " train " in line][-1].startswith("synthetic_coco: train 20/20 images")
    assert sum(" train " in line for line in err) == 10  # every tenth of the split
    assert any(line.startswith("synthetic_coco: val 3/3 images") for line in err)
    gen.write_dataset(str(tmp_path / "quiet"), gen.SyntheticCocoSpec(num_train=2, num_val=1, image_size=16),
                      progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("damage", ["truncate", "not_coco"])
def test_damaged_files_raise_naming_the_file_and_the_command(tmp_path, damage):
    pytest.importorskip("PIL")
    root = str(tmp_path / "d")
    spec = gen.SyntheticCocoSpec(num_train=2, num_val=1, image_size=16)
    gen.write_dataset(root, spec, progress=False)
    gen.ensure_dataset(root, spec)  # intact: fine
    path = gen.annotation_file(root, "train")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[: len(text) // 2] if damage == "truncate" else "[1, 2]")
    with pytest.raises(gen.CorruptDatasetError) as err:
        gen.ensure_dataset(root, spec)
    message = str(err.value)
    assert path in message and f"--root {root} --force" in message
    assert "datasets/synthetic_coco.py" in message  # the checkout's command line
    with open(os.path.join(root, "generator.json"), "w") as f:
        f.write("{")
    with pytest.raises(gen.CorruptDatasetError, match="generator.json"):
        gen.read_spec(root)
