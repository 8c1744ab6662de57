#!/usr/bin/env python
"""Write docs/results.md and docs/ablations.md from measured artefacts only: nothing on them is typed by hand.

    python research/results_page.py --ab output/ab --focus "influencer=influencer (default)" \\
        --criterion-benchmark docs/benchmarks/*.json --iteration-cost docs/results/iteration_cost_cpu_*.json \\
        --mask-quality docs/results/mask_quality.json --small-model docs/results/small_query_model_*.json \\
        --output docs/results.md

* ``--ab``: a research/run_ab.py output folder (``<arm>_seed<N>`` runs). The results page shows
  Hungarian and the ``--focus`` arms (``ARM`` or ``ARM=LABEL``, in that order) with their plots:
  final segm AP against Hungarian's, and the iterations each needs to reach 90% of Hungarian's
  final AP. Every arm, with the same tables and plots, goes on the ablation page (``--ablations``).
  Plots are written by research/compare_runs.py next to the page (``<output stem>/``).
* ``--fine-eval``: further run_ab.py folders, evaluated more often (the iteration at which 90% of
  Hungarian's final AP is first reached is only as fine as the grid): a table and plots each.
* ``--screen``: short screening runs (assignment diagnostics early in training; ablation page).
* ``--criterion-benchmark``: JSONs of tools/benchmark_criterion.py (the criterion alone, per device).
* ``--iteration-cost``: JSONs of tools/iteration_cost.py, one table each (repeated measurements
  show the machine's spread).
* ``--gpu-report``: ``report.json`` files of tools/gpu_report.py (criterion and iterations on a GPU).
* ``--mask-quality``: JSONs of research/mask_quality.py (IoU / recall / precision per instance size).
* ``--small-model``: JSON files of research/small_query_model.py (one row per criterion and variant).
"""
from __future__ import annotations

import argparse
import json
import shlex
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


def reference_arm(arms: Dict) -> Optional[str]:
    """``hungarian``, or else the only arm whose name starts with it (e.g. ``hungarian_hybrid``)."""
    if REFERENCE in arms:
        return REFERENCE
    candidates = [a for a in arms if a.startswith(REFERENCE)]
    return candidates[0] if len(candidates) == 1 else None


def parse_focus(items: Sequence[str]) -> Dict[str, str]:
    """``ARM`` or ``ARM=LABEL`` -> {arm: label}, in the given order."""
    return dict((item.split("=", 1) + [item])[:2] for item in items)


def labelled(arm: str, labels: Dict[str, str]) -> str:
    """The reader's name of an arm, with its folder name when they differ."""
    label = labels.get(arm, arm)
    return label if label == arm else f"{label} (`{arm}`)"


def _relative(figures: Path, page_dir: Path) -> Path:
    return figures.relative_to(page_dir) if figures.is_relative_to(page_dir) else figures


def _seeds(arms: Dict) -> str:
    return ", ".join(f"{a}: {len(r)}" for a, r in sorted(arms.items()))


def lead_section(ab_dir: Path, page_dir: Path, figures: Path, focus: Dict[str, str], ablations: str) -> List[str]:
    """Hungarian and the focus arms of the A/B, with their plots; the rest is on the ablation page."""
    arms = load_arms(ab_dir, "--ab")
    missing = sorted(set(focus) - set(arms))
    if missing:
        raise SystemExit(f"--focus names arms that {ab_dir} does not have: {missing}; it has {sorted(arms)}")
    labels = {REFERENCE: "Hungarian", **focus}
    order = [a for a in [REFERENCE, *focus] if a in arms]
    lead = {a: arms[a] for a in order}
    (figures / "focus").mkdir(parents=True, exist_ok=True)
    plots = compare_runs.write_plots(lead, figures / "focus", REFERENCE)
    rel = _relative(figures, page_dir)
    lines = ["## Synthetic Mask2Former A/B: Hungarian and the Influencer criterion", "",
             f"Runs in `{ab_dir}`, identical but for the criterion; the arms shown here "
             f"({', '.join(labelled(a, labels) for a in order)}). Final = the last evaluation of each run; "
             "mean ± standard deviation over seeds.", ""]
    if not any("original" in a for a in arms):
        lines += ["No arm of this A/B uses the original formulation (`formulation=\"original\"`); it is measured "
                  "in the criterion cost and small query model sections below.", ""]
    lines += [compare_runs.summary_table(lead, REFERENCE, order, labels), ""]
    lines += comparison_lines(lead, REFERENCE, order, labels)
    lines += [f"![{p.stem}]({rel / 'focus' / p.name})" for p in plots]
    lines += ["", f"Every other arm of this A/B ({len(arms) - len(lead)} ablations), with the same tables and "
              f"plots: [{ablations}]({ablations}).", "", PROVENANCE, "", compare_runs.provenance_table(lead), ""]
    return lines + provenance_notes(ab_dir)


