"""The synthetic shapes dataset (datasets/synthetic_coco.py, generated on first use).

128x128 images; training uses a mild scale jitter (0.8-1.25) with a 128 crop and flip.
"""

from .coco_instance_lsj import dataloader

dataloader.train.dataset.names = "synthetic_coco_train"
dataloader.train.mapper.augmentations.image_size = 128
dataloader.train.mapper.augmentations.min_scale = 0.8
dataloader.train.mapper.augmentations.max_scale = 1.25
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1

dataloader.test.dataset.names = "synthetic_coco_val"
dataloader.test.mapper.augmentations = []
dataloader.test.num_workers = 1
