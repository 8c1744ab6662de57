import pytest
import torch

from influencerformer.point_sampling import (SharedPointSampler, instance_stratified_coords, point_sample,
                                             shared_point_coords, uncertain_point_coords)


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
    coords = instance_stratified_coords(masks, 1000)
    assert coords.shape == (1000, 2) and coords.min() >= 0 and coords.max() <= 1
    inside = point_sample(masks[None].float(), coords[None])[0] > 0.5
    assert inside[1].sum() >= 40  # ~ 1000 * 0.25 / 3 drawn inside the 2x2 instance
    # no instances: all uniform
    assert instance_stratified_coords(torch.zeros(0, 8, 8), 50).shape == (50, 2)


def test_shared_points_follow_the_least_certain_query():
    torch.manual_seed(0)
    xs = (torch.arange(32.0) + 0.5) / 32
    logits = torch.full((2, 4, 32, 32), -8.0)  # silent queries are certain everywhere
    logits[0, 1] = 40.0 * (xs - 0.25)  # image 0: one query's boundary at x = 0.25
    logits[1, 3] = 40.0 * (0.75 - xs)[:, None].expand(32, 32)  # image 1: at y = 0.75
    masks = [torch.zeros(1, 64, 64, dtype=torch.bool), torch.zeros(0, 64, 64)]
    masks[0][0, 50:54, 50:54] = True  # a small instance, away from both boundaries
    coords = shared_point_coords(logits, masks, 400, instance_share=0.5, importance_sample_ratio=0.75,
                                 oversample_ratio=10.0)
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
    plain = shared_point_coords(logits, masks, 400, instance_share=0.5)
    assert ((plain[0, :, 0] - 0.25).abs() < 0.07).float().mean() < 0.3
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        shared_point_coords(logits, masks, 400, importance_sample_ratio=1.0)
    with pytest.raises(ValueError, match="1 target mask tensors for a batch of 2"):
        shared_point_coords(logits, masks[:1], 400)
    with pytest.raises(ValueError, match=r"\(B, Q, H, W\)"):
        shared_point_coords(logits[0], masks, 400)


def test_shared_sampler_equals_point_sample_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 5, 7, 9, generator=gen, dtype=torch.float64).float().requires_grad_(True)
    coords = torch.rand(2, 300, 2, generator=gen)
    # the border and beyond the outermost pixel centres, where zero padding weighs in
    coords[0, :6] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.01, 0.99], [0.5, 0.0], [1.0, 0.3], [0.95, 0.97]])
    sampler = SharedPointSampler(coords, 7, 9)
    ref = point_sample(maps, coords)
    grad_out = torch.randn(ref.shape, generator=gen)
    for _ in range(2):  # reused: the matrix is built once
        out = sampler(maps)
        assert out.shape == (2, 5, 300) and out.dtype == torch.float32
        assert torch.allclose(out, ref, atol=1e-5)
        got, = torch.autograd.grad(out, maps, grad_out)
        want, = torch.autograd.grad(ref, maps, grad_out, retain_graph=True)
        assert torch.allclose(got, want, atol=1e-5)
        # per image: the same values as (C, P) views of (P, C) memory, and the same gradient
        per_image = sampler.per_image(maps)
        assert [tuple(t.shape) for t in per_image] == [(5, 300), (5, 300)]
        assert all(t.transpose(0, 1).is_contiguous() for t in per_image)
        assert torch.allclose(torch.stack(per_image), ref, atol=1e-5)
        got, = torch.autograd.grad(per_image, maps, list(grad_out.unbind(0)))
        assert torch.allclose(got, want, atol=1e-5)


def test_shared_sampler_rejects_maps_of_another_size_and_runs_under_autocast():
    sampler = SharedPointSampler(torch.rand(1, 10, 2), 4, 4)
    with pytest.raises(ValueError, match=r"maps must be \(1, C, 4, 4\)"):
        sampler(torch.zeros(1, 3, 5, 4))
    with pytest.raises(ValueError, match="coords must be"):
        SharedPointSampler(torch.rand(10, 2), 4, 4)
    maps = torch.randn(1, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sampler(maps.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_density_weights_undo_the_oversampling_of_instances():
    torch.manual_seed(0)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :32] = True  # half the image
    masks[1, 40:44, 40:44] = True  # 16 pixels: 0.4 %
    coords, weights = instance_stratified_coords(masks, 20000, instance_share=0.5, return_weights=True)
    assert coords.shape == (20000, 2) and weights.shape == (20000,)
    cell = (coords * 64).long().clamp(max=63)  # the pixel each point falls in
    inside = masks[:, cell[:, 1], cell[:, 0]].float()  # (2, P)
    area = masks.float().mean(dim=(1, 2))
    unweighted = inside.mean(dim=1)
    weighted = (inside * weights).sum(dim=1) / weights.sum()
    assert unweighted[1] > 30 * area[1]  # the bias being undone
    assert torch.allclose(weighted, area, rtol=0.1)
    assert (weights[inside.sum(dim=0) == 0] == 1).all() and (weights[inside[1] > 0] < 0.02).all()
    # nothing drawn inside instances: all weights 1
    for m, share in ((masks, 0.0), (torch.zeros(0, 64, 64), 0.5)):
        assert (instance_stratified_coords(m, 100, share, return_weights=True)[1] == 1).all()


def test_shared_points_weigh_importance_samples_like_uniform_ones():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 16, 16)
    masks = [torch.zeros(1, 64, 64, dtype=torch.bool), torch.zeros(0, 64, 64)]
    masks[0][0, 8:12, 8:12] = True
    torch.manual_seed(1)
    coords, weights = shared_point_coords(logits, masks, 400, instance_share=0.5, importance_sample_ratio=0.75,
                                          return_weights=True)
    assert coords.shape == (2, 400, 2) and weights.shape == (2, 400)
    assert (weights[:, :300] == 1).all() and (weights[1] == 1).all()
    assert (weights[0, 300:] < 1).sum() >= 50  # the 50 drawn inside the instance, and uniform ones there
    torch.manual_seed(1)  # the weights change nothing about the points
    assert torch.equal(shared_point_coords(logits, masks, 400, instance_share=0.5, importance_sample_ratio=0.75),
                       coords)
