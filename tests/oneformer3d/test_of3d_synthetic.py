"""datasets/synthetic_s3dis.py writes what mmdetection3d's S3DIS converter writes."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from of3d_helpers import load_synthetic_s3dis

syn = load_synthetic_s3dis()

ROOMS, POINTS = 2, 4000
INFO_KEYS = {"sample_idx", "lidar_points", "instances", "pts_semantic_mask_path", "pts_instance_mask_path"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3dis_synthetic")
    written = syn.write_dataset(root, rooms_per_area=ROOMS, num_points=POINTS, seed=3)
    return root, written


def test_layout(dataset):
    root, written = dataset
    names = {p.relative_to(root).as_posix() for p in written}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert names == on_disk  # nothing else (no temporary files) is left behind
    assert {f"s3dis_infos_Area_{a}.pkl" for a in range(1, 7)} <= on_disk
    for sub in ("points", "instance_mask", "semantic_mask"):
        assert len([n for n in on_disk if n.startswith(sub + "/")]) == 6 * ROOMS
    assert len([n for n in on_disk if n.startswith("seg_info/")]) == 12


def test_infos_and_binaries(dataset):
    root, _ = dataset
    seen = set()
    for area in range(1, 7):
        with open(root / f"s3dis_infos_Area_{area}.pkl", "rb") as f:
            info = pickle.load(f)
        assert info["metainfo"] == {"categories": {"table": 0, "chair": 1, "sofa": 2, "bookcase": 3, "board": 4},
                                    "dataset": "s3dis", "info_version": "1.1"}
        assert [d["sample_idx"] for d in info["data_list"]] == list(range(ROOMS))
        for entry in info["data_list"]:
            assert set(entry) == INFO_KEYS
            stem = entry["lidar_points"]["lidar_path"]
            assert entry["lidar_points"] == {"num_pts_feats": 6, "lidar_path": stem}
            assert stem.startswith(f"Area_{area}_") and stem.endswith(".bin")
            assert entry["pts_semantic_mask_path"] == entry["pts_instance_mask_path"] == stem
            size = (root / "points" / stem).stat().st_size
            assert size % 24 == 0
            n = size // 24
            scene = syn.read_scene(root, entry)
            assert scene["points"].shape == (n, 6) and scene["instance_mask"].shape == (n,)
            assert scene["semantic_mask"].shape == (n,)
            assert 0.9 * POINTS <= n <= POINTS
            pts, inst, sem = scene["points"], scene["instance_mask"], scene["semantic_mask"]
            np.testing.assert_allclose(pts[:, :3].min(axis=0), 0.0, atol=1e-6)  # shifted like the exporter
            assert pts[:, 3:].min() >= 0 and pts[:, 3:].max() <= 255 and pts[:, 3:].std() > 5
            ids = np.unique(inst)
            assert ids.tolist() == list(range(1, len(ids) + 1))  # 1..n, every point annotated
            for i in ids:
                assert len(np.unique(sem[inst == i])) == 1
            classes = set(np.unique(sem).tolist())
            assert {0, 1, 2} <= classes  # ceiling, floor, walls in every room
            assert len(np.unique(inst[sem == 2])) == 4
            seen |= classes
            # boxes: one per furniture instance, from its points, labels 0..4
            furniture = [i for i in ids if int(sem[inst == i][0]) in syn.BOX_LABEL]
            assert len(entry["instances"]) == len(furniture)
            for box_info, i in zip(entry["instances"], furniture):
                p = pts[inst == i, :3]
                lo, hi = p.min(0), p.max(0)
                np.testing.assert_allclose(box_info["bbox_3d"], np.concatenate([(lo + hi) / 2, hi - lo]), rtol=1e-5,
                                           atol=1e-5)
                assert box_info["bbox_label_3d"] == syn.BOX_LABEL[int(sem[inst == i][0])]
    assert seen == set(range(13)), f"classes never generated: {set(range(13)) - seen}"


def test_seg_info_matches_masks(dataset):
    root, _ = dataset
    weight = np.load(root / "seg_info" / "Area_1_label_weight.npy")
    idxs = np.load(root / "seg_info" / "Area_1_resampled_scene_idxs.npy")
    assert weight.dtype == np.float32 and weight.shape == (13,)
    assert idxs.dtype == np.int32 and set(idxs.tolist()) <= set(range(ROOMS))
    # rarer classes get larger weights
    with open(root / "s3dis_infos_Area_1.pkl", "rb") as f:
        entries = pickle.load(f)["data_list"]
    counts = sum(np.bincount(syn.read_scene(root, e)["semantic_mask"], minlength=13) for e in entries)
    assert weight[np.argmax(counts)] == weight.min()


def test_no_overwrite_without_force(tmp_path):
    syn.write_dataset(tmp_path, rooms_per_area=1, num_points=500, areas=[2])
    target = tmp_path / "points" / f"Area_2_{syn.room_names(2, 1)[0]}.bin"
    before = target.read_bytes()
    os.utime(target, (1, 1))
    with pytest.raises(FileExistsError, match="--force"):
        syn.write_dataset(tmp_path, rooms_per_area=1, num_points=500, areas=[2], seed=9)
    assert target.read_bytes() == before and target.stat().st_mtime == 1
    assert syn.main(["--out-dir", str(tmp_path), "--areas", "2", "--rooms-per-area", "1",
                     "--points-per-room", "500"]) == 2
    syn.write_dataset(tmp_path, rooms_per_area=1, num_points=500, areas=[2], seed=9, force=True)
    assert target.read_bytes() != before
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_deterministic_and_seeded(tmp_path):
    a = syn.generate_room(np.random.default_rng([1, 2, 3]), num_points=800)
    b = syn.generate_room(np.random.default_rng([1, 2, 3]), num_points=800)
    c = syn.generate_room(np.random.default_rng([1, 2, 4]), num_points=800)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["points"].shape != c["points"].shape or not np.array_equal(a["points"], c["points"])
    assert a["points"].dtype == np.float32 and a["instance_mask"].dtype == np.int64
    assert a["semantic_mask"].dtype == np.int64


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="areas"):
        syn.write_dataset(tmp_path, areas=[7])
    assert syn.main(["--out-dir", str(tmp_path), "--areas", "0"]) == 2


def test_loads_through_mmdet3d_s3dis_dataset(dataset):
    """With the full mmdet3d stack, mmdet3d's own S3DISDataset and loaders read the files."""
    try:
        from mmdet3d.datasets import S3DISDataset
    except Exception as err:  # noqa: BLE001 - mmdet3d.datasets needs mmcv's compiled ops
        pytest.skip(f"mmdet3d.datasets is not importable: {err}")
    root, _ = dataset
    pipeline = [
        dict(type="LoadPointsFromFile", coord_type="DEPTH", shift_height=False, use_color=True, load_dim=6,
             use_dim=[0, 1, 2, 3, 4, 5]),
        dict(type="LoadAnnotations3D", with_bbox_3d=True, with_label_3d=True, with_mask_3d=True, with_seg_3d=True),
        dict(type="Pack3DDetInputs",
             keys=["points", "gt_bboxes_3d", "gt_labels_3d", "pts_semantic_mask", "pts_instance_mask"]),
    ]
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmdet3d"):  # mmdet3d's transforms, as in its configs
        ds = S3DISDataset(data_root=str(root), ann_file="s3dis_infos_Area_5.pkl", pipeline=pipeline,
                          data_prefix=dict(pts="points", pts_instance_mask="instance_mask",
                                           pts_semantic_mask="semantic_mask"),
                          box_type_3d="Depth", test_mode=False, filter_empty_gt=True)
        sample = ds[0]
    assert len(ds) == ROOMS
    with open(root / "s3dis_infos_Area_5.pkl", "rb") as f:
        entry = pickle.load(f)["data_list"][0]
    raw = syn.read_scene(root, entry)
    points = sample["inputs"]["points"]
    seg = sample["data_samples"].gt_pts_seg
    gt = sample["data_samples"].gt_instances_3d
    assert points.shape == (len(raw["points"]), 6)
    np.testing.assert_allclose(points.numpy(), raw["points"])
    np.testing.assert_array_equal(np.asarray(seg.pts_instance_mask), raw["instance_mask"])
    np.testing.assert_array_equal(np.asarray(seg.pts_semantic_mask), raw["semantic_mask"])
    assert len(gt.labels_3d) == len(entry["instances"]) > 0
    assert gt.labels_3d.tolist() == [int(i["bbox_label_3d"]) for i in entry["instances"]]
