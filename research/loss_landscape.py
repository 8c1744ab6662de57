#!/usr/bin/env python
"""Does gradient descent reach the one-to-one assignment? Free logits under Adam, no network.

    python research/loss_landscape.py                               # exclusive defaults, 3 seeds
    python research/loss_landscape.py --variant sinkhorn_iters=0 --variant formulation=original
    python research/loss_landscape.py --json landscape.json

For K in {1, 5, 20}, Q in {K, 2K, 100}, random and symmetric starts (all queries equal up to
1e-3 noise), optimise (Q, P) logits with Adam and report how many runs end one-to-one: one
claimant per instance with IoU > 0.95, distinct claimants, every other query silent
(``--instance-points-only``: all judged on the instances' points, for losses that leave a spare
query's background free).
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research.testing import is_one_to_one, optimise_free_logits, random_instance_masks  # noqa: E402
from tools.provenance import machine_info, write_json  # noqa: E402


def parse_variant(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if not _:
            raise argparse.ArgumentTypeError(f"variant items are key=value; got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", type=parse_variant,
                        help="loss keywords, e.g. 'temperature=0.1,sinkhorn_iters=0' (repeatable); "
                             "the defaults are always run first")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--instance-points-only", action="store_true",
                        help="judge one-to-one on the instances' points only (spare queries may say 'yes' on the "
                             "background)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = [{}] + (args.variant or [])
    cases = [(k, q) for k in (1, 5, 20) for q in sorted({k, 2 * k, 100})]
    results = {}
    print("| variant | K | Q | random start | symmetric start |")
    print("|---|---|---|---|---|")
    for variant in variants:
        name = ",".join(f"{k}={v}" for k, v in variant.items()) or "defaults"
        results[name] = []
        start_time = time.time()
        for k, q in cases:
            row = {"K": k, "Q": q}
            for start in ("random", "symmetric"):
                ok = 0
                for seed in range(args.seeds):
                    masks = random_instance_masks(k, torch.Generator().manual_seed(seed))
                    logits = optimise_free_logits(masks, q, start=start, seed=seed, steps=args.steps, lr=args.lr,
                                                  **variant)
                    ok += is_one_to_one(logits, masks, instance_points_only=args.instance_points_only)
                row[start] = ok
            results[name].append(row)
            print(f"| {name} | {k} | {q} | {row['random']}/{args.seeds} | {row['symmetric']}/{args.seeds} |",
                  flush=True)
        total = sum(r["random"] + r["symmetric"] for r in results[name])
        print(f"| {name} | all | | {total}/{2 * args.seeds * len(cases)} one-to-one "
              f"({time.time() - start_time:.0f} s) | |", flush=True)
    if args.json:
        write_json(args.json, {"machine": machine_info(), "steps": args.steps, "lr": args.lr, "seeds": args.seeds,
                               "instance_points_only": args.instance_points_only, "results": results})
    return results


if __name__ == "__main__":
    main()
