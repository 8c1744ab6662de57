#!/usr/bin/env python
"""Write docs/results.md from measured artefacts only: nothing on the page is typed by hand.

    python research/results_page.py --ab output/ab --iteration-cost docs/results/iteration_cost_cpu_*.json \\
        --mask-quality docs/results/mask_quality.json --small-model docs/results/small_query_model_*.json \\
        --output docs/results.md

* ``--ab``: a research/run_ab.py output folder (``<arm>_seed<N>`` runs). Its plots and tables are
  written by research/compare_runs.py next to the page (``<output stem>/``), and the page states
  the issue's targets -- final segm AP >= 100% of Hungarian's, 90% of it reached in <= 0.7x
  Hungarian's iterations -- as met or not, per arm.
* ``--fine-eval``: another run_ab.py folder, evaluated more often: its own table and targets
  (the iteration at which 90% of Hungarian's final AP is first reached is only as fine as the grid).
* ``--iteration-cost``: JSONs of tools/iteration_cost.py, one table each (repeated measurements
  show the machine's spread); target: the Influencer criterion's share of the iteration <= half
  of Hungarian's.
* ``--mask-quality``: JSONs of research/mask_quality.py (IoU / recall / precision per instance size).
* ``--small-model``: JSON files of research/small_query_model.py (one row per criterion and variant).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research import compare_runs  # noqa: E402
from research.mask_quality import format_table  # noqa: E402
from tools.provenance import git_commit, machine_info, write_text_atomic  # noqa: E402

REFERENCE = "hungarian"


PROVENANCE = ("Provenance of the runs (run each command at its commit: the config files it names may have "
              "changed since):")


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def load_arms(run_folder: Path, option: str) -> Dict[str, List[compare_runs.Run]]:
    """The runs in ``run_folder`` (research/run_ab.py output), grouped by arm."""
    run_dirs = sorted(p for p in run_folder.iterdir() if (p / "metrics.json").is_file())
    if not run_dirs:
        raise SystemExit(f"{option} {run_folder}: no run folders with metrics.json")
    arms: Dict[str, List[compare_runs.Run]] = {}
    for path in run_dirs:
        run = compare_runs.Run(path)
        arms.setdefault(run.arm, []).append(run)
    return arms


def ab_section(ab_dir: Path, page_dir: Path, figures: Path, focus: Sequence[str] = ()) -> List[str]:
    arms = load_arms(ab_dir, "--ab")
    missing = sorted(set(focus) - set(arms))
    if missing:
        raise SystemExit(f"--focus names arms that {ab_dir} does not have: {missing}; it has {sorted(arms)}")
    figures.mkdir(parents=True, exist_ok=True)
    plots = compare_runs.write_plots(arms, figures, REFERENCE)
    focus_plots = []
    if focus:  # the same plots for the reference and the named arms only, readable at a glance
        focused = {arm: runs for arm, runs in arms.items() if arm in focus or arm == REFERENCE}
        (figures / "focus").mkdir(exist_ok=True)
        focus_plots = compare_runs.write_plots(focused, figures / "focus", REFERENCE)
    lines = ["## Synthetic Mask2Former A/B", "",
             f"Runs in `{ab_dir}` ({', '.join(f'{a}: {len(r)}' for a, r in sorted(arms.items()))} seeds). "
             "Final = the last evaluation of each run; mean ± standard deviation over seeds.", "",
             compare_runs.summary_table(arms, REFERENCE), ""]
    lines += target_lines(arms)
    rel = figures.relative_to(page_dir) if figures.is_relative_to(page_dir) else figures
    if focus_plots:
        lines += [f"Hungarian and {', '.join(focus)} alone:", ""]
        lines += [f"![{p.stem}]({rel / 'focus' / p.name})" for p in focus_plots] + ["", "Every arm:", ""]
    lines += [f"![{p.stem}]({rel / p.name})" for p in plots]
    lines += ["", PROVENANCE, "", compare_runs.provenance_table(arms), ""] + provenance_notes(ab_dir)
    return lines


def target_lines(arms: Dict) -> List[str]:
    """The issue's two A/B targets, each arm against Hungarian, and a one-line summary."""
    ref = arms.get(REFERENCE)
    if not ref:
        return []
    lines = []
    ref_final = _mean(r.final("segm/AP") for r in ref)
    target = 0.9 * ref_final if ref_final is not None else None
    ref_reach = _mean(r.first_reaching("segm/AP", target) for r in ref) if target is not None else None
    lines += ["Targets (issue 5), each arm against Hungarian:", ""]
    at_least, faster = [], []
    for arm, runs in sorted(arms.items()):
        if arm == REFERENCE:
            continue
        final = _mean(r.final("segm/AP") for r in runs)
        reach = [r.first_reaching("segm/AP", target) for r in runs] if target is not None else []
        ratio = None if final is None or not ref_final else final / ref_final
        verdict = "met" if ratio is not None and ratio >= 1.0 else "NOT met"
        if verdict == "met":
            at_least.append(arm)
        line = f"* **{arm}**: final segm AP {('–' if final is None else f'{final:.2f}')} = " \
               f"{('–' if ratio is None else f'{100 * ratio:.0f}%')} of Hungarian's (target ≥ 100%: {verdict})"
        if reach and all(r is not None for r in reach) and ref_reach:
            speed = statistics.mean(reach) / ref_reach
            line += f"; reaches 90% of it at {speed:.2f}x Hungarian's iterations (target ≤ 0.7x: " \
                    f"{'met' if speed <= 0.7 else 'NOT met'})"
            if speed <= 0.7:
                faster.append(arm)
        else:
            missed = sum(r is None for r in reach)
            line += f"; {missed} of {len(reach)} runs never reach 90% of Hungarian's final AP " \
                    "(target ≤ 0.7x of its iterations: NOT met)"
        lines.append(line)
    others = len(arms) - 1
    lines += ["", f"In short: {len(at_least)} of {others} arms reach Hungarian's final segm AP "
              f"({', '.join(at_least) or 'none'}); {len(faster)} of {others} reach 90% of it in at most 0.7x "
              f"its iterations ({', '.join(faster) or 'none'}); every other arm ends below Hungarian.", ""]
    return lines


