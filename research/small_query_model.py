#!/usr/bin/env python
"""A CPU-sized check that a criterion trains a real query model: same network, same data, same
schedule, only the criterion differs.

    python research/small_query_model.py                              # hungarian, original, exclusive
    python research/small_query_model.py --criteria exclusive --steps 3000 --json out.json

The model is a small query decoder (conv encoder, learned queries, cross-/self-attention layers
without masked attention, class and mask-embedding heads, deep supervision); the data are
32x32 images of 2-5 random rectangles and ellipses with random colours, drawn on the fly. At the
end it reports, on held-out images: mean best-IoU (each GT's best IoU among the predicted
objects, 0 if none; and among all queries, whatever their class score), precision and recall at IoU 0.5 (greedy by score), and how many queries
cover >90% of an instance (duplicates). This is a diagnostic of the loss, not a benchmark of
the architecture: the real comparison runs Mask2Former (configs/synthetic, research/run_ab.py).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influencerformer.criterion import HungarianCriterion, InfluencerCriterion  # noqa: E402
from influencerformer.losses import InfluencerPotentials  # noqa: E402
from influencerformer.matching import SinkhornAssigner  # noqa: E402
from influencerformer.matching import HungarianMatcher  # noqa: E402
from tools.provenance import machine_info, write_json  # noqa: E402

NUM_CLASSES = 2  # rectangle, ellipse


def draw_batch(batch: int, size: int, gen: torch.Generator):
    """Images (B, 3, S, S) and targets with labels and (K, S, S) masks, occlusion-aware."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images, targets = [], []
    for _ in range(batch):
        img = 0.1 * torch.randn(3, size, size, generator=gen)
        k = int(torch.randint(2, 6, (1,), generator=gen))
        owner = torch.full((size, size), -1)
        labels = torch.randint(0, NUM_CLASSES, (k,), generator=gen)
        for i in range(k):
            cy, cx = torch.rand(2, generator=gen) * 0.8 + 0.1
            hy, hx = torch.rand(2, generator=gen) * 0.2 + 0.08
            if labels[i] == 0:
                shape = ((ys - cy).abs() <= hy) & ((xs - cx).abs() <= hx)
            else:
                shape = ((ys - cy) / hy) ** 2 + ((xs - cx) / hx) ** 2 <= 1
            owner[shape] = i  # later shapes occlude earlier ones
            img[:, shape] = (torch.rand(3, 1, generator=gen) * 2 - 1)
        masks = torch.stack([owner == i for i in range(k)])
        keep = masks.flatten(1).sum(1) > 0
        images.append(img)
        targets.append({"labels": labels[keep], "masks": masks[keep]})
    return torch.stack(images), targets


