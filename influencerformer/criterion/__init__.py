"""Set criteria with one call convention: the Influencer criterion and the Hungarian baseline."""
from influencerformer.criterion.base import SetCriterionBase, assignment_cross_entropy, mask_iou
from influencerformer.criterion.hungarian import HungarianCriterion
from influencerformer.criterion.influencer import InfluencerCriterion, hard_owners, query_objectness

__all__ = ["SetCriterionBase", "HungarianCriterion", "InfluencerCriterion", "assignment_cross_entropy",
           "hard_owners", "mask_iou", "query_objectness"]
