#!/usr/bin/env python
"""One command for whoever has a GPU: the criterion's cost against Hungarian's, three ways.

    python tools/gpu_report.py --out docs/benchmarks/gpu_report      # on a CUDA machine
    python tools/gpu_report.py --out DIR --budget-s 480              # what fits in 8 minutes

Runs, each in its own process with a time limit, most wanted first (a part that fails is reported,
the rest still run; parts that would start after ``--budget-s`` are skipped):

1. ``tools/benchmark_criterion.py`` at the two target scales (COCO dense, S3DIS points): Hungarian,
   the Influencer criteria eager and the default one as a CUDA graph, with CUDA's count of syncs;
2. ``tools/iteration_cost.py`` on the synthetic configs, plain and hybrid (8 x 128 px), and
3. on the R50 COCO configs at 1024 px (both need detectron2);
4. the criterion benchmark again with the default criterion under ``torch.compile``;
5. ``tools/train_net.py`` for ``--train-iters`` iterations of ``configs/synthetic/{hungarian,
   influencer}.py`` (the synthetic data is generated first if missing): seconds per iteration from
   detectron2's ``metrics.json``, data loading included.

Writes ``report.json`` (every part's output and the machine) and ``report.md`` (the tables) into
``--out`` after every part; refuses to overwrite an existing report without ``--force``.
``--quick`` runs tiny sizes (a smoke test of the script itself, on any device).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.benchmark_criterion import operators_cell  # noqa: E402
from tools.provenance import machine_info, write_json, write_text_atomic  # noqa: E402


def run_part(name: str, command: List[str], timeout: float, env: Optional[Dict[str, str]] = None) -> Dict:
    """Run one part; return its exit status, seconds and the tail of its output."""
    start = time.time()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})))
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        status = "timeout"
        output = (expired.stdout or b"").decode(errors="replace") + (expired.stderr or b"").decode(errors="replace")
    seconds = time.time() - start
    print(f"[{name}] exit {status} after {seconds:.0f} s", flush=True)
    return {"command": " ".join(command), "status": status, "seconds": round(seconds, 1), "output_tail": output[-4000:]}


def detectron2_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import detectron2"], capture_output=True).returncode == 0


def seconds_per_iteration(metrics_path: Path, skip: int) -> Optional[float]:
    """Median of detectron2's logged ``time`` (seconds per iteration) after the first ``skip`` iterations."""
    if not metrics_path.is_file():
        return None
    times = []
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if "time" in record and record.get("iteration", 0) >= skip:
            times.append(record["time"])
    return statistics.median(times) if times else None


def markdown(report: Dict) -> str:
    machine = report["machine"]
    lines = [f"# GPU report ({machine.get('date', '')}, commit {machine.get('commit', '')})", "",
             f"Device: {machine.get('gpu', report['device'])}", ""]
    for part_name, title in (("criterion", "Criterion forward + backward"),
                             ("criterion_compiled", "Criterion forward + backward, with torch.compile")):
        records = report["parts"].get(part_name, {}).get("records")
        if not records:
            continue
        lines += [f"## {title}", "", "| config | criterion | ms | time / hungarian | ops / syncs |",
                  "|---|---|---|---|---|"]
        for record in records:
            if record.get("skipped"):
                continue
            cfg = record["config"]
            label = f"{cfg['form']} Q={cfg['queries']} K={cfg['instances']} P={cfg['points']} L={cfg['layers']}"
            for name, res in record["results"].items():
                if "failed" in res:
                    lines.append(f"| {label} | {name} | failed: {res['failed'][:200]} | | |")
                    continue
                lines.append(f"| {label} | {name} | {res['ms']:.2f} | {res['time_ratio_vs_hungarian']:.2f}x | "
                             f"{operators_cell(res)} |")
        lines.append("")
    for part_name, title in (("iteration_synthetic", "Synthetic training iteration"),
                             ("iteration_coco", "R50 COCO training iteration")):
        part = report["parts"].get(part_name, {})
        results = part.get("results")
        if not results:
            continue
        lines += [f"## {title} ({part.get('batch')} x {part.get('size')} px)", "",
                  "| config | iteration ms | criterion ms | criterion share | criterion ops |", "|---|---|---|---|---|"]
        for name, res in results.items():
            lines.append(f"| {name} | {1e3 * res['total']:.1f} | {1e3 * res['criterion']:.1f} | "
                         f"{100 * res['criterion_share']:.1f}% | {res.get('criterion_ops', '')} |")
        lines.append("")
    training = {name[len("train_"):]: part["seconds_per_iteration"] for name, part in report["parts"].items()
                if name.startswith("train_") and "seconds_per_iteration" in part}
    if training:
        lines += ["## Synthetic training (tools/train_net.py, data loading included)", "",
                  "| config | s / iteration |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" if value is not None else f"| {name} | n/a |"
                  for name, value in training.items()]
        lines.append("")
    for name, part in report["parts"].items():
        if part.get("status") not in (0, None):
            lines.append(f"- {name}: {part['status']} (see report.json)")
    return "\n".join(lines) + "\n"


