"""Losses as functions (like ``torch.nn.functional``) with thin ``nn.Module`` wrappers."""
from influencerformer.losses.condensation import CondensationInfluencerLoss, condensation_influencer_loss
from influencerformer.losses.influencer import (
    FORMULATIONS,
    InfluencerTargets,
    MaskInfluencerLoss,
    claim_scores,
    mask_influencer_loss,
    prepare_influencer_targets,
    profile_repulsion,
    query_usage_bias,
    resolve_temperature,
    sinkhorn_ownership,
    batched_sinkhorn_ownership,
)
from influencerformer.losses.mask import (
    dice_loss,
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    sigmoid_ce_loss,
)

__all__ = [
    "FORMULATIONS", "InfluencerTargets", "prepare_influencer_targets", "MaskInfluencerLoss",
    "claim_scores", "mask_influencer_loss", "profile_repulsion", "query_usage_bias",
    "resolve_temperature", "sinkhorn_ownership", "batched_sinkhorn_ownership",
    "CondensationInfluencerLoss", "condensation_influencer_loss", "dice_loss", "pairwise_dice_cost",
    "pairwise_sigmoid_ce_cost", "sigmoid_ce_loss",
]
