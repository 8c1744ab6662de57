"""Mapper, dataset registration and their errors."""
import os

import numpy as np
import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.structures import BitMasks  # noqa: E402

from projects.mask2former.data import (  # noqa: E402
    InstanceMaskDatasetMapper,
    check_dataset,
    checked_dataset_dicts,
    lsj_augmentations,
)


def test_synthetic_registration(synthetic_registered):
    dicts = DatasetCatalog.get("synthetic_coco_train")
    assert len(dicts) == 16
    meta = MetadataCatalog.get("synthetic_coco_val")
    assert meta.thing_classes == ["ellipse", "rectangle", "triangle", "ring", "star"]
    assert meta.evaluator_type == "coco"
    assert meta.json_file.startswith(synthetic_registered)
    assert all(0 <= a["category_id"] < 5 for d in dicts for a in d["annotations"])


def test_synthetic_generated_on_first_use(tmp_path):
    from projects.mask2former.data import register_synthetic_coco, synthetic_generator

    gen = synthetic_generator()
    root = tmp_path / "fresh"
    try:
        register_synthetic_coco(str(root), gen.SyntheticCocoSpec(num_train=3, num_val=2, image_size=32))
        assert not root.exists()  # registration alone generates nothing
        assert len(DatasetCatalog.get("synthetic_coco_val")) == 2
        assert gen.is_complete(str(root))
    finally:
        register_synthetic_coco()


def test_damaged_annotation_file_names_itself_and_the_fix(tmp_path, capfd):
    from projects.mask2former.data import register_synthetic_coco, synthetic_generator

    gen = synthetic_generator()
    root = tmp_path / "damaged"
    try:
        register_synthetic_coco(str(root), gen.SyntheticCocoSpec(num_train=3, num_val=2, image_size=32))
        DatasetCatalog.get("synthetic_coco_val")  # generated here, with progress on stderr
        assert "synthetic_coco: val 2/2 images" in capfd.readouterr().err
        annotations = root / "annotations" / "instances_val.json"
        annotations.write_text(annotations.read_text()[:200])  # an interrupted copy
        with pytest.raises(gen.CorruptDatasetError) as err:
            DatasetCatalog.get("synthetic_coco_val")
        message = str(err.value)
        assert str(annotations) in message and "--force" in message and f"--root {root}" in message
    finally:
        register_synthetic_coco()


def test_lsj_mapper(synthetic_registered):
    d = DatasetCatalog.get("synthetic_coco_train")[0]
    n_ann = len(d["annotations"])
    mapper = InstanceMaskDatasetMapper(True, augmentations=lsj_augmentations(96, 0.1, 2.0), image_format="RGB")
    np.random.seed(0)
    sizes = set()
    for _ in range(6):
        out = mapper(d)
        assert out["image"].shape == (3, 96, 96) and out["image"].dtype == torch.uint8
        inst = out["instances"]
        assert isinstance(inst.gt_masks, BitMasks)
        assert inst.gt_masks.tensor.shape[1:] == (96, 96)
        assert len(inst) <= n_ann
        assert inst.gt_masks.nonempty().all()
        assert torch.allclose(inst.gt_boxes.tensor, inst.gt_masks.get_bounding_boxes().tensor)
        assert (out["height"], out["width"]) == (64, 64)
        sizes.add(int(inst.gt_masks.tensor.sum()))
    assert len(sizes) > 1  # the jitter changes the masks
    assert "annotations" not in d or len(d["annotations"]) == n_ann  # input not modified


def test_mapper_without_annotations_and_test_mode(synthetic_registered):
    d = dict(DatasetCatalog.get("synthetic_coco_val")[0])
    d["annotations"] = []
    out = InstanceMaskDatasetMapper(True, augmentations=[], image_format="RGB")(d)
    assert len(out["instances"]) == 0
    assert out["instances"].gt_masks.tensor.shape == (0, 64, 64)
    out = InstanceMaskDatasetMapper(False, augmentations=[], image_format="BGR")(DatasetCatalog.get("synthetic_coco_val")[0])
    assert "instances" not in out and "annotations" not in out
    assert out["image"].shape == (3, 64, 64)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    mapper = InstanceMaskDatasetMapper(False, augmentations=[])
    with pytest.raises(OSError, match="broken.png"):
        mapper({"file_name": str(bad)})
    with pytest.raises(OSError, match="missing.jpg"):
        mapper({"file_name": str(tmp_path / "missing.jpg")})


def test_missing_coco_folder_names_path_and_variable(tmp_path):
    # the builtin registration captured $DETECTRON2_DATASETS at import; use a fresh name
    name = "influencer_test_missing_coco"
    from detectron2.data.datasets import register_coco_instances

    json_file = str(tmp_path / "coco" / "annotations" / "instances_val2017.json")
    image_root = str(tmp_path / "coco" / "val2017")
    register_coco_instances(name, {}, json_file, image_root)
    try:
        with pytest.raises(FileNotFoundError) as info:
            checked_dataset_dicts(name)
        message = str(info.value)
        assert str(tmp_path / "coco") in message and "DETECTRON2_DATASETS" in message
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_builtin_coco_check():
    meta = MetadataCatalog.get("coco_2017_val")
    if os.path.exists(meta.image_root) and os.path.exists(meta.json_file):
        pytest.skip("COCO is installed here")
    with pytest.raises(FileNotFoundError, match="DETECTRON2_DATASETS"):
        check_dataset("coco_2017_val")


def test_unknown_dataset():
    with pytest.raises(KeyError, match="not registered"):
        check_dataset("no_such_dataset")
