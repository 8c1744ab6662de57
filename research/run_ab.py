#!/usr/bin/env python
"""A/B runner: the arms of a comparison (default: configs/synthetic/{influencer,hungarian}.py) for
several seeds, identical in everything but what the arm changes.

    python research/run_ab.py                                       # 2 arms x seeds 0 1 2 -> output/ab
    python research/run_ab.py --seeds 0 --parallel 2 train.max_iter=200
    python research/run_ab.py --arm hungarian=configs/synthetic/hungarian.py \\
        --arm "excl0.1=configs/synthetic/influencer.py model.criterion.excl_weight=0.1"
    python research/run_ab.py ... --compare docs/results/synthetic     # then research/compare_runs.py

Each run is ``tools/train_net.py --config-file CONFIG train.seed=SEED train.output_dir=DIR``
plus the arm's and the command line's ``key=value`` overrides, in ``OUTPUT/<arm>_seed<SEED>``,
with its console output in ``train.log`` and ``run_info.json`` (arm, seed, config, overrides,
command, commit, wall time, status). The seed fixes the initial weights and the data order,
so two arms with one seed differ only in the criterion. A finished run (status "done") is
skipped when the runner is started again; an interrupted one resumes from its last checkpoint;
``--force`` reruns from scratch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tools.provenance import git_commit, write_json  # noqa: E402

DEFAULT_ARMS = ("influencer=configs/synthetic/influencer.py", "hungarian=configs/synthetic/hungarian.py")


@dataclass
class Arm:
    name: str
    config: str
    overrides: List[str] = field(default_factory=list)

    @classmethod
    def parse(cls, spec: str) -> "Arm":
        """``NAME=CONFIG [key=value ...]``."""
        words = shlex.split(spec)
        name, sep, config = words[0].partition("=") if words else ("", "", "")
        if not sep or not name or not config:
            raise ValueError(f"arm {spec!r}: expected 'NAME=CONFIG [key=value ...]'")
        if "_seed" in name or "/" in name:
            raise ValueError(f"arm name {name!r} may not contain '_seed' or '/'")
        bad = [w for w in words[1:] if "=" not in w]
        if bad:
            raise ValueError(f"arm {name!r}: overrides must be key=value; got {bad}")
        return cls(name, config, words[1:])


@dataclass
class PlannedRun:
    arm: Arm
    seed: int
    out_dir: Path
    command: List[str]
    resume: bool = False


def read_info(out_dir: Path) -> Dict:
    try:
        return json.loads((out_dir / "run_info.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_info(out_dir: Path, info: Dict) -> None:
    write_json(out_dir / "run_info.json", info)


def plan(arms: List[Arm], seeds: List[int], output: Path, overrides: List[str], train_script: Path,
         force: bool) -> List[PlannedRun]:
    """The runs still to do, in seed-major order (both arms of a seed finish close together)."""
    runs = []
    for seed in seeds:
        for arm in arms:
            out_dir = output / f"{arm.name}_seed{seed}"
            info = read_info(out_dir)
            if out_dir.exists() and force:
                shutil.rmtree(out_dir)
            elif info.get("status") == "done":
                continue
            command = [sys.executable, str(train_script), "--config-file", arm.config,
                       *arm.overrides, *overrides, f"train.seed={seed}", f"train.output_dir={out_dir}"]
            resume = (out_dir / "last_checkpoint").is_file()
            if resume:
                command.insert(2, "--resume")
            runs.append(PlannedRun(arm, seed, out_dir, command, resume))
    return runs


def final_metric(out_dir: Path, key: str = "segm/AP") -> Optional[float]:
    value = None
    try:
        for line in (out_dir / "metrics.json").read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if key in row:
                    value = row[key]
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value


def start(run: PlannedRun, threads: int, commit: Optional[str]) -> subprocess.Popen:
    """Launch one run; ``commit`` is the working tree's commit now, which the run imports."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    previous = read_info(run.out_dir)
    write_info(run.out_dir, {
        "arm": run.arm.name, "seed": run.seed, "config": run.arm.config,
        "overrides": run.arm.overrides, "command": shlex.join(run.command), "commit": commit,
        "host": platform.node(), "threads": threads, "status": "running",
        "started": previous.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": previous.get("wall_s", 0.0), "resumed": run.resume,
    })
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = open(run.out_dir / "train.log", "a")
    proc = subprocess.Popen(run.command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_file = log  # closed by finish()
    proc.started_at = time.time()
    return proc


def finish(run: PlannedRun, proc: subprocess.Popen) -> Dict:
    proc.log_file.close()
    info = read_info(run.out_dir)
    info["wall_s"] = round(info.get("wall_s", 0.0) + time.time() - proc.started_at, 1)
    info["returncode"] = proc.returncode
    info["status"] = "done" if proc.returncode == 0 else "failed"
    info["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info["final_segm_AP"] = final_metric(run.out_dir)
    write_info(run.out_dir, info)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", action="append", metavar="'NAME=CONFIG [key=value ...]'",
                        help=f"an arm (repeatable); default: {' and '.join(DEFAULT_ARMS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=Path("output/ab"))
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (threads are split between them)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: CPU count / --parallel)")
    parser.add_argument("--force", action="store_true", help="delete and rerun runs that already exist")
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="afterwards, run research/compare_runs.py on every run into DIR")
    parser.add_argument("--train-script", type=Path, default=REPO_ROOT / "tools" / "train_net.py",
                        help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every arm")
    args = parser.parse_args(argv)
    try:
        arms = [Arm.parse(spec) for spec in (args.arm or DEFAULT_ARMS)]
    except ValueError as err:
        parser.error(str(err))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        parser.error(f"arm names must be unique; got {names}")
    for arm in arms:
        if not (REPO_ROOT / arm.config).is_file() and not Path(arm.config).is_file():
            parser.error(f"arm {arm.name!r}: config file {arm.config!r} does not exist")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be key=value; got {bad}")
    if args.parallel < 1:
        parser.error("--parallel must be >= 1")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    output = args.output.resolve()
    runs = plan(arms, args.seeds, output, args.overrides, args.train_script, args.force)
    total = len(arms) * len(args.seeds)
    print(f"A/B: arms {names}, seeds {args.seeds}: {total - len(runs)} done, {len(runs)} to run "
          f"({args.parallel} at once, {threads} threads each) -> {output}", flush=True)
    first_commit = git_commit()
    pending, active, failed, count = list(runs), [], 0, total - len(runs)
    while pending or active:
        while pending and len(active) < args.parallel:
            run = pending.pop(0)
            # each run imports the working tree as it is when the run starts: record that commit
            commit = git_commit()
            changed = f" (the working tree is now at {commit}; the A/B started at {first_commit})" \
                if commit != first_commit else ""
            print(f"  start {run.arm.name} seed {run.seed}{' (resuming)' if run.resume else ''}{changed}", flush=True)
            active.append((run, start(run, threads, commit)))
        time.sleep(0.2)
        for run, proc in list(active):
            if proc.poll() is None:
                continue
            active.remove((run, proc))
            info = finish(run, proc)
            count += 1
            ap = info["final_segm_AP"]
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {run.out_dir / 'train.log'})"
            failed += proc.returncode != 0
            print(f"[{count}/{total}] {run.arm.name} seed {run.seed}: {status} in {info['wall_s']:.0f} s, "
                  f"final segm AP {'-' if ap is None else f'{ap:.2f}'} -> {run.out_dir}", flush=True)
    if args.compare:
        dirs = [str(output / f"{a.name}_seed{s}") for s in args.seeds for a in arms]
        cmd = [sys.executable, str(REPO_ROOT / "research" / "compare_runs.py"), *dirs, "--output", str(args.compare),
               "--reference", "hungarian" if "hungarian" in names else names[-1]]
        failed += subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
