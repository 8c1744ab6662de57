"""The criteria of the study, from the shared core (``influencerformer``): ``hungarian`` (the
baseline), ``influencer`` (matcher-free, the default) and ``influencer_potentials`` (matcher-free
with the Influencer potentials, the previous default).

Assign one to ``model.criterion``; ``num_classes`` follows ``model.num_classes``.
Weights multiply the unweighted terms the criteria return, each summed over the decoder layers.
"""
from detectron2.config import LazyCall as L

from influencerformer.criterion import HungarianCriterion, InfluencerCriterion
from influencerformer.losses import InfluencerPotentials
from influencerformer.matching import HungarianMatcher, SinkhornAssigner

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

# Matcher-free, the default, and the core's defaults: Mask2Former's class, BCE and dice terms with
# its weights, on a soft ownership plan instead of a matching -- SinkhornAssigner(): each query's
# claim on each instance, its class (cost 1) and the matcher's mask costs (5, 5), 40 annealed
# Sinkhorn steps, on the device with no solver and no host sync -- on 12,544 points shared by all
# queries, 3/4 importance-sampled. Synthetic A/Bs (docs/results.md): segm AP 39.6 +- 0.8 over 6 runs
# against Hungarian's 40.1 +- 0.9; not faster to converge.
influencer = L(InfluencerCriterion)(
    num_classes="${..num_classes}",
    weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
)

# The same ownership without the mask costs, weighing the Influencer potentials (attraction,
# exclusion, background, repulsion) and the owner's BCE: the default until docs/loss.md section 9,
# kept to reproduce it. Synthetic A/B: 33.8 +- 0.9 over 3 seeds.
influencer_potentials = L(InfluencerCriterion)(
    num_classes="${..num_classes}",
    weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_influencer": 5.0},
    assigner=L(SinkhornAssigner)(cost_class=1.0, cost_mask=0.0, cost_dice=0.0),
    potentials=L(InfluencerPotentials)(),
)
