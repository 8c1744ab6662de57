"""detectron2 data pieces: the instance mapper and dataset registration (imports detectron2)."""

from .datasets import (
    check_dataset,
    checked_dataset_dicts,
    coco_evaluator,
    default_synthetic_root,
    register_synthetic_coco,
    synthetic_generator,
)
from .mapper import InstanceMaskDatasetMapper, lsj_augmentations, resize_shortest_edge

__all__ = [
    "InstanceMaskDatasetMapper",
    "check_dataset",
    "checked_dataset_dicts",
    "coco_evaluator",
    "default_synthetic_root",
    "lsj_augmentations",
    "register_synthetic_coco",
    "resize_shortest_edge",
    "synthetic_generator",
]
