import math
from collections import namedtuple

import pytest
import torch

from projects.mask2former.modeling.pixel_decoder import MSDeformAttnPixelDecoder
from projects.mask2former.modeling.position_encoding import PositionEmbeddingSine

TINY_SHAPE = {"res2": (8, 4), "res3": (16, 8), "res4": (24, 16), "res5": (32, 32)}


def _tiny_decoder(input_shape=TINY_SHAPE):
    return MSDeformAttnPixelDecoder(
        input_shape,
        conv_dim=32,
        mask_dim=16,
        num_encoder_layers=2,
        num_heads=4,
        dim_feedforward=64,
        num_points=2,
    )


def _features(batch, height, width, shapes=TINY_SHAPE, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(batch, channels, height // stride, width // stride, generator=gen)
        for name, (channels, stride) in shapes.items()
    }


def test_position_encoding_matches_formula():
    num_feats, height, width = 6, 3, 4
    pos = PositionEmbeddingSine(num_feats, normalize=True)(torch.zeros(2, 5, height, width))
    assert pos.shape == (2, 2 * num_feats, height, width)
    for i in range(height):
        for j in range(width):
            for axis, coord in enumerate(((i + 1) / height, (j + 1) / width)):
                for k in range(num_feats):
                    phase = coord * 2 * math.pi / 10000 ** (2 * (k // 2) / num_feats)
                    expected = math.sin(phase) if k % 2 == 0 else math.cos(phase)
                    assert pos[1, axis * num_feats + k, i, j].item() == pytest.approx(expected, abs=1e-5)


def test_position_encoding_padding_mask_normalises_over_valid_region():
    encoder = PositionEmbeddingSine(4, normalize=True)
    x = torch.zeros(1, 1, 3, 5)
    padding = torch.zeros(1, 3, 5, dtype=torch.bool)
    padding[:, :, 3:] = True
    padded = encoder(x, padding)
    unpadded = encoder(torch.zeros(1, 1, 3, 3))
    torch.testing.assert_close(padded[..., :3], unpadded)


@pytest.mark.parametrize("height,width", [(64, 64), (96, 64)])
def test_output_shapes(height, width):
    torch.manual_seed(0)
    decoder = _tiny_decoder()
    mask_features, multi_scale = decoder(_features(2, height, width))
    assert mask_features.shape == (2, 16, height // 4, width // 4)
    assert [tuple(f.shape) for f in multi_scale] == [
        (2, 32, height // 32, width // 32),
        (2, 32, height // 16, width // 16),
        (2, 32, height // 8, width // 8),
    ]
    assert torch.isfinite(mask_features).all()


def test_accepts_shape_spec_like_objects():
    ShapeSpec = namedtuple("ShapeSpec", ["channels", "height", "width", "stride"])
    specs = {name: ShapeSpec(channels, None, None, stride) for name, (channels, stride) in TINY_SHAPE.items()}
    torch.manual_seed(0)
    from_specs = _tiny_decoder(specs)
    torch.manual_seed(0)
    from_tuples = _tiny_decoder()
    features = _features(1, 64, 64)
    torch.testing.assert_close(from_specs(features)[0], from_tuples(features)[0])
    assert from_specs.transformer_in_features == ["res5", "res4", "res3"]
    assert from_specs.fpn_in_features == ["res2"]


def test_encoder_mixes_levels():
    """The deformable encoder lets res5 influence the res3 output and the stride-4 mask features."""
    torch.manual_seed(0)
    decoder = _tiny_decoder().eval()
    features = _features(1, 64, 64)
    base_mask, base_levels = decoder(features)
    features["res5"] = features["res5"] + 1.0
    mask, levels = decoder(features)
    assert not torch.allclose(levels[2], base_levels[2])
    assert not torch.allclose(mask, base_mask)


def test_rejects_missing_transformer_feature():
    with pytest.raises(ValueError):
        MSDeformAttnPixelDecoder({"res2": (8, 4), "res3": (16, 8)}, conv_dim=32)
