#!/usr/bin/env python
"""Criterion cost benchmark: Influencer (both formulations) vs the Hungarian baseline.

Forward + backward time (median of repeated runs after warm-up) and peak memory of each
criterion on identical structured inputs -- GT masks as blobs, predictions as noisy shuffled
copies -- with the Hungarian matcher's own share broken out. Dense inputs (2D, 12,544
sampled points, Mask2Former's 1/4-resolution mask logits) and point-form inputs (3D).

    python tools/benchmark_criterion.py                      # the two target scales
    python tools/benchmark_criterion.py --preset grid --json out.json
    python tools/benchmark_criterion.py --queries 100 --instances 50 --points 12544 --layers 10 --form dense

CPU peak memory is the rise of the process's resident high-water mark during the run
(``/proc/self/clear_refs`` resets it); CUDA peak memory is ``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import itertools
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influencerformer.criterion import HungarianCriterion, InfluencerCriterion  # noqa: E402
from influencerformer.matching import HungarianMatcher  # noqa: E402
from tools.provenance import machine_info, write_json  # noqa: E402

NUM_CLASSES = 80
HUNGARIAN_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
INFLUENCER_WEIGHTS = {"loss_ce": 2.0, "loss_influencer": 5.0}
# (form, Q, K, points, layers): the scales the cost targets are stated at.
TARGETS = [("point", 400, 50, 100_000, 4), ("dense", 100, 50, 12_544, 10)]
GRID = dict(queries=[100, 200, 400, 900], instances=[10, 50, 100], layers=[1, 4, 10],
            dense_points=[12_544], point_points=[50_000, 100_000, 200_000])


@dataclass
class Config:
    form: str
    queries: int
    instances: int
    points: int
    layers: int
    batch: int
    image_size: int

    def label(self) -> str:
        return f"{self.form:5s} Q={self.queries:<4d} K={self.instances:<4d} P={self.points:<7d} L={self.layers:<2d}"

    def estimated_gb(self) -> float:
        per_layer = self.queries * (self.points if self.form == "point" else (self.image_size // 4) ** 2)
        masks = self.instances * (self.points if self.form == "point" else self.image_size ** 2)
        return (3 * per_layer * self.layers + 2 * masks) * 4 * self.batch / 1e9


def blob_masks(num_inst: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """(K, size, size) bool: random ellipses of varied sizes (they may overlap)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(num_inst, 2, generator=gen) * size
    radius = (0.02 + 0.15 * torch.rand(num_inst, 2, generator=gen) ** 2) * size
    dy = (ys[None] - centre[:, 0, None, None]) / radius[:, 0, None, None]
    dx = (xs[None] - centre[:, 1, None, None]) / radius[:, 1, None, None]
    return dy ** 2 + dx ** 2 <= 1.0


def point_masks(num_inst: int, num_points: int, gen: torch.Generator, fg_fraction: float = 0.5) -> torch.Tensor:
    """(K, P) bool: disjoint instances of Dirichlet-distributed sizes covering ``fg_fraction``."""
    sizes = torch.distributions.Dirichlet(torch.ones(num_inst)).sample() * fg_fraction * num_points
    bounds = torch.cat([torch.zeros(1), sizes.cumsum(0)]).long()
    owner = torch.full((num_points,), -1)
    perm = torch.randperm(num_points, generator=gen)
    for k in range(num_inst):  # setup only, not timed
        owner[perm[bounds[k]:bounds[k + 1]]] = k
    return owner[None, :] == torch.arange(num_inst)[:, None]


def noisy_copies(masks: torch.Tensor, num_queries: int, gen: torch.Generator) -> torch.Tensor:
    """(Q, ...) logits: each query a shuffled, noisy copy of some instance's mask."""
    source = torch.randint(0, masks.shape[0], (num_queries,), generator=gen)
    source[torch.randperm(num_queries, generator=gen)[: masks.shape[0]]] = torch.arange(masks.shape[0])[: num_queries]
    logits = masks[source].float() * 8.0 - 4.0
    return logits + 2.0 * torch.randn(logits.shape, generator=gen)


