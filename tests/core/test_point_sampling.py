import pytest
import torch

from influencerformer.point_sampling import (instance_stratified_coords, point_sample, shared_point_coords,
                                             uncertain_point_coords)
from influencerformer.targets import pad_targets


def test_point_sample_reads_pixel_centres():
    img = torch.arange(12.0).reshape(1, 3, 4)
    # centre of pixel (row 1, col 2) is at x = 2.5 / 4, y = 1.5 / 3
    out = point_sample(img, torch.tensor([[[2.5 / 4, 1.5 / 3]]]))
    assert out.shape == (1, 1) and out.item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="coords"):
        point_sample(img, torch.zeros(1, 3))


def test_uncertain_points_prefer_the_boundary():
    torch.manual_seed(0)
    # uncertainty -|logit| falls with the distance to the column x = 32
    logits = (torch.arange(64.0) - 32.0 + 0.5).expand(1, 64, 64) * 0.5
    coords = uncertain_point_coords(logits, 400, 3.0, 0.75)
    assert coords.shape == (1, 400, 2)
    # the 300 most uncertain of 1200 uniform candidates lie within ~8 px of the column
    dist = (coords[0, :, 0] * 64 - 32).abs()
    assert (dist[:300] < 12).all()
    assert (dist[300:] > 12).float().mean() > 0.4  # the uniform remainder is spread out
    with pytest.raises(ValueError):
        uncertain_point_coords(logits, 10, 0.5, 0.75)


def test_instance_stratified_points_reach_tiny_instances():
    torch.manual_seed(0)
    masks = torch.zeros(3, 512, 512, dtype=torch.bool)
    masks[0, :256] = True
    masks[1, 300:302, 300:302] = True  # 4 pixels out of 262k
    masks[2, 400:450, 10:60] = True
    # image 0: the three instances, padded to 8 slots; image 1: no instance
    padded = pad_targets([{"labels": torch.zeros(3, dtype=torch.long), "masks": masks},
                          {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 512, 512)}],
                         point_form=False)
    coords = instance_stratified_coords(padded.masks, padded.present, 1000)
    assert coords.shape == (2, 1000, 2) and coords.min() >= 0 and coords.max() <= 1
    inside = point_sample(masks[None].float(), coords[:1])[0] > 0.5
    assert inside[1].sum() >= 40  # ~ 1000 * 0.25 / 3 drawn inside the 2x2 instance
    # the half-image instance: its third of the share (83) plus half of the 750 uniform points
    assert 0.40 < inside[0].float().mean() < 0.52
    # padded slots draw nothing: image 1's points are uniform (about 1/2 in the top half)
    top = (coords[1, :, 1] < 0.5).float().mean()
    assert 0.4 < top < 0.6


def test_shared_points_follow_the_least_certain_query():
    torch.manual_seed(0)
    xs = (torch.arange(32.0) + 0.5) / 32
    logits = torch.full((2, 4, 32, 32), -8.0)  # silent queries are certain everywhere
    logits[0, 1] = 40.0 * (xs - 0.25)  # image 0: one query's boundary at x = 0.25
    logits[1, 3] = 40.0 * (0.75 - xs)[:, None].expand(32, 32)  # image 1: at y = 0.75
    masks = [torch.zeros(1, 64, 64, dtype=torch.bool), torch.zeros(0, 64, 64)]
    masks[0][0, 50:54, 50:54] = True  # a small instance, away from both boundaries
    padded = pad_targets([{"labels": torch.zeros(len(m), dtype=torch.long), "masks": m} for m in masks], False)
    coords = shared_point_coords(logits, padded.masks, padded.present, 400, instance_share=0.5,
                                 importance_sample_ratio=0.75, oversample_ratio=10.0)
    assert coords.shape == (2, 400, 2) and coords.min() >= 0 and coords.max() <= 1
    # the first 300 points are the most uncertain tenth of 3000 uniform candidates: a band of
    # about +-0.05 around the boundary (a few more at the image border, where point_sample's zero
    # padding halves |z|, as in Mask2Former)
    for dist in ((coords[0, :300, 0] - 0.25).abs(), (coords[1, :300, 1] - 0.75).abs()):
        assert (dist < 0.07).float().mean() > 0.97 and (dist < 0.1).all()
    # the stratified rest still reaches the instance: about half of 100 points inside it
    inside = point_sample(masks[0][None].float(), coords[:1, 300:])[0, 0] > 0.5
    assert inside.sum() >= 40
    # without importance sampling, the points are the stratified ones only
    plain = shared_point_coords(logits, padded.masks, padded.present, 400, instance_share=0.5)
    assert ((plain[0, :, 0] - 0.25).abs() < 0.07).float().mean() < 0.3
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        shared_point_coords(logits, padded.masks, padded.present, 400, importance_sample_ratio=1.0)
    with pytest.raises(ValueError, match=r"must be \(B, K, H, W\) with B = 2"):
        shared_point_coords(logits, padded.masks[:1], padded.present[:1], 400)
    with pytest.raises(ValueError, match=r"\(B, Q, H, W\)"):
        shared_point_coords(logits[0], padded.masks, padded.present, 400)


