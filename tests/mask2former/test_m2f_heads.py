import torch

from projects.mask2former.modeling.heads import Mask2FormerHeads, build_mask2former_heads

R50_SHAPE = {"res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}
TINY_SHAPE = {"res2": (8, 4), "res3": (16, 8), "res4": (24, 16), "res5": (32, 32)}

# published Mask2Former R50 instance segmentation: ~44.0M total, ~23.5M in the ResNet-50 backbone
EXPECTED_HEAD_PARAMS = 44.0e6 - 23.5e6


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _tiny_heads(seed=0):
    torch.manual_seed(seed)
    pixel_decoder, transformer_decoder = build_mask2former_heads(
        TINY_SHAPE,
        num_classes=3,
        num_queries=6,
        hidden_dim=32,
        conv_dim=32,
        mask_dim=16,
        nheads=4,
        enc_layers=2,
        enc_dim_feedforward=64,
        enc_num_points=2,
        dec_layers=3,
        dec_dim_feedforward=64,
    )
    return Mask2FormerHeads(pixel_decoder, transformer_decoder)


def _features(shapes, batch=2, size=64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(batch, channels, size // stride, size // stride, generator=gen)
        for name, (channels, stride) in shapes.items()
    }


def test_r50_head_parameter_count():
    pixel_decoder, transformer_decoder = build_mask2former_heads(R50_SHAPE, num_classes=80)
    total = _count(pixel_decoder) + _count(transformer_decoder)
    print(f"pixel decoder {_count(pixel_decoder)}, transformer decoder {_count(transformer_decoder)}, heads {total}")
    assert abs(total - EXPECTED_HEAD_PARAMS) <= 0.03 * EXPECTED_HEAD_PARAMS


def test_r50_forward_shapes():
    torch.manual_seed(0)
    heads = Mask2FormerHeads(*build_mask2former_heads(R50_SHAPE, num_classes=80)).eval()
    with torch.no_grad():
        out = heads(_features(R50_SHAPE, batch=1, size=64))
    assert out["pred_logits"].shape == (1, 100, 81)
    assert out["pred_masks"].shape == (1, 100, 16, 16)
    assert len(out["aux_outputs"]) == 9
    assert all(aux["pred_masks"].shape == (1, 100, 16, 16) for aux in out["aux_outputs"])


def test_backward_gives_finite_gradients_everywhere():
    heads = _tiny_heads().train()
    out = heads(_features(TINY_SHAPE))
    assert len(out["aux_outputs"]) == 3
    supervised = [out] + out["aux_outputs"]
    loss = sum(o["pred_logits"].logsumexp(-1).mean() + o["pred_masks"].sigmoid().mean() for o in supervised)
    loss.backward()
    for name, param in heads.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_deterministic_under_fixed_seed():
    features = _features(TINY_SHAPE)
    first = _tiny_heads(seed=123)(features)
    second = _tiny_heads(seed=123)(features)
    assert torch.equal(first["pred_logits"], second["pred_logits"])
    assert torch.equal(first["pred_masks"], second["pred_masks"])
    for a, b in zip(first["aux_outputs"], second["aux_outputs"]):
        assert torch.equal(a["pred_masks"], b["pred_masks"])
    other = _tiny_heads(seed=124)(features)
    assert not torch.equal(first["pred_logits"], other["pred_logits"])