def make_inputs(cfg: Config, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    targets, per_image = [], []
    for _ in range(cfg.batch):
        if cfg.form == "dense":
            masks = blob_masks(cfg.instances, cfg.image_size, gen)
            low = F.adaptive_avg_pool2d(masks.float()[None], cfg.image_size // 4)[0] > 0.5
            per_image.append(low)
        else:
            masks = point_masks(cfg.instances, cfg.points, gen)
            per_image.append(masks)
        targets.append({"labels": torch.randint(0, NUM_CLASSES, (cfg.instances,), generator=gen).to(device),
                        "masks": masks.to(device)})

    def layer():
        logits = torch.randn(cfg.batch, cfg.queries, NUM_CLASSES + 1, generator=gen)
        masks = [noisy_copies(m, cfg.queries, gen) for m in per_image]
        if cfg.form == "dense":
            return {"pred_logits": logits.to(device).requires_grad_(True),
                    "pred_masks": torch.stack(masks).to(device).requires_grad_(True)}
        return {"pred_logits": [x.to(device).requires_grad_(True) for x in logits],
                "pred_masks": [m.to(device).requires_grad_(True) for m in masks]}

    outputs = layer()
    outputs["aux_outputs"] = [layer() for _ in range(cfg.layers - 1)]
    return outputs, targets


def leaves(outputs) -> List[torch.Tensor]:
    out = []
    for layer in [outputs] + outputs.get("aux_outputs", []):
        for key in ("pred_logits", "pred_masks"):
            value = layer[key]
            out.extend(value if isinstance(value, list) else [value])
    return out


class ModuleTimer:
    """Accumulates the wall time of a module's forward calls (synchronising CUDA around them)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.device, self.total, self._start = device, 0.0, 0.0
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _before(self, *_):
        sync(self.device)
        self._start = time.perf_counter()

    def _after(self, *_):
        sync(self.device)
        self.total += time.perf_counter() - self._start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status(key: str) -> int:
    match = re.search(key + r":\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) * 1024 if match else 0


def reset_peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return -1
    return _proc_status("VmRSS")


def read_peak(device: torch.device, base: int) -> Optional[float]:
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    if base < 0:
        return None
    return (_proc_status("VmHWM") - base) / 2 ** 20


def build_criteria(cfg: Config) -> Dict[str, torch.nn.Module]:
    return {
        "hungarian": HungarianCriterion(NUM_CLASSES, HungarianMatcher(num_points=cfg.points), HUNGARIAN_WEIGHTS,
                                        num_points=cfg.points),
        "influencer": InfluencerCriterion(NUM_CLASSES, INFLUENCER_WEIGHTS, num_points=cfg.points),
        "influencer_original": InfluencerCriterion(NUM_CLASSES, INFLUENCER_WEIGHTS, num_points=cfg.points,
                                                   formulation="original"),
    }


def measure(cfg: Config, device: torch.device, repeats: int, warmup: int) -> Dict[str, dict]:
    outputs, targets = make_inputs(cfg, device)
    params = leaves(outputs)
    criteria = build_criteria(cfg)
    matcher_timers = {}
    for name, crit in criteria.items():
        crit.to(device)
        if isinstance(crit, HungarianCriterion):
            matcher_timers[name] = ModuleTimer(crit.matcher, device)

    def step(crit):
        losses = crit(outputs, targets)
        total = sum(crit.weight_dict[k] * v for k, v in losses.items())
        total.backward()
        for p in params:
            p.grad = None

    for _ in range(warmup):
        for crit in criteria.values():
            step(crit)
    times = {name: [] for name in criteria}
    matcher_times = {name: [] for name in matcher_timers}
    peaks = {}
    # Round-robin over the criteria, so that load changes on a shared machine hit all of them alike.
    for i in range(repeats):
        for name, crit in criteria.items():
            if name in matcher_timers:
                matcher_timers[name].total = 0.0
            base = reset_peak(device) if i == 0 else None
            sync(device)
            start = time.perf_counter()
            step(crit)
            sync(device)
            times[name].append(time.perf_counter() - start)
            if base is not None:
                peaks[name] = read_peak(device, base)
            if name in matcher_timers:
                matcher_times[name].append(matcher_timers[name].total)
    results = {name: {"ms": 1e3 * statistics.median(times[name]), "peak_mib": peaks.get(name),
                      "matcher_ms": 1e3 * statistics.median(matcher_times[name]) if name in matcher_times else None}
               for name in criteria}
    base_ms = results["hungarian"]["ms"]
    for name in ("influencer", "influencer_original"):
        results[name]["time_ratio_vs_hungarian"] = results[name]["ms"] / base_ms
        hp, ip = results["hungarian"]["peak_mib"], results[name]["peak_mib"]
        results[name]["memory_ratio_vs_hungarian"] = ip / hp if hp and ip is not None else None
    return results


def configs_for(args) -> List[Config]:
    if args.queries or args.instances or args.points or args.layers:
        q = args.queries or [100]
        k = args.instances or [50]
        p = args.points or ([12_544] if args.form == "dense" else [100_000])
        layers = args.layers or [1]
        return [Config(args.form, *c, args.batch, args.image_size) for c in itertools.product(q, k, p, layers)]
    if args.preset == "targets":
        return [Config(f, q, k, p, l, args.batch, args.image_size) for f, q, k, p, l in TARGETS]
    cfgs = []
    for form, pts in (("dense", GRID["dense_points"]), ("point", GRID["point_points"])):
        for q, k, p, l in itertools.product(GRID["queries"], GRID["instances"], pts, GRID["layers"]):
            cfgs.append(Config(form, q, k, p, l, args.batch, args.image_size))
    return cfgs


def format_row(device: str, cfg: Config, res: Dict[str, dict]) -> str:
    h, i, o = res["hungarian"], res["influencer"], res["influencer_original"]
    share = 100 * h["matcher_ms"] / h["ms"] if h["matcher_ms"] is not None else float("nan")

    def mem(r):
        return f"{r['peak_mib']:8.0f}" if r["peak_mib"] is not None else "     n/a"

    def ratio(r, key):
        return f"{r[key]:5.2f}x" if r.get(key) is not None else "  n/a "
    return (f"{device:4s} {cfg.label()} | {h['ms']:9.1f} {h['matcher_ms']:8.1f} {share:4.0f}% {mem(h)} | "
            f"{i['ms']:9.1f} {ratio(i, 'time_ratio_vs_hungarian')} {mem(i)} {ratio(i, 'memory_ratio_vs_hungarian')} | "
            f"{o['ms']:9.1f} {ratio(o, 'time_ratio_vs_hungarian')} {mem(o)}")


HEADER = ("dev  config                                       | hungarian  matcher share  peak MiB | "
          "influencer  time/H  peak MiB  mem/H | original    time/H  peak MiB")


def main(argv: Optional[List[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["targets", "grid"], default="targets",
                        help="targets: the two scales the cost targets are stated at; grid: the full grid")
    parser.add_argument("--form", choices=["dense", "point"], default="dense", help="form for explicit sizes")
    parser.add_argument("--queries", type=int, nargs="+")
    parser.add_argument("--instances", type=int, nargs="+")
    parser.add_argument("--points", type=int, nargs="+")
    parser.add_argument("--layers", type=int, nargs="+")
    parser.add_argument("--batch", type=int, default=2, help="images / scenes per batch")
    parser.add_argument("--image-size", type=int, default=1024, help="dense GT size (predictions at 1/4)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU always, CUDA too when present")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-gb", type=float, default=12.0, help="skip configurations estimated above this")
    parser.add_argument("--json", type=Path, help="write the results here (atomically)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))

    records = []
    print(HEADER)
    for device in devices:
        for cfg in configs_for(args):
            if cfg.estimated_gb() > args.max_gb:
                print(f"{device.type:4s} {cfg.label()} | skipped: ~{cfg.estimated_gb():.1f} GB > --max-gb {args.max_gb}")
                records.append({"device": device.type, "config": asdict(cfg), "skipped": True})
                continue
            torch.manual_seed(0)
            res = measure(cfg, device, args.repeats, args.warmup)
            print(format_row(device.type, cfg, res), flush=True)
            records.append({"device": device.type, "config": asdict(cfg), "results": res})
    if args.json:
        payload = {"machine": machine_info(devices), "repeats": args.repeats, "warmup": args.warmup,
                   "records": records}
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    return records


if __name__ == "__main__":
    main()
