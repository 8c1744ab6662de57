"""The criteria of the study, from the shared core (``influencerformer``): ``hungarian`` (the
baseline), ``influencer`` (matcher-free, the default) and ``influencer_potentials`` (matcher-free
with the Influencer potentials, the previous default).

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

# What both matcher-free presets share: the Influencer ownership -- a 40-step annealed Sinkhorn
# plan (also the core's default since docs/loss.md's "merge trap"; spelled out because the runs
# measured below used it) over each query's claim on each instance and its class
# (class_ownership_weight, like the class cost of Mask2Former's matcher) -- the owner's per-point
# BCE, and 3/4 of the points shared by all queries importance-sampled where some query is
# uncertain (as Mask2Former's loss samples its points).
_ownership = dict(
    num_classes="${..num_classes}",
    weight_dict={"loss_ce": 2.0, "loss_influencer": 5.0},
    eos_coef=0.1,
    num_points=12544,
    anneal_ownership=True,
    sinkhorn_iters=40,
    class_ownership_weight=1.0,
    bce_weight=1.0,
    importance_sample_ratio=0.75,
    oversample_ratio=3.0,
)

# Matcher-free, the default: the plan also sees the matcher's mask cost (ownership_mask_cost) and
# weighs Mask2Former's per-pair losses on the owners (bce_weight, dice_weight: 5 x (BCE + dice), as
# loss_mask + loss_dice of the Hungarian criterion); the Influencer potentials are off (attraction,
# repulsion, background and exclusion weights 0), so a query the plan leaves in the dustbin keeps a
# free mask, as an unmatched one does. No matcher, no CPU solve, no host sync. Measured on the
# synthetic A/Bs (docs/results.md, docs/loss.md section 9): segm AP 39.6 +- 0.8 over 6 runs against
# Hungarian's 40.1 +- 0.9 (two A/Bs of 3 seeds: 40.2 vs 39.7, then 39.1 vs 40.5); not faster.
influencer = L(InfluencerCriterion)(
    **_ownership,
    ownership_mask_cost=5.0,
    dice_weight=1.0,
    attr_weight=0.0,
    rep_weight=0.0,
    bg_weight=0.0,
    excl_weight=0.0,
)

# The same ownership weighing the Influencer potentials (the claim as attraction, the non-owners'
# exclusion and the background at each instance's scale, the repulsion) and the owner's BCE: the
# default until docs/loss.md section 9, kept to reproduce it. Synthetic A/B: 33.8 +- 0.9 over 3
# seeds (arm influencer_importance); 17.9 +- 3.7 with the core's plain 10-step ownership.
influencer_potentials = L(InfluencerCriterion)(**_ownership)
