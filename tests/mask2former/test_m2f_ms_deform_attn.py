import math

import pytest
import torch

from projects.mask2former.modeling.ms_deform_attn import MSDeformAttn, ms_deform_attn

SHAPES = [(4, 5), (2, 3)]  # (H, W) per level


def _level_layout(shapes):
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial_shapes, start, int(sizes.sum())


def _bilinear_reference(value, shapes, level_start, locations, weights):
    """Slow explicit bilinear sampling (align_corners=False, zero outside the map)."""
    batch, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = locations.shape
    out = torch.zeros(batch, num_queries, num_heads, head_dim, dtype=value.dtype)
    for b in range(batch):
        for q in range(num_queries):
            for m in range(num_heads):
                for lvl, (height, width) in enumerate(shapes):
                    grid = value[b, level_start[lvl] : level_start[lvl] + height * width, m].reshape(height, width, head_dim)
                    for p in range(num_points):
                        # continuous pixel coordinates, pixel centres at integers
                        x = locations[b, q, m, lvl, p, 0].item() * width - 0.5
                        y = locations[b, q, m, lvl, p, 1].item() * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(head_dim, dtype=value.dtype)
                        for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yi < height and 0 <= xi < width:
                                    sample += wy * wx * grid[yi, xi]
                        out[b, q, m] += weights[b, q, m, lvl, p] * sample
    return out.reshape(batch, num_queries, num_heads * head_dim)


def _random_inputs(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start, total = _level_layout(SHAPES)
    batch, num_queries, num_heads, head_dim, num_points = 2, 3, 2, 4, 3
    value = torch.randn(batch, total, num_heads, head_dim, generator=gen, dtype=dtype)
    # include locations slightly outside [0, 1] to exercise zero padding
    locations = torch.rand(batch, num_queries, num_heads, len(SHAPES), num_points, 2, generator=gen, dtype=dtype) * 1.2 - 0.1
    weights = torch.rand(batch, num_queries, num_heads, len(SHAPES), num_points, generator=gen, dtype=dtype)
    return value, spatial_shapes, level_start, locations, weights


def test_matches_explicit_bilinear_reference():
    value, spatial_shapes, level_start, locations, weights = _random_inputs(torch.float64)
    fast = ms_deform_attn(value, spatial_shapes, level_start, locations, weights)
    slow = _bilinear_reference(value, SHAPES, level_start.tolist(), locations, weights)
    assert fast.shape == (2, 3, 8)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)


def test_gradcheck_float64():
    value, spatial_shapes, level_start, locations, weights = _random_inputs(torch.float64, seed=1)
    # keep locations strictly inside to stay away from the kinks at the border
    locations = locations.clamp(0.05, 0.95)
    inputs = (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn(v, spatial_shapes, level_start, loc, w), inputs, eps=1e-6, atol=1e-5
    )


def test_module_forward_backward_finite():
    torch.manual_seed(0)
    module = MSDeformAttn(embed_dim=16, num_heads=4, num_levels=2, num_points=3)
    torch.nn.init.normal_(module.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(module.attention_weights.weight, std=0.1)
    spatial_shapes, level_start, total = _level_layout(SHAPES)
    tokens = torch.randn(2, total, 16, requires_grad=True)
    reference = torch.rand(2, total, 2, 2)
    out = module(tokens, reference, tokens, spatial_shapes, level_start)
    assert out.shape == (2, total, 16)
    out.square().sum().backward()
    assert torch.isfinite(tokens.grad).all()
    for name, param in module.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_module_padding_mask_zeroes_padded_values():
    torch.manual_seed(0)
    module = MSDeformAttn(embed_dim=16, num_heads=4, num_levels=2, num_points=3)
    spatial_shapes, level_start, total = _level_layout(SHAPES)
    tokens = torch.randn(1, total, 16)
    query = torch.randn(1, 5, 16)
    reference = torch.rand(1, 5, 2, 2)
    padding = torch.zeros(1, total, dtype=torch.bool)
    padding[0, 3] = True
    base = module(query, reference, tokens, spatial_shapes, level_start, padding)
    changed = tokens.clone()
    changed[0, 3] += 100.0
    torch.testing.assert_close(module(query, reference, changed, spatial_shapes, level_start, padding), base)


@pytest.mark.parametrize("num_heads,num_points", [(8, 4), (6, 2)])
def test_init_offsets_on_ring_and_uniform_weights(num_heads, num_points):
    module = MSDeformAttn(embed_dim=48, num_heads=num_heads, num_levels=3, num_points=num_points)
    assert torch.all(module.sampling_offsets.weight == 0)
    assert torch.all(module.attention_weights.weight == 0) and torch.all(module.attention_weights.bias == 0)
    bias = module.sampling_offsets.bias.view(num_heads, 3, num_points, 2)
    # same pattern on every level; point p lies at (p + 1) x a unit (max-norm 1) direction
    torch.testing.assert_close(bias, bias[:, :1].expand_as(bias))
    unit = bias[:, 0, 0]
    torch.testing.assert_close(unit.abs().amax(-1), torch.ones(num_heads))
    for p in range(num_points):
        torch.testing.assert_close(bias[:, 0, p], unit * (p + 1))
    # head h points in direction 2*pi*h/M
    angles = torch.arange(num_heads) * (2 * math.pi / num_heads)
    expected_direction = torch.stack([angles.cos(), angles.sin()], dim=-1)
    torch.testing.assert_close(unit / unit.norm(dim=-1, keepdim=True), expected_direction, atol=1e-6, rtol=0)
