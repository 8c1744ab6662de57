#!/usr/bin/env python
"""Score the ideal assignment and its typical defects under both loss formulations.

    python research/loss_table.py                    # K = 4 instances, Q = 20 queries, logits +-8
    python research/loss_table.py --instances 20 --queries 100 --json table.json

Prints a markdown table (lower is better); the ideal must be the lowest row for a formulation
whose minimum is the one-to-one assignment.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influencerformer.losses import FORMULATIONS, mask_influencer_loss  # noqa: E402
from research.testing import query_configurations  # noqa: E402
from tools.provenance import write_json  # noqa: E402


def loss_table(num_inst: int, num_queries: int, magnitude: float) -> dict:
    masks, configs = query_configurations(num_inst, num_queries, magnitude)
    return {name: {f: mask_influencer_loss(z, masks, formulation=f)["loss"].item() for f in FORMULATIONS}
            for name, z in configs.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--magnitude", type=float, default=8.0, help="|logit| of yes/no")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        table = loss_table(args.instances, args.queries, args.magnitude)
    except ValueError as err:
        parser.error(str(err))
    print(f"| configuration (K = {args.instances}, Q = {args.queries}, ±{args.magnitude:g}) | "
          + " | ".join(FORMULATIONS) + " |")
    print("|---" * (len(FORMULATIONS) + 1) + "|")
    for name, row in table.items():
        marks = []
        for f in FORMULATIONS:
            below_ideal = name != "ideal" and row[f] <= table["ideal"][f]
            marks.append(f"{row[f]:.3f}" + (" ⚠ ≤ ideal" if below_ideal else ""))
        print(f"| {name.replace('_', ' ')} | " + " | ".join(marks) + " |")
    if args.json:
        write_json(args.json, table)
    return table


if __name__ == "__main__":
    main()
