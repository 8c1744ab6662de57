#!/usr/bin/env python
"""Whole-iteration cost: the criterion's share of a full training iteration of the COCO R50 model.

    python tools/iteration_cost.py                            # CPU: 2 images of 384x384
    python tools/iteration_cost.py --size 1024 --batch 2      # a GPU's share of batch 16 on 8 GPUs
    python tools/iteration_cost.py --json out.json

Builds the model of each config (default ``configs/coco/{hungarian,influencer}.py``; random
weights, nothing downloaded) and its optimiser, then times full training iterations on identical
synthetic inputs -- ``--batch`` images of ``--size`` pixels with COCO-like instance counts and
sizes -- split into: network forward, criterion forward, criterion backward (gradients down to
the network's outputs), network backward, optimiser step (with the config's gradient clipping).
Round-robin over the configs, median over iterations; CUDA is synchronised between phases.
Also counts the operators one criterion forward + backward dispatches (``criterion ops``): on a
GPU most are a kernel launch each, whose host cost the timings of a CPU run do not show. A hybrid
config's one-to-many criterion counts as part of the criterion.
Needs detectron2 (the COCO model's backbone).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.benchmark_criterion import blob_masks, count_dispatched_ops  # noqa: E402
from tools.provenance import machine_info, write_json  # noqa: E402

PHASES = ("forward", "criterion_forward", "criterion_backward", "network_backward", "optimizer")
DEFAULT_CONFIGS = ("configs/coco/hungarian.py", "configs/coco/influencer.py")
# instances per image: COCO train2017 has 7.3 on average, with a long tail
COCO_LIKE_COUNTS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30)


def output_tensors(outputs) -> List[torch.Tensor]:
    """Every tensor of the decoder's output dict (final and aux layers) that needs a gradient."""
    if torch.is_tensor(outputs):
        return [outputs] if outputs.requires_grad else []
    if isinstance(outputs, dict):
        return [t for v in outputs.values() for t in output_tensors(v)]
    if isinstance(outputs, (list, tuple)):
        return [t for v in outputs for t in output_tensors(v)]
    return []


def coco_like_targets(batch: int, size: int, num_classes: int, seed: int, device) -> List[Dict]:
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(batch):
        k = COCO_LIKE_COUNTS[int(torch.randint(len(COCO_LIKE_COUNTS), (1,), generator=gen))]
        masks = blob_masks(k, size, gen)
        masks = masks[masks.flatten(1).any(1)]
        labels = torch.randint(num_classes, (masks.shape[0],), generator=gen)
        targets.append({"labels": labels.to(device), "masks": masks.to(device)})
    return targets


class Arm:
    def __init__(self, config_file: str, device: str, overrides: List[str]):
        from detectron2.config import LazyConfig, instantiate

        cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), overrides)
        self.name = Path(config_file).stem
        self.model = instantiate(cfg.model).to(device).train()
        cfg.optimizer.params.model = self.model
        self.optimizer = instantiate(cfg.optimizer)
        self.criterion = self.model.criterion
        for module in self.model.modules():  # the criteria (and a hybrid's group criterion)
            if hasattr(module, "_value_checks_left"):
                module._value_checks_left = 0  # the steady state: value checks run in the first calls only
        self.device = device
        self.times: Dict[str, List[float]] = {p: [] for p in PHASES}

    def _sync(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def iteration(self, images: torch.Tensor, targets: List[Dict], record: bool) -> None:
        stamps = [time.perf_counter()]

        def mark():
            self._sync()
            stamps.append(time.perf_counter())

        outputs = self.model.predict(images)
        mark()
        loss = self.weighted_loss(outputs, targets)
        mark()
        tensors = output_tensors(outputs)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        mark()
        pairs = [(t, g) for t, g in zip(tensors, grads) if g is not None]
        torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
        mark()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        mark()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: loss is {float(loss)}")
        if record:
            for phase, start, end in zip(PHASES, stamps, stamps[1:]):
                self.times[phase].append(end - start)

    def weighted_loss(self, outputs, targets: List[Dict]) -> torch.Tensor:
        """The criterion's weighted loss, plus the one-to-many group's (hybrid configs) when the model has one."""
        pairs = [(self.criterion, outputs)]
        group_criterion = getattr(self.model, "criterion_one_to_many", None)
        if group_criterion is not None:
            pairs.append((group_criterion, outputs["one_to_many"]))
        total = 0.0
        for criterion, layer_outputs in pairs:
            losses = criterion(layer_outputs, targets)
            total = total + sum(criterion.weight_dict[k] * v for k, v in losses.items())
        return total

    def criterion_ops(self, images: torch.Tensor, targets: List[Dict]) -> int:
        """Operators one criterion forward + backward (to the network's outputs) dispatches."""
        outputs = self.model.predict(images)
        return count_dispatched_ops(lambda: torch.autograd.grad(self.weighted_loss(outputs, targets),
                                                                output_tensors(outputs), allow_unused=True))

    def summary(self) -> Dict[str, float]:
        med = {p: statistics.median(v) for p, v in self.times.items()}
        med["total"] = sum(med[p] for p in PHASES)
        med["criterion"] = med["criterion_forward"] + med["criterion_backward"]
        med["criterion_share"] = med["criterion"] / med["total"]
        return med


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-files", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=None, help="input side (default: 1024 on CUDA, 384 on CPU)")
    parser.add_argument("--batch", type=int, default=2, help="images per iteration (per device)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per config")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every config")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for path in args.config_files:
        if not os.path.isfile(path):
            parser.error(f"config file {path!r} does not exist")
    size = args.size or (1024 if args.device.startswith("cuda") else 384)
    torch.manual_seed(args.seed)
    arms = [Arm(path, args.device, args.overrides) for path in args.config_files]
    num_classes = arms[0].model.num_classes
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, size, size, generator=gen).to(args.device)
    targets = coco_like_targets(args.batch, size, num_classes, args.seed, args.device)
    for step in range(args.warmup + args.iters):  # round robin: drift hits every config alike
        for arm in arms:
            arm.iteration(images, targets, record=step >= args.warmup)
    results = {arm.name: dict(arm.summary(), criterion_ops=arm.criterion_ops(images, targets)) for arm in arms}
    reference = results.get("hungarian", next(iter(results.values())))
    header = ("| config | forward | criterion fwd | criterion bwd | network bwd | optimiser | iteration | "
              "criterion share | criterion / hungarian's | criterion ops | ops / hungarian's |")
    print(f"{args.device}, {args.batch} x {size}x{size}, instances per image "
          f"{[int(t['labels'].numel()) for t in targets]}, median of {args.iters} iterations (seconds)")
    print(header)
    print("|---" * 11 + "|")
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[p]:.3f}" for p in PHASES) + f" | {r['total']:.3f} | "
              f"{100 * r['criterion_share']:.1f}% | {r['criterion'] / reference['criterion']:.2f}x | "
              f"{r['criterion_ops']} | {r['criterion_ops'] / reference['criterion_ops']:.2f}x |")
    report = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "machine": machine_info([torch.device(args.device)]), "device": args.device, "batch": args.batch, "size": size,
        "instances": [int(t["labels"].numel()) for t in targets], "iters": args.iters, "results": results,
    }
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