def ablation_section(ab_dir: Path, page_dir: Path, figures: Path) -> List[str]:
    """Every arm of the A/B: table, comparison with Hungarian, plots, provenance."""
    arms = load_arms(ab_dir, "--ab")
    figures.mkdir(parents=True, exist_ok=True)
    plots = compare_runs.write_plots(arms, figures, REFERENCE)
    rel = _relative(figures, page_dir)
    lines = ["## Synthetic Mask2Former A/B: every arm", "",
             f"Runs in `{ab_dir}` ({_seeds(arms)} seeds). Final = the last evaluation of each run; mean ± "
             "standard deviation over seeds.", "",
             compare_runs.summary_table(arms, REFERENCE), ""]
    lines += comparison_lines(arms, REFERENCE)
    lines += [f"![{p.stem}]({rel / p.name})" for p in plots]
    lines += ["", PROVENANCE, "", compare_runs.provenance_table(arms), ""] + provenance_notes(ab_dir)
    return lines


def comparison_lines(arms: Dict, reference: Optional[str], order: Optional[Sequence[str]] = None,
                     labels: Optional[Dict[str, str]] = None) -> List[str]:
    """Each arm against the reference: final AP as a share of its final AP, and the iterations to
    reach 90% of it as a multiple of the reference's; then a one-line summary."""
    ref = arms.get(reference) if reference else None
    if not ref:
        return []
    labels = labels or {}
    name = "Hungarian" if reference == REFERENCE else reference
    ref_final = _mean(r.final("segm/AP") for r in ref)
    target = 0.9 * ref_final if ref_final is not None else None
    ref_reach = _mean(r.first_reaching("segm/AP", target) for r in ref) if target is not None else None
    lines = [f"Each arm against {name}:", "",
             f"| arm | final segm AP | final AP against {name}'s | iteration reaching 90% of {name}'s final AP "
             f"(mean) | iterations against {name}'s |", "|---|---|---|---|---|"]
    at_least, faster = [], []
    others = [a for a in (order if order is not None else sorted(arms)) if a != reference]
    for arm in others:
        runs = arms[arm]
        final = _mean(r.final("segm/AP") for r in runs)
        reach = [r.first_reaching("segm/AP", target) for r in runs] if target is not None else []
        ratio = None if final is None or not ref_final else final / ref_final
        if ratio is not None and ratio >= 1.0:
            at_least.append(arm)
        if reach and all(r is not None for r in reach) and ref_reach:
            speed = statistics.mean(reach) / ref_reach
            reach_txt, speed_txt = f"{statistics.mean(reach):.0f}", f"{speed:.2f}x"
            if speed <= 0.7:
                faster.append(arm)
        else:
            reach_txt, speed_txt = f"never in {sum(r is None for r in reach)} of {len(reach)} runs", "–"
        lines.append(f"| {labels.get(arm, arm)} | {('–' if final is None else f'{final:.2f}')} | "
                     f"{('–' if ratio is None else f'{100 * ratio:.0f}%')} | {reach_txt} | {speed_txt} |")
    lines += ["", f"In short: {len(at_least)} of {len(others)} arms reach {name}'s final segm AP "
              f"({', '.join(at_least) or 'none'}); {len(faster)} of {len(others)} reach 90% of it in at most 0.7x "
              f"its iterations ({', '.join(faster) or 'none'}); every other arm ends below {name}.", ""]
    return lines


def fine_eval_section(fine_dirs: Sequence[Path], page_dir: Path, figures: Path) -> List[str]:
    """A/Bs evaluated more often, for the iterations to 90% of Hungarian's final AP (the main
    A/B's grid is coarse): one table and plots per folder."""
    lines = ["## Iterations to 90% of Hungarian's final AP, on a finer evaluation grid", "",
             "The same comparison on A/Bs evaluated more often (the command of each run, with its overrides, "
             "is in its provenance table).", ""]
    for fine_dir in fine_dirs:
        arms = load_arms(fine_dir, "--fine-eval")
        reference = reference_arm(arms)
        folder = figures / fine_dir.name
        folder.mkdir(parents=True, exist_ok=True)
        plots = [p for p in compare_runs.write_plots(arms, folder, reference or REFERENCE)
                 if p.stem.startswith("ap_vs")]
        rel = _relative(folder, page_dir)
        lines += [f"### `{fine_dir}`", "", f"Runs: {_seeds(arms)} seeds.", "",
                  compare_runs.summary_table(arms, reference or REFERENCE), ""]
        lines += comparison_lines(arms, reference) + [f"![{p.stem}]({rel / p.name})" for p in plots]
        lines += ["", PROVENANCE, "", compare_runs.provenance_table(arms), ""] + provenance_notes(fine_dir)
    return lines


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


