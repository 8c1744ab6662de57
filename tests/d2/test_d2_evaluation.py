"""detectron2's COCOEvaluator on the synthetic val split."""
import os

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.evaluation import inference_on_dataset  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402
from projects.mask2former.data import InstanceMaskDatasetMapper, coco_evaluator  # noqa: E402


def test_perfect_predictions_score_100(synthetic_registered, tmp_path):
    evaluator = coco_evaluator("synthetic_coco_val", output_dir=str(tmp_path))
    evaluator.reset()
    mapper = InstanceMaskDatasetMapper(True, augmentations=[])
    for d in DatasetCatalog.get("synthetic_coco_val"):
        gt = mapper(d)["instances"]
        pred = Instances(gt.image_size)
        pred.pred_masks = gt.gt_masks.tensor
        pred.pred_boxes = Boxes(gt.gt_boxes.tensor)
        pred.scores = torch.ones(len(gt))
        pred.pred_classes = gt.gt_classes
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": pred}])
    results = evaluator.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert os.path.isfile(tmp_path / "coco_instances_results.json")


def test_model_through_evaluator(synthetic_registered, tmp_path):
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs", "synthetic", "influencer.py"))
    cfg = LazyConfig.apply_overrides(
        cfg, ["model.transformer_decoder.num_queries=5", "model.transformer_decoder.dec_layers=2", f"dataloader.evaluator.output_dir={tmp_path}"]
    )
    model = instantiate(cfg.model).eval()
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    assert set(results) == {"bbox", "segm"}
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert key in results["segm"]