def fine_eval_section(fine_dir: Path, page_dir: Path, figures: Path) -> List[str]:
    """An A/B evaluated more often, for the iterations-to-90% target (the main A/B's grid is coarse)."""
    arms = load_arms(fine_dir, "--fine-eval")
    figures.mkdir(parents=True, exist_ok=True)
    plots = [p for p in compare_runs.write_plots(arms, figures, REFERENCE) if p.stem.startswith("ap_vs")]
    rel = figures.relative_to(page_dir) if figures.is_relative_to(page_dir) else figures
    return (["## Iterations to 90% of Hungarian's final AP, on a finer evaluation grid", "",
             f"Runs in `{fine_dir}` ({', '.join(f'{a}: {len(r)}' for a, r in sorted(arms.items()))} seeds), "
             "the same configs as the A/B above with more frequent evaluations (each run's overrides are in "
             "the provenance table).", "", compare_runs.summary_table(arms, REFERENCE), ""]
            + target_lines(arms) + [f"![{p.stem}]({rel / p.name})" for p in plots]
            + ["", PROVENANCE, "", compare_runs.provenance_table(arms), ""] + provenance_notes(fine_dir))


def provenance_notes(run_folder: Path) -> List[str]:
    """A pointer to the hand-written ``PROVENANCE.md`` of a run folder, when it has one (corrections
    to what the runner recorded)."""
    notes = run_folder / "PROVENANCE.md"
    return [f"Corrections to this table, written by hand: `{notes}`.", ""] if notes.is_file() else []


