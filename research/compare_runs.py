#!/usr/bin/env python
"""Compare training runs (Influencer vs Hungarian, several seeds) from detectron2's metrics.json.

    python research/compare_runs.py output/ab/influencer_seed0 output/ab/hungarian_seed0 ... --output docs/results

Each RUN_DIR holds detectron2's ``metrics.json`` (one JSON object per line) and, when written by
``research/run_ab.py``, a ``run_info.json`` naming its arm (criterion) and seed; otherwise the arm is
the folder name without a trailing ``_seed<N>``. Writes PNG plots -- segm AP / AP50 / AP75
against iteration and against wall-clock time, total and per-term losses, assignment
diagnostics, each as mean ± spread over seeds -- and ``results.md``: final AP per arm, the
iteration at which each arm first reaches 90% of the reference arm's final AP, seconds per
iteration.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.provenance import write_text_atomic  # noqa: E402

AP_KEYS = ("segm/AP", "segm/AP50", "segm/AP75")
DIAG_PREFIX = "diag/"


class Run:
    """One training run: its arm, seed and logged series."""

    def __init__(self, path: Path):
        self.path = path
        metrics = path / "metrics.json"
        if not metrics.is_file():
            raise FileNotFoundError(f"{path}: no metrics.json (is this a detectron2 output folder?)")
        self.rows: List[dict] = []
        for n, line in enumerate(metrics.read_text().splitlines(), 1):
            if line.strip():
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{metrics}:{n}: not JSON ({err})") from None
        info_file = path / "run_info.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        self.info = info
        match = re.match(r"(.*?)(?:_seed(\d+))?$", path.name)
        self.arm = info.get("arm") or match.group(1)
        self.seed = info.get("seed", int(match.group(2)) if match.group(2) else 0)

    def series(self, key: str) -> List[tuple]:
        """``[(iteration, value)]`` for rows that log ``key``."""
        return [(r["iteration"], r[key]) for r in self.rows if key in r and "iteration" in r
                and isinstance(r[key], (int, float)) and math.isfinite(r[key])]

    def keys(self) -> set:
        return {k for r in self.rows for k in r}

    def seconds_per_iter(self) -> Optional[float]:
        times = [v for _, v in self.series("time")]
        return statistics.median(times) if times else None

    def wall_clock(self) -> Dict[int, float]:
        """Iteration -> seconds since start, integrating the logged per-iteration ``time``."""
        out, total, last = {0: 0.0}, 0.0, 0
        for it, t in self.series("time"):
            total += t * (it - last)
            out[it] = total
            last = it
        return out

    def final(self, key: str) -> Optional[float]:
        values = self.series(key)
        return values[-1][1] if values else None

    def first_reaching(self, key: str, threshold: float) -> Optional[int]:
        for it, value in self.series(key):
            if value >= threshold:
                return it
        return None


def mean_spread(values: List[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summary_table(arms: Dict[str, List[Run]], reference: str, order: Optional[Sequence[str]] = None,
                  labels: Optional[Dict[str, str]] = None) -> str:
    """Final AP per arm and the iterations to 90% of ``reference``'s; rows in ``order`` (default:
    sorted), each arm shown as ``labels[arm]`` when given."""
    labels = labels or {}
    ref_final = [r.final("segm/AP") for r in arms.get(reference, [])]
    ref_final = [v for v in ref_final if v is not None]
    target = 0.9 * statistics.mean(ref_final) if ref_final else None
    lines = [f"| arm | runs | final segm AP | AP50 | AP75 | iteration reaching 90% of {reference}'s final AP"
             f"{f' ({target:.2f})' if target is not None else ''} | s / iteration |",
             "|---|---|---|---|---|---|---|"]
    for arm in (order if order is not None else sorted(arms)):
        runs = arms[arm]
        reach = [r.first_reaching("segm/AP", target) for r in runs] if target is not None else []
        reach_txt = ", ".join("never" if it is None else str(it) for it in reach) or "–"
        spi = [r.seconds_per_iter() for r in runs]
        lines.append(f"| {labels.get(arm, arm)} | {len(runs)} | {mean_spread([r.final('segm/AP') for r in runs])} | "
                     f"{mean_spread([r.final('segm/AP50') for r in runs])} | "
                     f"{mean_spread([r.final('segm/AP75') for r in runs])} | {reach_txt} | "
                     f"{mean_spread(spi) if any(s is not None for s in spi) else '–'} |")
    return "\n".join(lines)


DIAG_TABLE_KEYS = ("diag/queries_in_use", "diag/unique_best_share", "diag/owner_iou")


def diagnostics_table(arms: Dict[str, List[Run]], keys=DIAG_TABLE_KEYS) -> str:
    """One row per arm: each diagnostic's series over its logging iterations (mean over seeds),
    and the final segm AP. Runs without a key show "–" for it."""
    lines = ["| arm | runs | logged at iterations | " + " | ".join(k[len(DIAG_PREFIX):] if k.startswith(DIAG_PREFIX)
                                                         else k for k in keys) + " | final segm AP |",
             "|---|---|---|" + "---|" * len(keys) + "---|"]
    for arm, runs in sorted(arms.items()):
        cells, iterations = [], []
        for key in keys:
            per_iter: Dict[int, List[float]] = {}
            for run in runs:
                for it, value in run.series(key):
                    per_iter.setdefault(it, []).append(value)
            iterations = iterations or sorted(per_iter)
            cells.append(" / ".join(f"{statistics.mean(per_iter[it]):.2f}" for it in sorted(per_iter)) or "–")
        lines.append(f"| {arm} | {len(runs)} | {' / '.join(map(str, iterations)) or '–'} | " + " | ".join(cells)
                     + f" | {mean_spread([r.final('segm/AP') for r in runs])} |")
    return "\n".join(lines)


def provenance_table(arms: Dict[str, List[Run]]) -> str:
    """Where each run comes from (``run_info.json`` of research/run_ab.py): commit, host, threads,
    wall time, command."""
    lines = ["| arm | seed | commit | host | threads | wall time | command |", "|---|---|---|---|---|---|---|"]
    for arm, runs in sorted(arms.items()):
        for r in sorted(runs, key=lambda r: r.seed):
            wall = r.info.get("wall_s")
            lines.append(f"| {arm} | {r.seed} | {r.info.get('commit', '–')} | {r.info.get('host', '–')} | "
                         f"{r.info.get('threads', '–')} | {'–' if wall is None else f'{wall / 60:.1f} min'} | "
                         f"`{r.info.get('command', '–')}` |")
    return "\n".join(lines)


def _plot_band(ax, runs: List[Run], key: str, label: str, x_of=None, **style):
    """Mean over seeds with a min–max band, on the iterations every seed logged."""
    per_run = []
    for r in runs:
        pts = r.series(key)
        if x_of is not None:
            clock = r.wall_clock()
            pts = [(clock.get(it, math.nan), v) for it, v in pts]
        per_run.append(dict(pts))
    if not any(per_run):
        return False
    xs = sorted(set.intersection(*[set(p) for p in per_run if p])) if all(per_run) else sorted(per_run[0])
    if x_of is not None:  # wall clock differs per seed: plot each run, no band
        for p in per_run:
            items = sorted(p.items())
            ax.plot([x for x, _ in items], [y for _, y in items], label=label, alpha=0.8, **style)
            label = None
        return True
    mean = [statistics.mean(p[x] for p in per_run if x in p) for x in xs]
    low = [min(p[x] for p in per_run if x in p) for x in xs]
    high = [max(p[x] for p in per_run if x in p) for x in xs]
    (line,) = ax.plot(xs, mean, label=label, **style)
    if len(runs) > 1:
        ax.fill_between(xs, low, high, alpha=0.2, color=line.get_color())
    return True


def write_plots(arms: Dict[str, List[Run]], output: Path, reference: str = "hungarian") -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # one colour per arm (tab10 repeats after ten); the reference in black
    palette = plt.get_cmap("tab20" if len(arms) > 10 else "tab10")
    others = [a for a in sorted(arms) if a != reference]
    styles = {a: {"color": palette(i % palette.N)} for i, a in enumerate(others)}
    styles[reference] = {"color": "black", "linewidth": 2.0}

    def grid(name: str, keys: List[str], x="iteration"):
        keys = [k for k in keys if any(k in r.keys() for runs in arms.values() for r in runs)]
        if not keys:
            return
        cols = min(3, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            for arm, runs in sorted(arms.items()):
                _plot_band(ax, runs, key, arm, x_of="time" if x == "time" else None, **styles.get(arm, {}))
            ax.set_title(key)
            ax.set_xlabel("wall-clock seconds" if x == "time" else "iteration")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.tight_layout()
        fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        path = output / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    all_keys = set().union(*(r.keys() for runs in arms.values() for r in runs))
    loss_keys = ["total_loss"] + sorted(k for k in all_keys if k.startswith("loss_") and not k[-1].isdigit())
    grid("ap_vs_iteration", list(AP_KEYS))
    grid("ap_vs_wallclock", list(AP_KEYS), x="time")
    grid("losses", loss_keys)
    grid("assignment_diagnostics", sorted(k for k in all_keys if k.startswith(DIAG_PREFIX)))
    return written


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--output", type=Path, required=True, help="folder for the PNGs and results.md")
    parser.add_argument("--reference", default="hungarian", help="arm whose final AP sets the 90%% target")
    args = parser.parse_args(argv)
    arms: Dict[str, List[Run]] = defaultdict(list)
    for path in args.runs:
        try:
            run = Run(path)
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
        arms[run.arm].append(run)
    if args.reference not in arms:
        print(f"warning: no run of the reference arm {args.reference!r}; arms: {sorted(arms)}", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    table = summary_table(arms, args.reference)
    plots = write_plots(arms, args.output, args.reference)
    report = (table + "\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n\n"
              + provenance_table(arms) + "\n")
    write_text_atomic(args.output / "results.md", report)
    print(table)
    print(f"wrote {len(plots)} plots and results.md to {args.output}")
    return report


if __name__ == "__main__":
    main()
