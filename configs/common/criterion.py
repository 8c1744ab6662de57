"""The two criteria of the study, from the shared core (``influencerformer``).

Assign one to ``model.criterion``; ``num_classes`` follows ``model.num_classes``.
Weights multiply the unweighted terms the criteria return (their deep-supervision
copies ``<name>_<i>`` get the same weight).
"""
from detectron2.config import LazyCall as L

from influencerformer.criterion import HungarianCriterion, InfluencerCriterion
from influencerformer.matching import HungarianMatcher

# Mask2Former's baseline: Hungarian matching + CE / sigmoid-BCE / dice on sampled points
hungarian = L(HungarianCriterion)(
    num_classes="${..num_classes}",
    matcher=L(HungarianMatcher)(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points="${..num_points}"),
    weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
    eos_coef=0.1,
    num_points=12544,
    oversample_ratio=3.0,
    importance_sample_ratio=0.75,
)

# matching-free Influencer loss. The ownership is a 40-step annealed Sinkhorn plan (the core's
# default is 10 plain steps) that also sees the class (class_ownership_weight, like the class
# cost of Mask2Former's matcher), the owner's mask gets Mask2Former's per-point BCE
# (bce_weight), and 3/4 of the shared points are importance-sampled where some query is
# uncertain (importance_sample_ratio, as Mask2Former's loss samples its points). Measured on
# the synthetic A/B (docs/results.md, docs/loss.md "Networks"): segm AP 17.9 +- 3.7 with 10
# plain steps, 24.3 +- 0.8 annealed, 26.9 +- 2.2 with BCE and class evidence, higher with
# importance sampling.
influencer = L(InfluencerCriterion)(
    num_classes="${..num_classes}",
    weight_dict={"loss_ce": 2.0, "loss_influencer": 5.0},
    eos_coef=0.1,
    num_points=12544,
    anneal_ownership=True,
    sinkhorn_iters=40,
    bce_weight=1.0,
    class_ownership_weight=1.0,
    importance_sample_ratio=0.75,
    oversample_ratio=3.0,
)