def screen_section(screen_dir: Path) -> List[str]:
    """Short runs whose point is the assignment diagnostics early in training."""
    arms = load_arms(screen_dir, "--screen")
    return ["## Early training: how many queries the model uses (short screening runs)", "",
            f"Runs in `{screen_dir}`: the same configs as the A/B, stopped early (the command of each run "
            "is below; its learning-rate steps move with `train.max_iter`), with the assignment diagnostics "
            "logged often on more probe images. `queries_in_use`: share of the queries that are the best "
            "query (by mask IoU) of some instance of the probe images; `unique_best_share`: share of "
            "instances whose best query is no other instance's; `owner_iou`: mean IoU of each instance's "
            "owner (Influencer) or matched query (Hungarian).", "",
            compare_runs.diagnostics_table(arms), "", PROVENANCE, "",
            compare_runs.provenance_table(arms), ""]


def iteration_cost_section(paths: List[Path]) -> List[str]:
    """One table per measurement: repeated runs on a shared machine show its spread."""
    lines = ["## Whole-iteration cost", ""]
    if len(paths) > 1:
        lines += [f"{len(paths)} measurements, each a separate run of the tool (the COCO R50 model unless the "
                  "command names other configs; the target is stated for the COCO model).", ""]
    lines += ["`criterion ops`: operators one criterion forward + backward dispatches (about one kernel launch "
              "each on a GPU); before commit 766dfc5 the tool also counted views, allocations and no-op "
              "conversions.", ""]
    for path in paths:
        lines += _iteration_cost_measurement(path)
    return lines


