"""Synthetic query-mask configurations: the ideal assignment and its typical defects.

Used by the property tests and ``research/loss_table.py`` so both score exactly the same cases.
Instances are disjoint blocks of ``points_per_instance`` points followed by as many background
points per instance; logits are ``+magnitude`` ("yes") or ``-magnitude`` ("no").
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

DEFECTS = ("one_duplicate", "every_spare_duplicates", "all_claim_foreground", "merge_two_instances",
           "split_instance", "background_leak", "covers_90_percent", "spills_onto_neighbour")


def block_masks(num_inst: int, points_per_instance: int = 20) -> Tensor:
    """(K, P) disjoint instance masks, P = 2 * K * points_per_instance (half background)."""
    n = points_per_instance
    num_points = max(2 * num_inst * n, n)
    masks = torch.zeros(num_inst, num_points)
    for k in range(num_inst):
        masks[k, k * n:(k + 1) * n] = 1.0
    return masks


def query_configurations(num_inst: int, num_queries: int, magnitude: float = 8.0,
                         points_per_instance: int = 20) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Returns GT masks (K, P) and ``{name: (Q, P) logits}`` for the ideal and each defect that
    is possible for this K and Q (e.g. no duplicate when Q == K)."""
    if not 1 <= num_inst <= num_queries:
        raise ValueError(f"need 1 <= K <= Q; got K={num_inst}, Q={num_queries}")
    masks = block_masks(num_inst, points_per_instance)
    yes, no = magnitude, -magnitude
    fg = masks.sum(0) > 0
    bg_idx = (~fg).nonzero().squeeze(1)

    def ideal() -> Tensor:
        z = torch.full((num_queries, masks.shape[1]), no)
        z[:num_inst] = torch.where(masks > 0, yes, no)
        return z

    configs = {"ideal": ideal()}
    spare = num_queries > num_inst
    if spare:
        z = ideal(); z[num_inst] = z[0]
        configs["one_duplicate"] = z
        z = ideal()
        for q in range(num_inst, num_queries):
            z[q] = z[q % num_inst]
        configs["every_spare_duplicates"] = z
    if num_queries > 1:
        configs["all_claim_foreground"] = torch.where(fg, yes, no).expand(num_queries, -1).clone()
    if num_inst >= 2:
        z = ideal(); z[0] = torch.where(masks[0] + masks[1] > 0, yes, no); z[1] = no
        configs["merge_two_instances"] = z
        z = ideal(); z[0, masks[1] > 0] = yes * 0 + torch.where(
            torch.arange(int(masks[1].sum())) % 2 == 0, yes, no)
        configs["spills_onto_neighbour"] = z
    if spare:
        z = ideal(); idx = (masks[0] > 0).nonzero().squeeze(1); half = idx[: idx.numel() // 2]
        z[0, half] = no; z[num_inst, half] = yes
        configs["split_instance"] = z
    z = ideal(); z[0, bg_idx[: bg_idx.numel() // 2]] = yes
    configs["background_leak"] = z
    z = ideal(); idx = (masks[0] > 0).nonzero().squeeze(1)
    z[0, idx[: max(1, idx.numel() // 10)]] = no
    configs["covers_90_percent"] = z
    return masks, configs


def is_one_to_one(mask_logits: Tensor, target_masks: Tensor, min_iou: float = 0.95,
                  instance_points_only: bool = False) -> bool:
    """Exactly one claimant per instance (IoU > 0.5), its IoU > ``min_iou``, distinct claimants,
    and every other query silent (no logit > 0). With ``instance_points_only`` all of it is judged
    on the points of some instance: a spare query may say "yes" on the background (as the losses
    that leave a non-owner's background free -- Hungarian's, ``bg_weight=0`` -- allow)."""
    if instance_points_only:
        on_instances = target_masks.amax(dim=0) > 0.5
        mask_logits, target_masks = mask_logits[:, on_instances], target_masks[:, on_instances]
    pred = (mask_logits > 0).float()
    tgt = (target_masks > 0.5).float()
    inter = tgt @ pred.T
    union = tgt.sum(1)[:, None] + pred.sum(1)[None] - inter
    iou = inter / union.clamp(min=1)
    claimants = iou > 0.5
    if not bool((claimants.sum(1) == 1).all()):
        return False
    best, owner = iou.max(1)
    if not bool((best > min_iou).all()) or owner.unique().numel() != owner.numel():
        return False
    others = torch.ones(mask_logits.shape[0], dtype=torch.bool)
    others[owner] = False
    return bool((pred[others].sum(1) == 0).all())


def random_instance_masks(num_inst: int, generator: torch.Generator, points_per_instance: int = 50,
                          background_points: int = 100) -> Tensor:
    """(K, P) disjoint masks from uniformly random point labels (sizes vary around the mean)."""
    num_points = points_per_instance * num_inst + background_points
    labels = torch.randint(0, num_inst + 1, (num_points,), generator=generator)
    labels[: num_inst + 1] = torch.arange(num_inst + 1)  # every instance non-empty
    return torch.stack([labels == k + 1 for k in range(num_inst)]).float()


def optimise_free_logits(target_masks: Tensor, num_queries: int, start: str = "random", seed: int = 0,
                         steps: int = 400, lr: float = 0.1, **loss_kwargs) -> Tensor:
    """Adam directly on free (Q, P) logits under :func:`mask_influencer_loss`.

    ``start="random"``: standard normal logits; ``"symmetric"``: all queries equal (0) up to
    noise of 1e-3. Returns the final logits (detached).
    """
    from influencerformer.losses import mask_influencer_loss

    if start not in ("random", "symmetric"):
        raise ValueError(f"start must be 'random' or 'symmetric'; got {start!r}")
    gen = torch.Generator().manual_seed(seed)
    shape = (num_queries, target_masks.shape[1])
    noise = torch.randn(shape, generator=gen)
    logits = (noise if start == "random" else 1e-3 * noise).requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        loss = mask_influencer_loss(logits, target_masks, **loss_kwargs)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return logits.detach()
