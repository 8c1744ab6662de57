#!/usr/bin/env python
"""Mask quality of trained runs, per instance size: why one criterion's AP trails another's.

    python research/mask_quality.py output/ab/hungarian_seed0 output/ab/influencer_seed0 --json out.json

For every GT instance of the first ``--images`` images of the test dataset (mapped with the
training mapper without augmentation, so the GT masks come along; the same images for every run)
it takes the best query by mask IoU among the queries that inference would keep (objectness
``1 - p(no object) > --confident``) and records that query's IoU, recall and precision on a
common grid (at most 256 px). Instances are split into size terciles by area (the same boundaries
for every run); the table reports the means per tercile and the share of instances that no
confident query covers at IoU >= 0.5 (missed), plus the confident queries per image. The best
query's area outside its instance (1 - precision) is split into the part on *other* instances
(a merge) and the part on the background (a bloated or misplaced mask); "shared" is the share of
instances whose best query is also the best query of another instance of the image (merges), and
"queries in use" the share of the model's queries that are the best query of some instance of
some probe image (a model that serves every image with one query per class uses few). Recall is
also split into the instance's interior (points more than ``--edge-width`` grid pixels inside its
boundary) and its edge band; "interior missed, elsewhere" is the share of the interior points the
best query misses that another confident query covers (a split instance) rather than none (a hole).

Each RUN_DIR needs ``config.yaml`` (written by ``tools/train_net.py``) and a checkpoint
(``--checkpoint``, default ``model_final.pth``). Needs detectron2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influencerformer.diagnostics import shares_best_query  # noqa: E402
from tools.provenance import machine_info, write_json  # noqa: E402

SIZES = ("small", "medium", "large")
STATISTICS = ("iou", "recall", "precision", "on_other_instances", "on_background", "shared")
# defined only for some instances (one with no interior has no interior recall): averaged over those
PARTIAL_STATISTICS = ("interior_recall", "edge_recall", "interior_missed_elsewhere")


def interior_masks(gts: torch.Tensor, size: Tuple[int, int], edge_width: int) -> torch.Tensor:
    """(K, h * w) binary masks on an (h, w) grid -> (K, h * w) their points more than ``edge_width``
    grid pixels inside the mask (a square erosion; the image border is not a boundary)."""
    if edge_width < 0:
        raise ValueError(f"edge_width must be >= 0; got {edge_width}")
    if gts.shape[0] == 0 or edge_width == 0:
        return gts.clone()
    grid = gts.reshape(gts.shape[0], 1, *size)
    eroded = -F.max_pool2d(-grid, 2 * edge_width + 1, stride=1, padding=edge_width)
    return eroded.reshape(gts.shape)


def instance_rows(logits: Sequence[torch.Tensor], gts: Sequence[torch.Tensor], objectness: torch.Tensor,
                  confident: float, interiors: Optional[Sequence[torch.Tensor]] = None) -> List[Dict[str, float]]:
    """Per GT instance: area share, and IoU / recall / precision of its best confident query (its
    index: ``query``, -1 when no confident query overlaps the instance), the shares of that query's
    area on other instances and on the background, and whether it is the best query of another
    instance of the image too (``shared``, 0 or 1). With ``interiors``, also the best query's recall
    on the instance's interior and on its edge band (the rest of the instance), and the share of the
    interior it misses that another confident query covers; None where the part is empty.

    Args:
        logits: per image (Q, P) mask logits; gts: per image (K, P) binary GT on the same points.
        objectness: (B, Q) ``1 - p(no object)``.
        interiors: per image (K, P) binary interiors of the GT masks (:func:`interior_masks`).
    """
    if not len(logits) == len(gts) == objectness.shape[0]:
        raise ValueError(f"{len(logits)} prediction images, {len(gts)} GT images and objectness for "
                         f"{objectness.shape[0]}: they must agree")
    if interiors is not None and [i.shape for i in interiors] != [g.shape for g in gts]:
        raise ValueError(f"interiors {[tuple(i.shape) for i in interiors]} must have the GT masks' shapes "
                         f"{[tuple(g.shape) for g in gts]}")
    rows = []
    for b, (lg, gt, obj) in enumerate(zip(logits, gts, objectness)):
        if gt.shape[0] == 0:
            continue
        pred = (lg > 0).float()
        inter = gt @ pred.transpose(0, 1)  # (K, Q)
        area_gt, area_pred = gt.sum(1), pred.sum(1)
        iou = inter / (area_gt[:, None] + area_pred[None, :] - inter).clamp(min=1.0)
        iou = torch.where((obj > confident)[None, :], iou, torch.zeros_like(iou))
        best = iou.argmax(dim=1)
        found = iou.gather(1, best[:, None])[:, 0] > 0
        best_of_found = torch.where(found, best, torch.full_like(best, -1))
        shared = shares_best_query(best, found)
        best_inter = inter.gather(1, best[:, None])[:, 0]
        best_area = area_pred[best].clamp(min=1.0)
        others = ((gt.sum(dim=0, keepdim=True) - gt) > 0).float()  # (K, P): points of other instances
        on_others = (pred[best] * others).sum(dim=1) / best_area
        on_background = (pred[best] * (gt.sum(dim=0) == 0).float()).sum(dim=1) / best_area
        parts = {}
        if interiors is not None:
            best_pred = pred[best] * found[:, None].float()  # (K, P); nothing where no query was found
            confident_yes = pred * (obj > confident).float()[:, None]
            other_yes = (confident_yes.sum(dim=0)[None, :] - confident_yes[best] * found[:, None].float()) > 0
            interior = interiors[b]
            missed = interior * (1.0 - best_pred)
            parts = {"interior_recall": _share(best_pred * interior, interior),
                     "edge_recall": _share(best_pred * (gt - interior), gt - interior),
                     "interior_missed_elsewhere": _share(missed * other_yes.float(), missed)}
        for k in range(gt.shape[0]):
            rows.append({"area": float(area_gt[k] / gt.shape[1]), "iou": float(iou[k, best[k]]),
                         "recall": float(best_inter[k] / area_gt[k].clamp(min=1.0)),
                         "precision": float(best_inter[k] / best_area[k]),
                         "on_other_instances": float(on_others[k]), "on_background": float(on_background[k]),
                         "shared": float(shared[k]), "query": int(best_of_found[k]),
                         **{name: value[k] for name, value in parts.items()}})
    return rows


def _share(part: torch.Tensor, whole: torch.Tensor) -> List[Optional[float]]:
    """Row-wise ``part.sum() / whole.sum()`` of (K, P) tensors; None for an empty ``whole`` row."""
    totals = whole.sum(dim=1)
    return [float(p / t) if t > 0 else None for p, t in zip(part.sum(dim=1), totals)]


def size_boundaries(areas: Sequence[float]) -> List[float]:
    """The two area shares splitting the instances into terciles."""
    ordered = sorted(areas)
    if not ordered:
        raise ValueError("no GT instances in the probe images")
    return [ordered[len(ordered) // 3], ordered[(2 * len(ordered)) // 3]]


def summarise(rows: List[Dict[str, float]], bounds: Sequence[float], num_images: int,
              num_confident: int, num_queries: int) -> Dict:
    out = {"instances": len(rows), "confident_queries_per_image": num_confident / max(num_images, 1),
           "queries_in_use": len({r["query"] for r in rows if r["query"] >= 0}) / num_queries}
    for name, (low, high) in zip(SIZES, [(-1.0, bounds[0]), (bounds[0], bounds[1]), (bounds[1], 2.0)]):
        part = [r for r in rows if low < r["area"] <= high]  # areas are shares in [0, 1]
        if not part:
            out[name] = None
            continue
        out[name] = {key: sum(r[key] for r in part) / len(part) for key in STATISTICS}
        for key in PARTIAL_STATISTICS:
            values = [r[key] for r in part if r.get(key) is not None]
            if values:
                out[name][key] = sum(values) / len(values)
        out[name]["missed"] = sum(r["iou"] < 0.5 for r in part) / len(part)
        out[name]["instances"] = len(part)
        out[name]["max_area"] = max(r["area"] for r in part)
    return out


@torch.no_grad()
def run_rows(run_dir: Path, checkpoint: str, inputs: List[Dict], confident: float, batch: int, edge_width: int):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate

    from influencerformer.diagnostics import query_objectness
    from projects.mask2former.hooks import probe_grid_size, probe_point_masks

    cfg = LazyConfig.load(str(run_dir / "config.yaml"))
    model = instantiate(cfg.model)
    weights = run_dir / checkpoint
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no checkpoint (--checkpoint names the file inside RUN_DIR)")
    DetectionCheckpointer(model).load(str(weights))
    model.eval()
    rows, num_confident, num_queries = [], 0, 0
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        images = model.preprocess_image(chunk)
        outputs = model.predict(images.tensor)
        targets = model.prepare_targets(chunk, images)
        logits, gts = probe_point_masks(outputs["pred_masks"], targets)
        size = probe_grid_size(outputs["pred_masks"], targets)
        objectness = query_objectness(outputs["pred_logits"])
        num_confident += int((objectness > confident).sum())
        num_queries = objectness.shape[1]
        rows += instance_rows(logits, gts, objectness, confident, [interior_masks(g, size, edge_width) for g in gts])
    return rows, num_confident, num_queries


def format_table(results: Dict[str, Dict]) -> str:
    lines = ["| run | size | instances | IoU | recall | precision | area on other instances | area on background "
             "| shared best query | missed (IoU < 0.5) | confident queries / image | queries in use "
             "| interior recall | edge recall | interior missed, elsewhere |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for size in SIZES:
            s = res[size]
            if s is None:
                continue
            # measurements written before the split / the query counts lack these keys
            split = [f"{s[key]:.3f}" if key in s else "-" for key in ("on_other_instances", "on_background", "shared")]
            in_use = f"{res['queries_in_use']:.2f}" if "queries_in_use" in res else "-"
            parts = " | ".join(f"{s[key]:.3f}" if key in s else "-" for key in PARTIAL_STATISTICS)
            lines.append(f"| {name} | {size} (area <= {s['max_area']:.3f}) | {s['instances']} | {s['iou']:.3f} | "
                         f"{s['recall']:.3f} | {s['precision']:.3f} | {split[0]} | {split[1]} | {split[2]} | "
                         f"{s['missed']:.2f} | {res['confident_queries_per_image']:.1f} | {in_use} | {parts} |")
    return "\n".join(lines)


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--checkpoint", default="model_final.pth")
    parser.add_argument("--images", type=int, default=48, help="test images to probe")
    parser.add_argument("--confident", type=float, default=0.5, help="objectness a query needs to count")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--edge-width", type=int, default=4,
                        help="grid pixels inside an instance's boundary that count as its edge band, not its interior")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be >= 1; got {args.images}")
    if args.edge_width < 0:
        parser.error(f"--edge-width must be >= 0; got {args.edge_width}")
    for run in args.runs:
        if not (run / "config.yaml").is_file():
            parser.error(f"{run}: no config.yaml (is it a tools/train_net.py output folder?)")
    if args.threads:
        torch.set_num_threads(args.threads)
    importlib.import_module("projects.mask2former")  # registers the model and the datasets
    from detectron2.config import LazyConfig

    torch.manual_seed(0)
    from projects.mask2former.hooks import unaugmented_inputs

    first = LazyConfig.load(str(args.runs[0] / "config.yaml"))
    # the test images, with their instances: the training mapper without augmentation
    inputs = unaugmented_inputs(first, args.images, first.dataloader.test.dataset.names)
    per_run = {str(run): run_rows(run, args.checkpoint, inputs, args.confident, args.batch, args.edge_width)
               for run in args.runs}
    bounds = size_boundaries([r["area"] for r in next(iter(per_run.values()))[0]])
    results = {name: summarise(rows, bounds, len(inputs), confident, queries)
               for name, (rows, confident, queries) in per_run.items()}
    print(format_table({Path(k).name: v for k, v in results.items()}))
    report = {"command": " ".join(["research/mask_quality.py"] + (argv if argv is not None else sys.argv[1:])),
              "images": len(inputs), "confident": args.confident, "edge_width": args.edge_width,
              "size_boundaries": bounds,
              "machine": machine_info(), "results": results}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
