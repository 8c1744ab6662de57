"""COCO 2017 instance segmentation: large-scale-jitter training (1024 crop, scale
0.1-2.0, flip), shortest-edge 800 / max 1333 testing, detectron2's COCOEvaluator.

The datasets are detectron2's built-in ``coco_2017_*`` under $DETECTRON2_DATASETS
(layout in datasets/README.md).
"""
from omegaconf import OmegaConf

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader

from projects.mask2former.data import (
    InstanceMaskDatasetMapper,
    checked_dataset_dicts,
    coco_evaluator,
    lsj_augmentations,
    resize_shortest_edge,
)

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(checked_dataset_dicts)(names="coco_2017_train", filter_empty=True),
    mapper=L(InstanceMaskDatasetMapper)(
        is_train=True,
        augmentations=L(lsj_augmentations)(image_size=1024, min_scale=0.1, max_scale=2.0, horizontal_flip=True),
        image_format="RGB",
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(checked_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(InstanceMaskDatasetMapper)(
        is_train=False,
        augmentations=L(resize_shortest_edge)(short_edge=800, max_size=1333),
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(coco_evaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir=None,  # tools/train_net.py sets <train.output_dir>/inference
)
