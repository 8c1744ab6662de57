"""What makes the matcher-free criterion capturable: a fixed sequence of operators per step.

Machine-independent counts (operators dispatched, host reads), not timings: the default
criterion reads nothing back to the host, dispatches as many operators for 1 decoder layer as for
10 and for 2 images as for 4, and ``torch.compile(fullgraph=True)`` traces its forward and backward
without a graph break.
"""
import pytest
import torch

from influencerformer.criterion import InfluencerCriterion
from influencerformer.targets import pad_targets
from tools.benchmark_criterion import Config, count_ops_and_syncs, leaves, make_inputs, weighted_backward

NUM_CLASSES = 80
WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}


def step_counts(layers, batch=2, queries=20, instances=5, points=600):
    cfg = Config("dense", queries, instances, points, layers, batch, 96)
    torch.manual_seed(0)
    outputs, targets = make_inputs(cfg, torch.device("cpu"))
    crit = InfluencerCriterion(NUM_CLASSES, WEIGHTS, num_points=points)
    crit._value_checks_left = 0  # the steady state: value checks run in the first calls only
    return count_ops_and_syncs(lambda: weighted_backward(crit, outputs, targets, leaves(outputs)))


def test_no_host_sync_and_a_count_independent_of_layers_and_images():
    one, ten = step_counts(layers=1), step_counts(layers=10)
    assert one["syncs"] == 0 and ten["syncs"] == 0
    # padding the targets is per image (a pad each); everything after it is batched
    assert abs(ten["ops"] - one["ops"]) <= 8
    four_images = step_counts(layers=10, batch=4)
    assert four_images["syncs"] == 0 and abs(four_images["ops"] - ten["ops"]) <= 8


def test_value_checks_are_the_only_reads_and_only_in_the_first_calls():
    cfg = Config("dense", 20, 5, 600, 2, 2, 96)
    outputs, targets = make_inputs(cfg, torch.device("cpu"))
    crit = InfluencerCriterion(NUM_CLASSES, WEIGHTS, num_points=600)
    first = count_ops_and_syncs(lambda: weighted_backward(crit, outputs, targets, leaves(outputs)))
    assert first["syncs"] > 0  # label range and mask values, read back on purpose
    crit._value_checks_left = 0
    assert count_ops_and_syncs(lambda: weighted_backward(crit, outputs, targets, leaves(outputs)))["syncs"] == 0


@pytest.mark.parametrize("form", ["dense", "point"])
def test_compiles_with_fullgraph_and_matches_eager(form):
    """torch.compile(fullgraph=True) raises at the first graph break; traced with the AOT-autograd
    backend (no code generation, so it runs in seconds) the loss and gradients equal eager ones."""
    cfg = Config(form, 12, 4, 300, 3, 2, 64)
    outputs, targets = make_inputs(cfg, torch.device("cpu"))
    crit = InfluencerCriterion(NUM_CLASSES, WEIGHTS, num_points=300)
    shapes = [tuple(m.shape) for m in outputs["pred_masks"]] if form == "point" else None
    padded = pad_targets(targets, form == "point", shapes)

    def total(padded):
        losses = crit(outputs, padded)
        return sum(crit.weight_dict[k] * v for k, v in losses.items())

    compiled = torch.compile(total, fullgraph=True, backend="aot_eager")
    params = leaves(outputs)
    torch.manual_seed(0)
    eager_value = total(padded)
    eager_grads = torch.autograd.grad(eager_value, params)
    torch.manual_seed(0)
    compiled_value = compiled(padded)
    compiled_grads = torch.autograd.grad(compiled_value, params)
    assert compiled_value.item() == pytest.approx(eager_value.item(), rel=1e-5)
    for a, b in zip(eager_grads, compiled_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("form", ["dense", "point"])
def test_a_step_builds_no_tensor_from_host_data(form, monkeypatch):
    """``torch.tensor(python_list, device="cuda")`` is a host-to-device copy: a host sync on a GPU,
    and illegal inside CUDA-graph capture. A CPU profile does not show it, so the step (padding
    the targets included) runs here with the host-data constructors disabled."""
    cfg = Config(form, 12, 4, 300, 3, 2, 64)
    outputs, targets = make_inputs(cfg, torch.device("cpu"))
    crit = InfluencerCriterion(NUM_CLASSES, WEIGHTS, num_points=300)
    crit._value_checks_left = 0

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor built from host data inside a training step")

    monkeypatch.setattr(torch, "tensor", refuse)
    monkeypatch.setattr(torch, "as_tensor", refuse)
    grads = weighted_backward(crit, outputs, targets, leaves(outputs))
    assert all(g is None or torch.isfinite(g).all() for g in grads)
