import pytest
import torch

from projects.mask2former.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder

HIDDEN, MASK_DIM, HEADS, QUERIES, CLASSES = 32, 16, 4, 5, 3
LEVEL_SIZES = [(4, 4), (8, 8), (16, 16)]  # lowest resolution first
MASK_SIZE = (16, 16)


def _tiny_decoder(dec_layers=3, **kwargs):
    torch.manual_seed(0)
    options = dict(
        in_channels=HIDDEN,
        num_classes=CLASSES,
        hidden_dim=HIDDEN,
        num_queries=QUERIES,
        nheads=HEADS,
        dim_feedforward=64,
        dec_layers=dec_layers,
        mask_dim=MASK_DIM,
    )
    options.update(kwargs)
    return MultiScaleMaskedTransformerDecoder(**options).eval()


def _inputs(batch=2, in_channels=HIDDEN, seed=1):
    gen = torch.Generator().manual_seed(seed)
    levels = [torch.randn(batch, in_channels, h, w, generator=gen) for h, w in LEVEL_SIZES]
    mask_features = torch.randn(batch, MASK_DIM, *MASK_SIZE, generator=gen)
    return levels, mask_features


@pytest.mark.parametrize("pre_norm", [False, True])
def test_output_structure_and_shapes(pre_norm):
    decoder = _tiny_decoder(dec_layers=4, pre_norm=pre_norm)
    out = decoder(*_inputs())
    assert out["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
    assert out["pred_masks"].shape == (2, QUERIES, *MASK_SIZE)
    assert len(out["aux_outputs"]) == 4
    for aux in out["aux_outputs"]:
        assert set(aux) == {"pred_logits", "pred_masks"}
        assert aux["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
        assert aux["pred_masks"].shape == (2, QUERIES, *MASK_SIZE)
    assert torch.isfinite(out["pred_masks"]).all()


def test_input_projection_only_when_needed():
    assert all(isinstance(p, torch.nn.Identity) for p in _tiny_decoder().input_proj)
    assert all(isinstance(p, torch.nn.Conv2d) for p in _tiny_decoder(enforce_input_projection=True).input_proj)
    decoder = _tiny_decoder(in_channels=24)
    assert all(isinstance(p, torch.nn.Conv2d) for p in decoder.input_proj)
    out = decoder(*_inputs(in_channels=24))
    assert out["pred_logits"].shape == (2, QUERIES, CLASSES + 1)


def test_attention_mask_from_prediction():
    decoder = _tiny_decoder()
    queries = torch.randn(2, QUERIES, HIDDEN)
    _, mask_features = _inputs()
    class_logits, mask_logits, blocked = decoder.prediction_heads(queries, mask_features, (4, 4))
    assert class_logits.shape == (2, QUERIES, CLASSES + 1)
    assert blocked.shape == (2 * HEADS, QUERIES, 16) and blocked.dtype == torch.bool
    resized = torch.nn.functional.interpolate(mask_logits, size=(4, 4), mode="bilinear", align_corners=False)
    expected = resized.flatten(2) < 0  # sigmoid < 0.5
    expected = expected & ~expected.all(-1, keepdim=True)
    # batch-major, heads repeated: row b * HEADS + h belongs to image b
    torch.testing.assert_close(blocked.view(2, HEADS, QUERIES, 16), expected[:, None].expand(2, HEADS, QUERIES, 16))


def _left_half_mask_setup(mask_sign):
    """Every query predicts mask logit +16*mask_sign on the left half of the image, -16*mask_sign on the right."""
    decoder = _tiny_decoder(dec_layers=3)
    with torch.no_grad():
        decoder.mask_embed.layers[-1].weight.zero_()
        decoder.mask_embed.layers[-1].bias.fill_(mask_sign)
    levels, _ = _inputs(batch=1)
    field = torch.ones(*MASK_SIZE)
    field[:, MASK_SIZE[1] // 2 :] = -1.0
    mask_features = field.expand(1, MASK_DIM, *MASK_SIZE).clone()
    return decoder, levels, mask_features


def _first_layer_logits(decoder, levels, mask_features):
    # aux_outputs[1] is the prediction after the first layer, which cross-attends to level 0 (4x4)
    return decoder(levels, mask_features)["aux_outputs"][1]["pred_logits"]


def test_masked_attention_ignores_blocked_pixels():
    decoder, levels, mask_features = _left_half_mask_setup(mask_sign=1.0)
    base = _first_layer_logits(decoder, levels, mask_features)

    # level 0 is 4x4: columns 2-3 lie in the right half, which every query's mask excludes
    right_changed = [levels[0].clone(), levels[1], levels[2]]
    right_changed[0][..., 2:] += 5.0 * torch.randn_like(right_changed[0][..., 2:])
    torch.testing.assert_close(_first_layer_logits(decoder, right_changed, mask_features), base)

    left_changed = [levels[0].clone(), levels[1], levels[2]]
    left_changed[0][..., :2] += 5.0 * torch.randn_like(left_changed[0][..., :2])
    assert not torch.allclose(_first_layer_logits(decoder, left_changed, mask_features), base, atol=1e-4)


def test_masked_attention_test_detects_ignored_mask(monkeypatch):
    """Sanity check of the test above: without the mask, right-half pixels do matter."""
    decoder, levels, mask_features = _left_half_mask_setup(mask_sign=1.0)
    heads = decoder.prediction_heads

    def heads_without_mask(queries, features, size):
        class_logits, mask_logits, _ = heads(queries, features, size)
        return class_logits, mask_logits, None

    monkeypatch.setattr(decoder, "prediction_heads", heads_without_mask)
    base = _first_layer_logits(decoder, levels, mask_features)
    changed = [levels[0].clone(), levels[1], levels[2]]
    changed[0][..., 2:] += 5.0 * torch.randn_like(changed[0][..., 2:])
    assert not torch.allclose(_first_layer_logits(decoder, changed, mask_features), base, atol=1e-4)


def test_fully_masked_rows_attend_everywhere():
    decoder, levels, mask_features = _left_half_mask_setup(mask_sign=-1.0)
    with torch.no_grad():
        mask_features.fill_(1.0)  # logits = -16 everywhere: every pixel would be blocked
    base = _first_layer_logits(decoder, levels, mask_features)
    assert torch.isfinite(base).all()
    changed = [levels[0].clone(), levels[1], levels[2]]
    changed[0][..., 2:] += 5.0 * torch.randn_like(changed[0][..., 2:])
    assert not torch.allclose(_first_layer_logits(decoder, changed, mask_features), base, atol=1e-4)


def test_rejects_wrong_number_of_levels():
    decoder = _tiny_decoder()
    levels, mask_features = _inputs()
    with pytest.raises(ValueError):
        decoder(levels[:2], mask_features)


def test_one_to_many_group_trains_beside_the_one_to_one_queries_and_vanishes_at_inference():
    """H-DETR's hybrid group: in training the extra queries come back under "one_to_many" for every
    layer; they cannot change the one-to-one predictions (no attention across the groups), and in
    evaluation mode the decoder is the plain one, with the same weights and outputs."""
    plain = _tiny_decoder(dec_layers=3)
    hybrid = _tiny_decoder(dec_layers=3, num_queries_one_to_many=7)
    hybrid.load_state_dict(plain.state_dict(), strict=False)  # the group's tables are its own
    inputs = _inputs()
    hybrid.train()
    out = hybrid(*inputs)
    group = out["one_to_many"]
    assert group["pred_logits"].shape == (2, 7, CLASSES + 1) and group["pred_masks"].shape == (2, 7, *MASK_SIZE)
    assert len(group["aux_outputs"]) == 3 and out["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
    plain.train()
    reference = plain(*inputs)
    for a, b in zip([out] + out["aux_outputs"], [reference] + reference["aux_outputs"]):
        assert torch.allclose(a["pred_logits"], b["pred_logits"], atol=1e-5)
        assert torch.allclose(a["pred_masks"], b["pred_masks"], atol=1e-5)
    # the group's queries do feel the image: their predictions differ from each other
    assert (group["pred_masks"][:, 0] - group["pred_masks"][:, 1]).abs().max() > 1e-3
    hybrid.eval()
    evaluated = hybrid(*inputs)
    assert "one_to_many" not in evaluated and evaluated["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
    assert not any(k.startswith("query_feat_one_to_many") for k in plain.state_dict())
    with pytest.raises(ValueError, match="num_queries_one_to_many"):
        _tiny_decoder(num_queries_one_to_many=-1)