ARMS = ("hungarian", "influencer", "hungarian_hybrid", "influencer_hybrid")
SYNTHETIC = [f"configs/synthetic/{name}.py" for name in ARMS]
COCO = [f"configs/coco/{name}.py" for name in ARMS]


def plan_parts(python: str, device: str, scratch: Path, quick: bool, train_iters: int) -> List[Dict]:
    """The parts in the order they run (most wanted first), each with its own time limit."""
    tiny = ["--queries", "12", "--instances", "3", "--points", "256", "--layers", "2", "--image-size", "64"]
    bench = [python, "tools/benchmark_criterion.py", "--device", device]
    bench += tiny + ["--repeats", "1"] if quick else ["--repeats", "15"]
    cost = [python, "tools/iteration_cost.py", "--device", device]
    parts = [
        dict(name="criterion", timeout=240, json=scratch / "criterion.json",
             command=bench + (["--cuda-graph"] if device == "cuda" else [])),
        dict(name="iteration_synthetic", timeout=240, json=scratch / "iteration_synthetic.json", detectron2=True,
             command=cost + ["--config-files", *SYNTHETIC, "--size", "128", "--batch", "8"]
             + (["--iters", "1"] if quick else ["--iters", "20", "--warmup", "3"])),
        dict(name="iteration_coco", timeout=300, json=scratch / "iteration_coco.json", detectron2=True,
             command=cost + (["--config-files", *COCO[:2], "--size", "128", "--iters", "1"] if quick else
                             ["--config-files", *COCO, "--size", "1024", "--batch", "2", "--iters", "10",
                              "--warmup", "2"])),
        dict(name="criterion_compiled", timeout=420, json=scratch / "criterion_compiled.json",
             command=bench + ["--compile"]),
    ]
    for config in SYNTHETIC[:2]:
        name = Path(config).stem
        parts.append(dict(name=f"train_{name}", timeout=300, detectron2=True,
                          metrics=scratch / f"train_{name}" / "metrics.json",
                          command=[python, "tools/train_net.py", "--config-file", config,
                                   f"train.output_dir={scratch / f'train_{name}'}",
                                   f"train.max_iter={4 if quick else train_iters}", "train.eval_period=0",
                                   "train.checkpointer.period=100000", "train.log_period=20"]))
    for part in parts:
        if "json" in part:
            part["command"] += ["--json", str(part["json"])]
    return parts


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and report.md")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--train-iters", type=int, default=300)
    parser.add_argument("--budget-s", type=float, default=1800.0,
                        help="stop starting parts when this much time has passed; each part's limit is cut to fit")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of this script")
    parser.add_argument("--force", action="store_true", help="overwrite an existing report in --out")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if (args.out / "report.json").exists() and not args.force:
        parser.error(f"{args.out / 'report.json'} exists; pass --force to overwrite it or choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget_s
    has_detectron2 = detectron2_available()
    report = {"device": device, "machine": machine_info([torch.device(device)]), "quick": args.quick,
              "budget_s": args.budget_s, "parts": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for part in plan_parts(sys.executable, device, Path(scratch), args.quick, args.train_iters):
            left = deadline - time.time()
            if part.get("detectron2") and not has_detectron2:
                result = {"status": "skipped: detectron2 is not importable"}
            elif left < 30:
                result = {"status": f"skipped: {left:.0f} s of the budget left"}
            else:
                result = run_part(part["name"], part["command"], timeout=min(part["timeout"], left - 10))
                if part.get("json") and part["json"].is_file():  # written as it goes: a stopped part keeps its rows
                    measured = json.loads(part["json"].read_text())
                    if "records" in measured:
                        result["records"] = measured["records"]
                    else:
                        result.update({key: measured.get(key) for key in ("results", "batch", "size")})
                if part.get("metrics"):
                    result["seconds_per_iteration"] = seconds_per_iteration(part["metrics"], skip=0 if args.quick else 50)
            report["parts"][part["name"]] = result
            write_json(args.out / "report.json", report)  # after every part: a stopped run keeps what it measured
            write_text_atomic(args.out / "report.md", markdown(report))
    text = markdown(report)
    print(text)
    return report


if __name__ == "__main__":
    main()
