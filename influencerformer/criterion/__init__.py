"""Set criteria with one call convention: the Influencer criterion and the Hungarian baseline."""
from influencerformer.criterion.base import (SetCriterionBase, assignment_cross_entropy, binary_mask_iou, mask_iou,
                                             objectness_loss)
from influencerformer.criterion.hungarian import HungarianCriterion
from influencerformer.criterion.influencer import InfluencerCriterion, class_log_odds

__all__ = ["SetCriterionBase", "HungarianCriterion", "InfluencerCriterion", "assignment_cross_entropy",
           "binary_mask_iou", "class_log_odds", "mask_iou", "objectness_loss"]
