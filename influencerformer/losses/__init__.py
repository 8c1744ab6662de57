"""Losses as functions (like ``torch.nn.functional``) with thin ``nn.Module`` wrappers."""
from influencerformer.losses.condensation import CondensationInfluencerLoss, condensation_influencer_loss
from influencerformer.losses.influencer import (
    EXCLUSIONS,
    FORMULATIONS,
    InfluencerPotentials,
    MaskInfluencerLoss,
    MaskStatistics,
    PointTargets,
    claim_scores,
    mask_influencer_loss,
    mask_statistics,
    owner_losses,
    point_targets,
    profile_repulsion,
    resolve_temperature,
)
from influencerformer.losses.mask import (
    dice_loss,
    pair_mask_costs,
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    point_statistics,
    sigmoid_ce_loss,
)

__all__ = [
    "EXCLUSIONS", "FORMULATIONS", "InfluencerPotentials", "MaskInfluencerLoss", "MaskStatistics", "PointTargets",
    "claim_scores", "mask_influencer_loss", "mask_statistics", "owner_losses", "point_targets", "profile_repulsion",
    "resolve_temperature", "CondensationInfluencerLoss", "condensation_influencer_loss", "dice_loss",
    "pair_mask_costs", "pairwise_dice_cost", "pairwise_sigmoid_ce_cost", "point_statistics", "sigmoid_ce_loss",
]
