"""Dataset mapper for COCO-style instance segmentation (large-scale jitter by default)."""

import copy
import logging
from typing import Dict, List, Sequence

import numpy as np
import torch

import detectron2.data.transforms as T
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks

__all__ = ["InstanceMaskDatasetMapper", "lsj_augmentations", "resize_shortest_edge"]

logger = logging.getLogger(__name__)


def lsj_augmentations(
    image_size: int = 1024, min_scale: float = 0.1, max_scale: float = 2.0, horizontal_flip: bool = True
) -> List[T.Augmentation]:
    """Large-scale jitter: resize into a (scale x image_size) square keeping the aspect
    ratio, scale ~ U(min_scale, max_scale), then crop (or pad) to image_size x image_size,
    then a random horizontal flip."""
    augs: List[T.Augmentation] = [
        T.ResizeScale(min_scale=min_scale, max_scale=max_scale, target_height=image_size, target_width=image_size),
        # masks are padded with 0 (background), images with grey
        T.FixedSizeCrop(crop_size=(image_size, image_size), pad=True, pad_value=128.0, seg_pad_value=0),
    ]
    if horizontal_flip:
        augs.append(T.RandomFlip(horizontal=True))
    return augs


def resize_shortest_edge(short_edge: int = 800, max_size: int = 1333) -> List[T.Augmentation]:
    """The usual test-time resize."""
    return [T.ResizeShortestEdge(short_edge_length=short_edge, max_size=max_size)]


class InstanceMaskDatasetMapper:
    """Dataset dict -> model input, with ``instances.gt_masks`` as ``BitMasks``.

    Output keys: ``image`` (C, H, W) uint8 tensor in ``image_format``, ``height``/``width``
    (original size), ``file_name``, ``image_id`` and, when ``is_train``, ``instances``
    with ``gt_classes``, ``gt_masks`` (``BitMasks``) and ``gt_boxes`` recomputed from the
    transformed masks.  Crowd annotations are skipped; instances whose mask the
    augmentation emptied are dropped; an image without annotations yields empty
    ``instances`` (as detectron2's own mapper does; whether such images reach the mapper
    is decided by ``filter_empty`` of the dataset).
    """

    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[T.Augmentation] = (),
        image_format: str = "RGB",
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        logger.info(f"[InstanceMaskDatasetMapper] is_train={is_train}, augmentations: {self.augmentations}")

    def read_image(self, dataset_dict: Dict) -> np.ndarray:
        file_name = dataset_dict["file_name"]
        try:
            image = utils.read_image(file_name, format=self.image_format)
        except Exception as e:
            raise OSError(f"cannot read image {file_name!r}: {type(e).__name__}: {e}") from e
        utils.check_image_size(dataset_dict, image)
        return image

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self.read_image(dataset_dict)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]  # (h, w)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict

        annos = [
            utils.transform_instance_annotations(obj, transforms, image_shape)
            for obj in dataset_dict.pop("annotations", [])
            if obj.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(annos, image_shape, mask_format="bitmask")
        if not instances.has("gt_masks"):
            if len(instances) > 0:
                raise ValueError(f"annotations without 'segmentation' in {dataset_dict['file_name']!r}")
            instances.gt_masks = BitMasks(torch.zeros((0, *image_shape), dtype=torch.bool))
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        instances = instances[instances.gt_masks.nonempty()]
        dataset_dict["instances"] = instances
        return dataset_dict