def _iteration_cost_measurement(path: Path) -> List[str]:
    report = json.loads(path.read_text())
    results = report["results"]
    machine = report.get("machine", {})
    lines = [f"`python tools/{report['command']}` — {report['device']}"
             f"{' (' + machine['gpu'] + ')' if machine.get('gpu') else ''}, {report['batch']} images of "
             f"{report['size']}x{report['size']}, instances per image {report['instances']}, median of "
             f"{report['iters']} iterations; {machine.get('date', '?')}, commit {machine.get('commit', '?')}, "
             f"{machine.get('cpu_count', '?')} CPUs, {machine.get('torch_threads', '?')} torch threads.", "",
             "| config | forward | criterion fwd | criterion bwd | network bwd | optimiser | iteration "
             "| criterion share | criterion ops |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        ops = r.get("criterion_ops", "not counted")  # measurements before the tool counted them
        lines.append(f"| {name} | {r['forward']:.3f} s | {r['criterion_forward']:.3f} s | {r['criterion_backward']:.3f} s | "
                     f"{r['network_backward']:.3f} s | {r['optimizer']:.3f} s | {r['total']:.3f} s | "
                     f"{100 * r['criterion_share']:.1f}% | {ops} |")
    if REFERENCE in results:
        h = results[REFERENCE]
        lines.append("")
        for name, i in results.items():
            if name == REFERENCE:
                continue
            share_ratio = i["criterion_share"] / h["criterion_share"]
            coco = "--config-files" not in report["command"] or "configs/coco/" in report["command"]
            verdict = f" (target ≤ 0.5: {'met' if share_ratio <= 0.5 else 'NOT met'})" if coco else ""
            lines.append(f"* {name}: the criterion takes {i['criterion'] / h['criterion']:.2f}x Hungarian's criterion "
                         f"time; its share of the iteration is {share_ratio:.2f}x Hungarian's{verdict}"
                         + (f"; it dispatches {i['criterion_ops'] / h['criterion_ops']:.2f}x Hungarian's operators "
                            "(kernel launches on a GPU)." if "criterion_ops" in i and "criterion_ops" in h else "."))
    return lines + [""]


def recorded_command(command: str) -> str:
    """A measurement's recorded command as a path from the repository root: reports written before
    the instruments moved to research/ name the script alone, which then lived in tools/."""
    return command if "/" in command.split(" ", 1)[0] else f"tools/{command}"


def small_model_section(paths: List[Path]) -> List[str]:
    lines = ["## Small query model (research/small_query_model.py)", "",
             "A variant lists its keywords of the core loss; \"default\" is the core's defaults at the commit "
             "that measured it (reports without one predate 2026-12-03, whose default plan was 10 plain "
             "Sinkhorn steps; it is 40 annealed ones since).", "",
             "| criterion | variant | steps | seed | commit | mean best-IoU | best-IoU, any query | precision | "
             "recall | instances with duplicates |", "|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        report = json.loads(path.read_text())
        args = report["args"]
        commit = report.get("machine", {}).get("commit", "?")
        for name, m in report["results"].items():
            kwargs = m.get("kwargs", {} if name == "hungarian" else args.get("influencer", {}))
            variant = ",".join(f"{k}={v}" for k, v in sorted(kwargs.items())) or ("–" if name == "hungarian" else "default")
            lines.append(f"| {m.get('criterion', name)} | {variant} | {args['steps']} | {args['seed']} | {commit} | "
                         f"{m['mean_best_iou']:.3f} | {m['mask_best_iou_any_query']:.3f} | {m['precision']:.3f} | "
                         f"{m['recall']:.3f} | {m['instances_with_duplicates']:.3f} |")
    return lines + [""]


def mask_quality_section(paths: List[Path]) -> List[str]:
    lines = ["## Mask quality per instance size (research/mask_quality.py)", "",
             "Per GT instance of the test images, the best query by IoU among those inference keeps "
             "(objectness above the threshold); sizes are area terciles. Its area outside the instance "
             "(1 - precision) is split into the part on other instances (merges) and on the background "
             "(bloat). Means include missed instances, whose best query may cover little of them.", ""]
    for path in paths:
        report = json.loads(path.read_text())
        machine = report.get("machine", {})
        lines += [f"`python {recorded_command(report['command'])}` — {report['images']} images, objectness > "
                  f"{report['confident']}; {machine.get('date', '?')}, commit {machine.get('commit', '?')}.", "",
                  format_table({Path(run).name: res for run, res in report["results"].items()}), ""]
    return lines


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ab", type=Path, help="research/run_ab.py output folder")
    parser.add_argument("--focus", nargs="*", default=[], metavar="ARM",
                        help="arms of --ab also plotted alone with Hungarian, first")
    parser.add_argument("--fine-eval", type=Path, default=None,
                        help="research/run_ab.py output folder of an A/B evaluated more often (iterations to 90%%)")
    parser.add_argument("--screen", type=Path, default=None,
                        help="research/run_ab.py output folder of short screening runs (diagnostics table)")
    parser.add_argument("--iteration-cost", type=Path, nargs="*", default=[], help="tools/iteration_cost.py JSONs")
    parser.add_argument("--mask-quality", type=Path, nargs="*", default=[], help="research/mask_quality.py JSONs")
    parser.add_argument("--small-model", type=Path, nargs="*", default=[], help="research/small_query_model.py JSONs")
    parser.add_argument("--output", type=Path, default=Path("docs/results.md"))
    args = parser.parse_args(argv)
    for path in [args.ab, args.fine_eval, args.screen, *args.iteration_cost, *args.mask_quality, *args.small_model]:
        if path is not None and not path.exists():
            parser.error(f"{path} does not exist")
    info = machine_info()
    command = "python research/results_page.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# Results: Influencer vs Hungarian, measured", "",
             "Generated by `research/results_page.py` from the artefacts named in each section; do not edit by "
             "hand — rerun the tools and this page.", "",
             f"`{command}` — {info['date']}, commit {git_commit()}, host {info['host']}.", ""]
    page_dir = args.output.parent
    if args.ab:
        lines += ab_section(args.ab, page_dir, page_dir / args.output.stem / "ab", args.focus)
    if args.fine_eval:
        lines += fine_eval_section(args.fine_eval, page_dir, page_dir / args.output.stem / "fine_eval")
    if args.screen:
        lines += screen_section(args.screen)
    if args.iteration_cost:
        lines += iteration_cost_section(args.iteration_cost)
    if args.mask_quality:
        lines += mask_quality_section(args.mask_quality)
    if args.small_model:
        lines += small_model_section(args.small_model)
    text = "\n".join(lines)
    write_text_atomic(args.output, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
