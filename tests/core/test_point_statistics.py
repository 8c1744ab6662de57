"""point_statistics: the fused statistics and their hand-written backward against autograd of the plain formulas."""
import pytest
import torch
import torch.nn.functional as F

from influencerformer.losses.mask import point_statistics


def reference(logits, rows, sizes, with_sigmoid):
    stats = [rows @ F.softplus(logits).transpose(-1, -2), rows @ logits.transpose(-1, -2)]
    if with_sigmoid:
        stats.append(rows @ logits.sigmoid().transpose(-1, -2))
    return [part for stat in stats for part in stat.split(sizes, dim=-2)]


@pytest.mark.parametrize("logit_shape,row_batch", [((2, 7, 30), (2,)), ((2, 3, 7, 30), (2, 3)), ((3, 7, 30), (1,))])
@pytest.mark.parametrize("with_sigmoid", [True, False])
@pytest.mark.parametrize("read", ["all", "some"])
def test_values_and_gradients_match_autograd(logit_shape, row_batch, with_sigmoid, read):
    """Every output, or only some row groups of some statistics (the others get no gradient, as a
    detached plan reads them), with batched and broadcast rows: the same values and gradients."""
    gen = torch.Generator().manual_seed(len(logit_shape) + with_sigmoid)
    logits = (4 * torch.randn(logit_shape, generator=gen, dtype=torch.float64)).requires_grad_()
    sizes = (1, 4, 2)
    rows = torch.rand(*row_batch, sum(sizes), logit_shape[-1], generator=gen, dtype=torch.float64)
    fused = point_statistics(logits, rows, sizes, with_sigmoid)
    plain = reference(logits, rows, sizes, with_sigmoid)
    assert len(fused) == len(plain) == 3 * (3 if with_sigmoid else 2)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b)
    chosen = range(len(fused)) if read == "all" else [0, 4] + ([7] if with_sigmoid else [])
    weights = [torch.randn(fused[i].shape, generator=gen, dtype=torch.float64) for i in chosen]
    got, = torch.autograd.grad(sum((fused[i] * w).sum() for i, w in zip(chosen, weights)), logits)
    want, = torch.autograd.grad(sum((plain[i] * w).sum() for i, w in zip(chosen, weights)), logits)
    torch.testing.assert_close(got, want)


def test_statistics_read_with_a_zero_gradient_add_nothing():
    logits = torch.randn(2, 5, 8, requires_grad=True)
    stats = point_statistics(logits, torch.rand(2, 3, 8), (3,), True)
    loss = stats[0].sum() * 0 + logits.sum()  # the statistics enter with a zero gradient
    assert torch.allclose(torch.autograd.grad(loss, logits)[0], torch.ones_like(logits))


def test_row_groups_must_add_up():
    with pytest.raises(ValueError, match="row groups"):
        point_statistics(torch.randn(1, 2, 4), torch.rand(1, 3, 4), (1, 1))
