"""detectron2 meta-architecture: Mask2Former for instance segmentation with a pluggable criterion.

This is the only modeling file that imports detectron2.  It wires a detectron2
backbone to the plain-PyTorch pixel decoder and transformer decoder of this
package, hands the decoder outputs to whatever ``criterion`` it was given
(``HungarianCriterion`` or ``InfluencerCriterion`` from ``influencerformer``, or
any object with the same call convention) and turns predictions into
detectron2 ``Instances`` at inference.
"""

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage

from .postprocess import instance_inference, resize_mask_logits

__all__ = ["InstanceMask2Former", "pixel_owner"]


@META_ARCH_REGISTRY.register()
class InstanceMask2Former(nn.Module):
    """Backbone -> pixel decoder -> masked-attention transformer decoder -> criterion.

    Training (``model.train()``): returns ``{loss_name: weighted loss}`` where each
    term the criterion returns is multiplied by ``criterion.weight_dict[name]``;
    terms without a weight are not optimised (they are logged to the event
    storage as metrics when one is active).

    Inference: returns ``[{"instances": Instances}]``, one per input image, at the
    image's original size (``height``/``width`` of the input dict), with fields
    ``pred_masks`` (N, H, W) bool, ``pred_classes`` (N,), ``scores`` (N,) and
    ``pred_boxes`` (``Boxes``), N = ``test_topk_per_image``.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        pixel_decoder: nn.Module,
        transformer_decoder: nn.Module,
        criterion,
        num_classes: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        test_topk_per_image: int = 100,
        backbone_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        test_mask_nms_threshold: Optional[float] = None,
        criterion_one_to_many=None,
    ):
        """
        Args:
            backbone: a detectron2 ``Backbone`` producing ``backbone_features``.
            pixel_decoder: ``features -> (mask_features, multi_scale_features)``.
            transformer_decoder: ``(multi_scale_features, mask_features) -> outputs``
                with ``pred_logits`` (B, Q, C+1), ``pred_masks`` (B, Q, h, w), ``aux_outputs``.
            criterion: ``criterion(outputs, targets) -> {name: unweighted loss}`` with a
                ``weight_dict`` attribute. May be None for an inference-only model.
            num_classes: number of thing classes C (the logits have C + 1 columns).
            pixel_mean, pixel_std: per-channel normalisation, in the input image format.
            size_divisibility: images of a batch are zero-padded (after normalisation) to
                a common size divisible by this; <= 0 uses the backbone's.
            test_topk_per_image: instances returned per image.
            backbone_features: backbone outputs handed to the pixel decoder.
            test_mask_nms_threshold: None (Mask2Former's inference) or an IoU at which the
                test-time instances are thinned by class-aware mask NMS -- a diagnostic of how
                much AP a criterion owes to near-duplicate predictions.
            criterion_one_to_many: the criterion of the decoder's one-to-many query group
                (``transformer_decoder.num_queries_one_to_many > 0``, training only), one that gives
                each instance several queries; its weighted terms are added as ``<name>_one_to_many``.
        """
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self.criterion = criterion
        self.criterion_one_to_many = criterion_one_to_many
        self.num_classes = int(num_classes)
        group = getattr(transformer_decoder, "num_queries_one_to_many", 0)
        if bool(group) != (criterion_one_to_many is not None):
            raise ValueError(f"transformer_decoder has num_queries_one_to_many={group} but criterion_one_to_many is "
                             f"{'missing' if criterion_one_to_many is None else 'given'}: they go together")
        decoder_classes = getattr(transformer_decoder, "num_classes", self.num_classes)
        if decoder_classes != self.num_classes:
            raise ValueError(
                f"transformer_decoder predicts {decoder_classes} classes but num_classes={self.num_classes}"
            )
        for name, crit in (("criterion", criterion), ("criterion_one_to_many", criterion_one_to_many)):
            criterion_classes = getattr(crit, "num_classes", self.num_classes)
            if crit is not None and criterion_classes != self.num_classes:
                raise ValueError(f"{name} has num_classes={criterion_classes} but the model has {self.num_classes}")
        self.backbone_features = list(backbone_features)
        if size_divisibility <= 0:
            size_divisibility = backbone.size_divisibility
        self.size_divisibility = int(size_divisibility)
        self.test_topk_per_image = int(test_topk_per_image)
        if test_mask_nms_threshold is not None and not 0 < test_mask_nms_threshold <= 1:
            raise ValueError(f"test_mask_nms_threshold must be None or in (0, 1]; got {test_mask_nms_threshold}")
        self.test_mask_nms_threshold = test_mask_nms_threshold
        self.register_buffer("pixel_mean", torch.tensor(list(pixel_mean), dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(list(pixel_std), dtype=torch.float32).view(-1, 1, 1), False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ValueError(f"pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} differ in length")

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ pieces
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the ``image`` (C, H, W) tensors of a batch."""
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(images, self.size_divisibility)

    def predict(self, images: torch.Tensor) -> Dict:
        """Raw network outputs for a padded, normalised (B, 3, H, W) batch."""
        features = self.backbone(images)
        features = {name: features[name] for name in self.backbone_features}
        mask_features, multi_scale_features = self.pixel_decoder(features)
        return self.transformer_decoder(multi_scale_features, mask_features)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """GT masks zero-padded to the batch's padded size, as the criterion expects."""
        padded_h, padded_w = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            if "instances" not in x:
                raise KeyError("training inputs need an 'instances' field (use the dataset mapper with is_train=True)")
            inst = x["instances"].to(self.device)
            h, w = inst.image_size
            masks = torch.zeros((len(inst), padded_h, padded_w), dtype=torch.bool, device=self.device)
            if inst.has("gt_masks") and len(inst) > 0:
                gt = inst.gt_masks
                gt = gt.tensor if hasattr(gt, "tensor") else torch.as_tensor(gt)
                masks[:, : gt.shape[-2], : gt.shape[-1]] = gt.to(torch.bool)
            elif len(inst) > 0:
                raise ValueError(f"{len(inst)} instances without gt_masks in {x.get('file_name', 'an input')}")
            targets.append({"labels": inst.gt_classes.to(torch.int64), "masks": masks})
        return targets

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor)
        if self.training:
            if self.criterion is None:
                raise RuntimeError("this model was built without a criterion and cannot be trained")
            targets = self.prepare_targets(batched_inputs, images)
            losses = self.weigh_losses(self.criterion(outputs, targets))
            if self.criterion_one_to_many is not None:
                extra = self.weigh_losses(self.criterion_one_to_many(outputs["one_to_many"], targets),
                                          self.criterion_one_to_many)
                losses.update({f"{name}_one_to_many": value for name, value in extra.items()})
            return losses
        return self.postprocess(outputs, batched_inputs, images)

    def weigh_losses(self, losses: Dict[str, torch.Tensor], criterion=None) -> Dict[str, torch.Tensor]:
        weights = (criterion or self.criterion).weight_dict
        weighted, unweighted = {}, {}
        for name, value in losses.items():
            if name in weights:
                weighted[name] = value * weights[name]
            else:
                unweighted[name] = value
        if not weighted:
            raise KeyError(f"none of the criterion's terms {sorted(losses)} has a weight in {dict(weights)}")
        if unweighted:
            try:
                storage = get_event_storage()
            except AssertionError:  # not inside a trainer
                storage = None
            if storage is not None:
                for name, value in unweighted.items():
                    if torch.is_tensor(value) and value.numel() == 1:
                        storage.put_scalar(f"unweighted/{name}", float(value.detach()), smoothing_hint=True)
        return weighted

    def postprocess(self, outputs: Dict, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        padded_size = images.tensor.shape[-2:]
        results = []
        for i, x in enumerate(batched_inputs):
            image_size = images.image_sizes[i]
            height = int(x.get("height", image_size[0]))
            width = int(x.get("width", image_size[1]))
            mask_logits = resize_mask_logits(
                outputs["pred_masks"][i].float(), image_size, (height, width), padded_size=padded_size
            )
            found = instance_inference(
                outputs["pred_logits"][i].float(), mask_logits, self.num_classes, self.test_topk_per_image,
                self.test_mask_nms_threshold,
            )
            instances = Instances((height, width))
            instances.pred_masks = found["pred_masks"]
            instances.pred_boxes = Boxes(found["pred_boxes"])
            instances.scores = found["scores"]
            instances.pred_classes = found["pred_classes"]
            results.append({"instances": instances})
        return results

    @torch.no_grad()
    def query_ownership(self, batched_inputs: List[Dict], threshold: float = 0.5) -> List[torch.Tensor]:
        """For each image, a (height, width) long map: the query that owns each pixel, -1 if none."""
        images = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor)
        owners = []
        for i, x in enumerate(batched_inputs):
            image_size = images.image_sizes[i]
            size = (int(x.get("height", image_size[0])), int(x.get("width", image_size[1])))
            logits = resize_mask_logits(
                outputs["pred_masks"][i].float(), image_size, size, padded_size=images.tensor.shape[-2:]
            )
            owners.append(pixel_owner(outputs["pred_logits"][i].float(), logits, threshold))
        return owners


def pixel_owner(mask_cls: torch.Tensor, mask_logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Query owning each pixel: argmax over queries of P(object) * sigmoid(mask logit).

    mask_cls: (Q, C+1) logits (last = no object); mask_logits: (Q, H, W).
    Returns (H, W) long, -1 where the best score is below ``threshold``.
    """
    objectness = 1.0 - mask_cls.softmax(-1)[:, -1]  # (Q,)
    scores = objectness[:, None, None] * mask_logits.sigmoid()
    best, owner = scores.max(dim=0)
    return torch.where(best >= threshold, owner, torch.full_like(owner, -1))