def table_head(*columns: str) -> List[str]:
    """A markdown table's header and separator rows."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def criterion_benchmark_section(paths: List[Path]) -> List[str]:
    """The criterion alone (tools/benchmark_criterion.py): one row per measured configuration and
    criterion, with the machine and commit that measured it."""
    lines = ["### The criterion alone", "",
             "Forward + backward of the criterion on random predictions, every decoder layer (`tools/"
             "benchmark_criterion.py`; Hungarian's time includes its matcher). Operators: those one step "
             "dispatches that compute something (about one kernel launch each on a GPU) / those that read "
             "device memory back to the host; counted since the batched criterion (a CPU profile does not "
             "see Hungarian's copies of its cost matrices to the host).", "",
             *table_head("device", "machine", "commit", "date", "setting", "criterion", "time",
                         "against Hungarian's", "operators / host syncs", "peak memory", "against Hungarian's")]
    for path in paths:
        report = json.loads(path.read_text())
        m = report.get("machine", {})
        for record in report["records"]:
            c = record["config"]
            setting = (f"{c['form']}, Q={c['queries']}, K={c['instances']}, "
                       + (f"{c['points']} points" if c["form"] == "point" else f"{c['image_size']} px images")
                       + f", {c['layers']} layers, batch {c['batch']}")
            device = record["device"]
            machine = m.get("gpu") if device == "cuda" and m.get("gpu") else \
                f"{m.get('host', '?')}, {m.get('cpu_count', '?')} CPUs, {m.get('torch_threads', '?')} threads"
            prefix = f"| {device} | {machine} (torch {m.get('torch', '?')}) | {m.get('commit', '?')} | " \
                     f"{m.get('date', '?')[:10]} | {setting} |"
            if record.get("skipped"):
                lines.append(f"{prefix} – | skipped (over the memory cap) | | | | |")
                continue
            for name, r in record["results"].items():
                time_ratio = r.get("time_ratio_vs_hungarian")
                mem_ratio = r.get("memory_ratio_vs_hungarian")
                peak = r.get("peak_mib")
                ops = f"{r['ops']} / {r['syncs']}" if "ops" in r else "–"
                lines.append(f"{prefix} {name} | {r['ms']:.0f} ms | {'–' if time_ratio is None else f'{time_ratio:.2f}x'}"
                             f" | {ops} | {'–' if peak is None else f'{peak:.0f} MiB'} | "
                             f"{'–' if mem_ratio is None else f'{mem_ratio:.2f}x'} |")
    return lines + [""]


def gpu_report_section(paths: List[Path]) -> List[str]:
    """Each tools/gpu_report.py report (its tables as the tool writes them), with its provenance note."""
    from tools.gpu_report import markdown

    lines = []
    for path in paths:
        report = json.loads(path.read_text())
        body = markdown(report).splitlines()
        m = report["machine"]
        lines += [f"### On a GPU: {m.get('gpu', report['device'])}, {m.get('date', '?')[:10]} ({path})", ""]
        provenance = path.parent / "PROVENANCE.md"
        if provenance.is_file():
            lines += [f"How it was run, and what each number is: [{provenance}]({provenance.relative_to('docs')})"
                      if provenance.parts[0] == "docs" else f"How it was run: {provenance}", ""]
        lines += [line.replace("## ", "#### ", 1) if line.startswith("## ") else line for line in body[1:]
                  if not line.startswith("Device:")]  # the heading names it
    return lines + [""]


def iteration_cost_section(paths: List[Path]) -> List[str]:
    """A summary row per measurement, then one table each: repeated runs on a shared machine show its spread."""
    lines = ["### A whole training iteration", ""]
    if len(paths) > 1:
        lines += [f"{len(paths)} measurements, each a separate run of `tools/iteration_cost.py` (the COCO R50 "
                  "model unless the command names other configs).", ""]
    lines += ["| measurement | device | commit | model | criterion | criterion time against Hungarian's | "
              "criterion share of the iteration against Hungarian's |", "|---|---|---|---|---|---|---|"]
    for path in paths:
        report = json.loads(path.read_text())
        results, machine = report["results"], report.get("machine", {})
        if REFERENCE not in results:
            continue
        h = results[REFERENCE]
        device = report["device"] + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        for name, r in results.items():
            if name != REFERENCE:
                lines.append(f"| `{path.name}` | {device} | {machine.get('commit', '?')} | "
                             f"{'COCO R50' if _is_coco(report) else 'synthetic'} | {name} | "
                             f"{r['criterion'] / h['criterion']:.2f}x | "
                             f"{r['criterion_share'] / h['criterion_share']:.2f}x |")
    lines += ["", "`criterion ops`: operators one criterion forward + backward dispatches (about one kernel launch "
              "each on a GPU); before commit 766dfc5 the tool also counted views, allocations and no-op "
              "conversions.", ""]
    for path in paths:
        lines += _iteration_cost_measurement(path)
    return lines


def _is_coco(report: dict) -> bool:
    return "--config-files" not in report["command"] or "configs/coco/" in report["command"]


def _iteration_cost_measurement(path: Path) -> List[str]:
    report = json.loads(path.read_text())
    results = report["results"]
    machine = report.get("machine", {})
    lines = [f"`python {recorded_command(report['command'])}` — {report['device']}"
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
            verdict = f" (at most half: {'yes' if share_ratio <= 0.5 else 'no'})" if _is_coco(report) else ""
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
             *table_head("criterion", "variant", "steps", "seed", "commit", "mean best-IoU", "best-IoU, any query",
                         "precision", "recall", "instances with duplicates")]
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
    parser.add_argument("--focus", nargs="*", default=[], metavar="ARM[=LABEL]",
                        help="arms of --ab shown on the results page with Hungarian, in this order, under LABEL")
    parser.add_argument("--fine-eval", type=Path, nargs="*", default=[],
                        help="research/run_ab.py output folders of A/Bs evaluated more often (iterations to 90%%)")
    parser.add_argument("--screen", type=Path, default=None,
                        help="research/run_ab.py output folder of short screening runs (diagnostics table)")
    parser.add_argument("--criterion-benchmark", type=Path, nargs="*", default=[],
                        help="tools/benchmark_criterion.py JSONs")
    parser.add_argument("--iteration-cost", type=Path, nargs="*", default=[], help="tools/iteration_cost.py JSONs")
    parser.add_argument("--gpu-report", type=Path, nargs="*", default=[], help="tools/gpu_report.py report.json files")
    parser.add_argument("--mask-quality", type=Path, nargs="*", default=[], help="research/mask_quality.py JSONs")
    parser.add_argument("--small-model", type=Path, nargs="*", default=[], help="research/small_query_model.py JSONs")
    parser.add_argument("--output", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--ablations", type=Path, default=None,
                        help="the ablation page (every arm of --ab, --screen); default: ablations.md next to --output")
    args = parser.parse_args(argv)
    for path in [args.ab, *args.fine_eval, args.screen, *args.criterion_benchmark, *args.iteration_cost,
                 *args.gpu_report, *args.mask_quality, *args.small_model]:
        if path is not None and not path.exists():
            parser.error(f"{path} does not exist")
    ablations = args.ablations or args.output.parent / "ablations.md"
    info = machine_info()
    command = shlex.join(["python", "research/results_page.py", *(argv if argv is not None else sys.argv[1:])])
    stamp = [f"`{command}` — {info['date']}, commit {git_commit()}, host {info['host']}.", ""]
    generated = ("from the artefacts named in each section; do not edit by hand — rerun the tools and this "
                 "command.")
    lines = ["# Results: Influencer vs Hungarian, measured", "",
             f"Generated by `research/results_page.py` {generated}", ""] + stamp
    page_dir = args.output.parent
    figures = page_dir / args.output.stem
    ablation_link = Path(ablations).relative_to(page_dir) if ablations.parent == page_dir else ablations
    if args.ab:
        lines += lead_section(args.ab, page_dir, figures / "ab", parse_focus(args.focus), str(ablation_link))
    if args.fine_eval:
        lines += fine_eval_section(args.fine_eval, page_dir, figures / "fine_eval")
    if args.criterion_benchmark or args.iteration_cost or args.gpu_report:
        lines += ["## Criterion cost", ""]
    if args.gpu_report:
        lines += gpu_report_section(args.gpu_report)
    if args.criterion_benchmark:
        lines += criterion_benchmark_section(args.criterion_benchmark)
    if args.iteration_cost:
        lines += iteration_cost_section(args.iteration_cost)
    if args.mask_quality:
        lines += mask_quality_section(args.mask_quality)
    if args.small_model:
        lines += small_model_section(args.small_model)
    text = "\n".join(lines)
    if args.ab or args.screen:
        ablation_lines = ["# Ablations: every arm measured", "",
                          f"Generated by `research/results_page.py` with [{args.output.name}]({args.output.name}) "
                          f"{generated}", ""] + stamp
        ablation_dir = ablations.parent
        if args.ab:
            ablation_lines += ablation_section(args.ab, ablation_dir, figures / "ab")
        if args.screen:
            ablation_lines += screen_section(args.screen)
        write_text_atomic(ablations, "\n".join(ablation_lines))
    write_text_atomic(args.output, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