class SmallQueryModel(nn.Module):
    """Conv encoder (stride 2) -> ``layers`` decoder layers (cross-attn, self-attn, FFN) over
    learned queries; predictions after the input and after every layer."""

    def __init__(self, num_queries: int = 12, dim: int = 64, layers: int = 3):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3 + 2, dim, 3, padding=1), nn.GroupNorm(8, dim), nn.ReLU(),
            nn.Conv2d(dim, dim, 3, stride=2, padding=1), nn.GroupNorm(8, dim), nn.ReLU(),
            nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(8, dim), nn.ReLU(),
            nn.Conv2d(dim, dim, 3, padding=1))
        self.queries = nn.Embedding(num_queries, dim)
        self.cross = nn.ModuleList(nn.MultiheadAttention(dim, 4, batch_first=True) for _ in range(layers))
        self.self_attn = nn.ModuleList(nn.MultiheadAttention(dim, 4, batch_first=True) for _ in range(layers))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
                                 for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3 * layers))
        self.head_norm = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, NUM_CLASSES + 1)
        self.mask_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def predict(self, q: torch.Tensor, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        q = self.head_norm(q)
        return {"pred_logits": self.class_head(q),
                "pred_masks": torch.einsum("bqc,bchw->bqhw", self.mask_head(q), features)}

    def forward(self, images: torch.Tensor) -> Dict:
        b, _, h, w = images.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        coords = torch.stack([ys, xs]).expand(b, -1, -1, -1)
        features = self.encoder(torch.cat([images, coords], dim=1))  # (B, C, H/2, W/2)
        memory = features.flatten(2).transpose(1, 2)
        q = self.queries.weight[None].expand(b, -1, -1)
        preds = [self.predict(q, features)]
        for i, (cross, attn, ffn) in enumerate(zip(self.cross, self.self_attn, self.ffn)):
            q = self.norms[3 * i](q + cross(q, memory, memory)[0])
            q = self.norms[3 * i + 1](q + attn(q, q, q)[0])
            q = self.norms[3 * i + 2](q + ffn(q))
            preds.append(self.predict(q, features))
        out = dict(preds[-1])
        out["aux_outputs"] = preds[:-1]
        return out


ASSIGNER_KEYS = ("cost_class", "cost_mask", "cost_dice", "temperature", "num_iters", "anneal", "detach")


def build_criterion(name: str, num_points: int, influencer_kwargs: Dict = None):
    """``hungarian``, or the Influencer loss (``exclusive`` / ``original`` potentials) as the criterion's
    mask term; ``influencer_kwargs`` are :class:`InfluencerPotentials` keywords, or assigner keywords
    (:data:`ASSIGNER_KEYS`)."""
    if name == "hungarian":
        return HungarianCriterion(NUM_CLASSES, HungarianMatcher(num_points=num_points),
                                  {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}, num_points=num_points)
    kwargs = dict(influencer_kwargs or {})
    assigner = SinkhornAssigner(**{"cost_class": 0.0, "cost_mask": 0.0, "cost_dice": 0.0,
                                   **{k: kwargs.pop(k) for k in ASSIGNER_KEYS if k in kwargs}})
    potentials = InfluencerPotentials({"exclusive": "exclusive", "original": "original"}[name], **kwargs)
    return InfluencerCriterion(NUM_CLASSES, {"loss_ce": 2.0, "loss_influencer": 5.0}, assigner, potentials,
                               num_points=num_points, importance_sample_ratio=0.0)


@torch.no_grad()
def evaluate(model: nn.Module, batches: List, score_threshold: float = 0.5) -> Dict[str, float]:
    best_ious, mask_ious, tp, num_pred, num_gt, duplicates = [], [], 0, 0, 0, 0
    for images, targets in batches:
        out = model(images)
        size = images.shape[-1]
        masks = F.interpolate(out["pred_masks"], size=size, mode="bilinear", align_corners=False) > 0
        probs = out["pred_logits"].softmax(-1)
        for b, tgt in enumerate(targets):
            gt = tgt["masks"].flatten(1).float()
            pred = masks[b].flatten(1).float()
            iou_all = (gt @ pred.T) / (gt.sum(1, keepdim=True) + pred.sum(1)[None] - gt @ pred.T).clamp(min=1)
            cover = (gt @ pred.T) / gt.sum(1, keepdim=True).clamp(min=1)
            duplicates += int(((cover > 0.9).sum(1) > 1).sum())
            mask_ious += iou_all.max(1).values.tolist()
            score = 1 - probs[b, :, NUM_CLASSES]
            keep = (score > score_threshold) & (pred.sum(1) > 0)
            iou = iou_all[:, keep]
            num_gt += gt.shape[0]
            num_pred += int(keep.sum())
            best_ious += (iou.max(1).values if iou.shape[1] else torch.zeros(gt.shape[0])).tolist()
            taken = torch.zeros(gt.shape[0], dtype=torch.bool)
            for j in torch.argsort(score[keep], descending=True).tolist():  # greedy matching, evaluation only
                cand = torch.where(taken, torch.zeros_like(iou[:, j]), iou[:, j])
                if cand.numel() and cand.max() > 0.5:
                    taken[cand.argmax()] = True
                    tp += 1
    return {"mean_best_iou": statistics.mean(best_ious), "mask_best_iou_any_query": statistics.mean(mask_ious),
            "precision": tp / num_pred if num_pred else 0.0,
            "recall": tp / num_gt, "instances_with_duplicates": duplicates / num_gt}


def train(name: str, args, influencer_kwargs: Dict = None) -> Dict[str, float]:
    torch.manual_seed(args.seed)
    model = SmallQueryModel(args.queries, layers=args.layers)
    criterion = build_criterion(name, args.points, args.influencer if influencer_kwargs is None else influencer_kwargs)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    data_gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for step in range(args.steps):
        images, targets = draw_batch(args.batch, args.size, data_gen)
        losses = criterion(model(images), targets)
        loss = sum(criterion.weight_dict[k] * v for k, v in losses.items())
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{name}: loss became {loss.item()} at step {step}")
    val_gen = torch.Generator().manual_seed(10_000 + args.seed)
    model.eval()
    metrics = evaluate(model, [draw_batch(args.batch, args.size, val_gen) for _ in range(args.val_batches)])
    metrics["seconds"] = time.time() - start
    return metrics


def _kwargs(text: str) -> Dict:
    import ast

    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value; got {item!r}")
        out[key] = ast.literal_eval(value)
    return out


def main(argv=None) -> Dict[str, Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--criteria", nargs="*", default=["hungarian", "original", "exclusive"],
                        choices=["hungarian", "original", "exclusive"])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--points", type=int, default=256, help="points sampled per image by the criteria")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-batches", type=int, default=8)
    parser.add_argument("--influencer", type=_kwargs, default={},
                        help="InfluencerPotentials or SinkhornAssigner keywords, e.g. 'excl_weight=0.5,temperature=0.3'")
    parser.add_argument("--variant", type=_kwargs, action="append", default=[],
                        help="an extra exclusive arm with these keywords on top of --influencer (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small ops: 1 is fastest)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    print("| criterion | mean best-IoU | best-IoU, any query | precision | recall | instances with duplicates | seconds |")
    print("|---|---|---|---|---|---|---|")
    arms = [(name, name, {} if name == "hungarian" else dict(args.influencer)) for name in args.criteria]
    for variant in args.variant:
        kwargs = dict(args.influencer) | variant
        arms.append((f"exclusive[{','.join(f'{k}={v}' for k, v in variant.items())}]", "exclusive", kwargs))
    for label, name, kwargs in arms:
        m = train(name, args, kwargs)
        m["criterion"], m["kwargs"] = name, kwargs
        results[label] = m
        print(f"| {label} | {m['mean_best_iou']:.3f} | {m['mask_best_iou_any_query']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
              f"{m['instances_with_duplicates']:.3f} | {m['seconds']:.0f} |", flush=True)
    if args.json:
        write_json(args.json, {"machine": machine_info(), "args": vars(args) | {"json": str(args.json)},
                               "results": results})
    return results


if __name__ == "__main__":
    main()
