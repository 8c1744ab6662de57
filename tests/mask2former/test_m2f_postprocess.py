import torch

from projects.mask2former.modeling.postprocess import instance_inference, masks_to_boxes_xyxy, resize_mask_logits


def _hand_built_case():
    # softmax(log p) == p, so class probabilities are exactly these (last column = no-object)
    probs = torch.tensor([[0.70, 0.10, 0.20], [0.20, 0.50, 0.30], [0.04, 0.06, 0.90]], dtype=torch.float64)
    mask_cls = probs.log()
    mask_pred = torch.full((3, 6, 6), -3.0, dtype=torch.float64)
    mask_pred[0, 1:3, 2:5] = 2.0  # rows 1-2, cols 2-4 -> box (2, 1, 5, 3)
    mask_pred[1, 4, 0] = 1.0  # two separate pixels -> box (0, 4, 6, 6)
    mask_pred[1, 5, 5] = 3.0
    # query 2: empty mask
    return mask_cls, mask_pred


def test_instance_inference_hand_built():
    mask_cls, mask_pred = _hand_built_case()
    out = instance_inference(mask_cls, mask_pred, num_classes=2, test_topk=100)
    # 3 queries x 2 classes = 6 candidates, ordered by class probability
    assert out["pred_classes"].tolist() == [0, 1, 0, 1, 1, 0]
    class_probs = torch.tensor([0.70, 0.50, 0.20, 0.10, 0.06, 0.04], dtype=torch.float64)
    sig = torch.sigmoid(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    q0_score, q1_score = sig[1], (sig[0] + sig[2]) / 2  # mean probability inside each binarised mask
    mask_scores = torch.stack([q0_score, q1_score, q1_score, q0_score, sig.new_zeros(()), sig.new_zeros(())])
    torch.testing.assert_close(out["scores"], class_probs * mask_scores, rtol=1e-5, atol=1e-7)
    expected_boxes = torch.tensor(
        [[2, 1, 5, 3], [0, 4, 6, 6], [0, 4, 6, 6], [2, 1, 5, 3], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32
    )
    torch.testing.assert_close(out["pred_boxes"], expected_boxes)
    assert out["pred_masks"].dtype == torch.bool and out["pred_masks"].shape == (6, 6, 6)
    assert torch.equal(out["pred_masks"][0], mask_pred[0] > 0)
    assert out["pred_masks"][0].sum() == 6 and out["pred_masks"][1].sum() == 2


def test_instance_inference_topk():
    mask_cls, mask_pred = _hand_built_case()
    out = instance_inference(mask_cls, mask_pred, num_classes=2, test_topk=2)
    assert out["pred_classes"].tolist() == [0, 1]
    assert out["pred_masks"].shape == (2, 6, 6)
    torch.testing.assert_close(out["pred_boxes"], torch.tensor([[2.0, 1, 5, 3], [0, 4, 6, 6]]))


def test_masks_to_boxes_single_pixel_and_empty():
    masks = torch.zeros(3, 4, 5, dtype=torch.bool)
    masks[0, 2, 3] = True
    masks[2] = True
    boxes = masks_to_boxes_xyxy(masks)
    torch.testing.assert_close(boxes, torch.tensor([[3.0, 2, 4, 3], [0, 0, 0, 0], [0, 0, 5, 4]]))


def test_resize_mask_logits_crops_padding():
    logits = torch.full((2, 8, 8), 1000.0)
    logits[:, :6, :5] = torch.randn(2, 6, 5)
    resized = resize_mask_logits(logits, image_size=(6, 5), output_size=(12, 10))
    assert resized.shape == (2, 12, 10)
    assert resized.abs().max() < 10  # nothing from the padded region leaks in
    expected = torch.nn.functional.interpolate(logits[None, :, :6, :5], size=(12, 10), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(resized, expected)


def test_resize_mask_logits_upsamples_to_padded_size_first():
    low_res = torch.randn(3, 4, 4)
    resized = resize_mask_logits(low_res, image_size=(14, 10), output_size=(7, 5), padded_size=(16, 16))
    padded = torch.nn.functional.interpolate(low_res[None], size=(16, 16), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.interpolate(padded[:, :, :14, :10], size=(7, 5), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(resized, expected)


def test_mask_nms_drops_lower_scored_same_class_duplicates():
    from projects.mask2former.modeling.postprocess import mask_nms
    masks = torch.zeros(5, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, :4, :3] = True  # IoU 0.75 with 0, lower score, same class -> dropped
    masks[2, :4, :3] = True  # the same mask, another class -> kept
    masks[3, 4:, 4:] = True  # elsewhere -> kept
    masks[4, :4, :4] = True  # identical to 0 but scored higher -> kept, and now 0 is the duplicate
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95])
    classes = torch.tensor([1, 1, 0, 1, 1])
    assert mask_nms(masks, scores, classes, 0.5).tolist() == [False, False, True, True, True]
    assert mask_nms(masks, scores, classes, 1.0).tolist() == [True] * 5  # IoU is never > 1
    assert mask_nms(masks[:0], scores[:0], classes[:0], 0.5).shape == (0,)
    import pytest
    with pytest.raises(ValueError, match="threshold"):
        mask_nms(masks, scores, classes, 0.0)


def test_instance_inference_with_mask_nms_keeps_one_of_two_duplicate_queries():
    mask_cls = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]]).log()  # 1 class + no-object
    mask_pred = torch.full((3, 6, 6), -3.0)
    mask_pred[0, :3, :3] = mask_pred[1, :3, :3] = 2.0  # queries 0 and 1 predict the same mask
    mask_pred[2, 3:, 3:] = 2.0
    plain = instance_inference(mask_cls, mask_pred, num_classes=1, test_topk=3)
    thinned = instance_inference(mask_cls, mask_pred, num_classes=1, test_topk=3, mask_nms_threshold=0.5)
    assert plain["scores"].shape == (3,) and thinned["scores"].shape == (2,)
    torch.testing.assert_close(thinned["scores"], plain["scores"][[0, 2]])
    assert thinned["pred_masks"].shape == (2, 6, 6) and thinned["pred_boxes"].shape == (2, 4)
