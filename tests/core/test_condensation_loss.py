import pytest
import torch

from influencerformer.losses import CondensationInfluencerLoss, condensation_influencer_loss


def test_hand_computed_case():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.0, 2.0], [9.0, 9.0]])
    betas = torch.tensor([2.0, 0.0, 0.0, 1.0, -1.0])
    ids = torch.tensor([5, 5, 7, 7, 0])
    out = condensation_influencer_loss(emb, betas, ids, rep_margin=4.0)
    # influencers: point 0 (instance 5), point 3 (instance 7); attraction = mean(1/2, 4/2)
    assert out["attractive"].item() == pytest.approx((0.5 + 2.0) / 2)
    dist = (3.0 ** 2 + 2.0 ** 2) ** 0.5
    assert out["repulsive"].item() == pytest.approx(4.0 - dist, rel=1e-5)
    expected_beta = torch.nn.functional.binary_cross_entropy_with_logits(betas, (ids > 0).float())
    assert out["beta"].item() == pytest.approx(expected_beta.item())
    assert out["loss"].item() == pytest.approx(1.25 + 4.0 - dist + expected_beta.item(), rel=1e-5)


def test_permutation_invariance_and_gradients():
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(40, 3, generator=gen, requires_grad=True)
    betas = torch.randn(40, generator=gen)
    ids = torch.randint(0, 5, (40,), generator=gen)
    ref = condensation_influencer_loss(emb, betas, ids)
    perm = torch.randperm(40, generator=gen)
    out = condensation_influencer_loss(emb[perm], betas[perm], ids[perm])
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-6)
    ref["loss"].backward()
    assert torch.isfinite(emb.grad).all()
    assert CondensationInfluencerLoss()(emb, betas, ids)["loss"].item() == pytest.approx(ref["loss"].item())


def test_background_only_and_errors():
    out = condensation_influencer_loss(torch.randn(5, 2), torch.randn(5), torch.zeros(5, dtype=torch.long))
    assert torch.isfinite(out["loss"]) and out["attractive"] == 0
    with pytest.raises(ValueError, match="betas"):
        condensation_influencer_loss(torch.randn(5, 2), torch.randn(4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        condensation_influencer_loss(torch.randn(5, 2), torch.randn(5), torch.zeros(5))
