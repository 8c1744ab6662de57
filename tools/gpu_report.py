#!/usr/bin/env python
"""One command for whoever has a GPU: the criterion's cost against Hungarian's, three ways.

    python tools/gpu_report.py --out docs/benchmarks/gpu_report      # on a CUDA machine, ~6 minutes

Runs, each in its own process with a time limit (a part that fails is reported, the rest still run):

1. ``tools/benchmark_criterion.py`` at the two target scales (COCO dense, S3DIS points): Hungarian,
   the default Influencer criterion eager, under ``torch.compile`` and as a CUDA graph;
2. ``tools/iteration_cost.py``: a whole training iteration of the R50 COCO model at 1024 px
   (needs detectron2);
3. ``tools/train_net.py`` for ``--train-iters`` iterations of ``configs/synthetic/{hungarian,
   influencer}.py`` (needs detectron2; the synthetic data is generated first if missing): seconds
   per training iteration from detectron2's ``metrics.json``.

Writes ``report.json`` (every part's output and the machine) and ``report.md`` (the tables) into
``--out``; refuses to overwrite an existing report without ``--force``. ``--quick`` runs tiny sizes
(a smoke test of the script itself, on any device).
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
    lines = [f"# GPU report ({report['machine'].get('date', '')}, commit {report['machine'].get('commit', '')})", "",
             f"Device: {report['machine'].get('gpu', report['device'])}", ""]
    bench = report["parts"].get("criterion", {}).get("records")
    if bench:
        lines += ["## Criterion forward + backward", "",
                  "| config | criterion | ms | time / hungarian | ops / syncs |", "|---|---|---|---|---|"]
        for record in bench:
            if record.get("skipped"):
                continue
            cfg = record["config"]
            label = f"{cfg['form']} Q={cfg['queries']} K={cfg['instances']} P={cfg['points']} L={cfg['layers']}"
            for name, res in record["results"].items():
                ops = f"{res['ops']} / {res['syncs']}" if "ops" in res else "graph replay"
                lines.append(f"| {label} ({record['device']}) | {name} | {res['ms']:.1f} | "
                             f"{res['time_ratio_vs_hungarian']:.2f}x | {ops} |")
        lines.append("")
    iteration = report["parts"].get("iteration_cost", {}).get("results")
    if iteration:
        lines += ["## R50 COCO training iteration", "", "| config | iteration s | criterion s | criterion share |",
                  "|---|---|---|---|"]
        for name, res in iteration.items():
            lines.append(f"| {name} | {res['total']:.3f} | {res['criterion']:.3f} | {100 * res['criterion_share']:.1f}% |")
        lines.append("")
    training = report["parts"].get("training", {})
    if training.get("seconds_per_iteration"):
        lines += ["## Synthetic training (tools/train_net.py)", "", "| config | s / iteration |", "|---|---|"]
        for name, value in training["seconds_per_iteration"].items():
            lines.append(f"| {name} | {value:.3f} |" if value is not None else f"| {name} | n/a |")
        lines.append("")
    for name, part in report["parts"].items():
        if part.get("status") not in (0, None):
            lines.append(f"- {name}: exit {part['status']} (see report.json)")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and report.md")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--train-iters", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of this script")
    parser.add_argument("--force", action="store_true", help="overwrite an existing report in --out")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if (args.out / "report.json").exists() and not args.force:
        parser.error(f"{args.out / 'report.json'} exists; pass --force to overwrite it or choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    parts: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        bench = [python, "tools/benchmark_criterion.py", "--device", device, "--json", str(scratch / "criterion.json"),
                 "--compile"] + (["--cuda-graph"] if device == "cuda" else [])
        bench += (["--queries", "12", "--instances", "3", "--points", "256", "--layers", "2", "--image-size", "64",
                   "--repeats", "1"] if args.quick else ["--repeats", "15"])
        parts["criterion"] = run_part("criterion", bench, timeout=900)
        if (scratch / "criterion.json").is_file():
            parts["criterion"]["records"] = json.loads((scratch / "criterion.json").read_text())["records"]
        if not detectron2_available():
            parts["iteration_cost"] = parts["training"] = {"status": "skipped: detectron2 is not importable"}
        else:
            cost = [python, "tools/iteration_cost.py", "--device", device, "--json", str(scratch / "iteration.json")]
            cost += ["--size", "128", "--iters", "1"] if args.quick else ["--size", "1024", "--batch", "2", "--iters", "10"]
            parts["iteration_cost"] = run_part("iteration_cost", cost, timeout=600)
            if (scratch / "iteration.json").is_file():
                parts["iteration_cost"]["results"] = json.loads((scratch / "iteration.json").read_text())["results"]
            iters = 4 if args.quick else args.train_iters
            training: Dict = {"seconds_per_iteration": {}, "runs": {}}
            for name in ("hungarian", "influencer"):
                out = scratch / f"train_{name}"
                command = [python, "tools/train_net.py", "--config-file", f"configs/synthetic/{name}.py",
                           f"train.output_dir={out}", f"train.max_iter={iters}", "train.eval_period=0",
                           "train.checkpointer.period=100000", "train.log_period=20"]
                training["runs"][name] = run_part(f"train {name}", command, timeout=600)
                training["seconds_per_iteration"][name] = seconds_per_iteration(out / "metrics.json",
                                                                                skip=0 if args.quick else 50)
            parts["training"] = training
    report = {"device": device, "machine": machine_info([torch.device(device)]), "quick": args.quick, "parts": parts}
    write_json(args.out / "report.json", report)
    text = markdown(report)
    write_text_atomic(args.out / "report.md", text)
    print(text)
    return report


if __name__ == "__main__":
    main()
