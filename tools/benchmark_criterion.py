#!/usr/bin/env python
"""Criterion cost benchmark: the matcher-free Influencer criterion against the Hungarian baseline.

Forward + backward time (median of repeated runs after warm-up, round-robin over the criteria),
the operators one forward + backward dispatches (``ops``: about one kernel launch each on a GPU)
and the host-synchronising ones among them (``syncs``: ``.item()``, ``nonzero`` and the like; on
CUDA also ``cuda_syncs``, every synchronisation CUDA's sync debug mode reports), on identical
structured inputs -- GT masks as blobs, predictions as noisy shuffled copies -- with the Hungarian
matcher's own share broken out. Dense inputs (2D, 12,544 sampled points, Mask2Former's
1/4-resolution mask logits) and point-form inputs (3D).

    python tools/benchmark_criterion.py                      # the two target scales
    python tools/benchmark_criterion.py --compile --cuda-graph --json out.json
    python tools/benchmark_criterion.py --preset grid --json out.json
    python tools/benchmark_criterion.py --queries 100 --instances 50 --points 12544 --layers 10 --form dense

``--compile`` adds the default criterion under ``torch.compile(fullgraph=True)``; ``--cuda-graph``
(CUDA only) captures its forward + backward once as a CUDA graph and replays it. Both take the
targets padded once per step (:func:`influencerformer.targets.pad_targets`, timed with the step).
Hungarian matching can be neither: it solves each assignment on the CPU.

CPU peak memory is the rise of the process's resident high-water mark during the run
(``/proc/self/clear_refs`` resets it; it misses what the allocator reuses); CUDA peak memory is
``torch.cuda.max_memory_allocated``.
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
from influencerformer.losses import InfluencerPotentials  # noqa: E402
from influencerformer.matching import HungarianMatcher  # noqa: E402
from influencerformer.targets import pad_targets  # noqa: E402
from tools.provenance import machine_info, write_json  # noqa: E402

NUM_CLASSES = 80
HUNGARIAN_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
INFLUENCER_WEIGHTS = HUNGARIAN_WEIGHTS  # the default criterion: Mask2Former's terms on the ownership plan
ORIGINAL_WEIGHTS = {"loss_ce": 2.0, "loss_influencer": 5.0}
# operators that only make views, allocate, or return their input: no kernel on a GPU
NO_KERNEL_OPS = frozenset(f"aten::{name}" for name in (
    "alias", "as_strided", "as_strided_", "chunk", "contiguous", "detach", "empty", "empty_like", "empty_strided",
    "expand", "lift_fresh", "narrow", "permute", "real", "reshape", "_reshape_alias", "resolve_conj", "resolve_neg",
    "select", "slice", "split", "split_with_sizes", "squeeze", "t", "to", "transpose", "unbind", "unsqueeze", "view"))
# operators that read device memory back to the host (a GPU -> CPU synchronisation each)
SYNC_OPS = frozenset(f"aten::{name}" for name in (
    "_local_scalar_dense", "item", "nonzero", "nonzero_static", "is_nonzero", "masked_select", "unique", "_unique",
    "_unique2", "unique_consecutive", "unique_dim", "equal", "bincount", "repeat_interleave", "allclose",
    "_assert_async", "histc"))
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


def _profile(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return prof.events()


def count_dispatched_ops(fn) -> int:
    """ATen operators ``fn()`` dispatches that call no other ATen operator and compute something
    (views, allocations and no-op conversions are left out). On a GPU each is about one kernel
    launch, which costs host time whatever the tensor sizes: a count that does not depend on the
    machine's speed or load."""
    return sum(1 for event in _profile(fn) if event.name.startswith("aten::") and event.name not in NO_KERNEL_OPS
               and not any(child.name.startswith("aten::") for child in event.cpu_children))


def count_ops_and_syncs(fn) -> Dict:
    """``{"ops": computing operators, "syncs": host-synchronising operators, "sync_ops": their names}``
    of one ``fn()``."""
    events = _profile(fn)
    ops = sum(1 for event in events if event.name.startswith("aten::") and event.name not in NO_KERNEL_OPS
              and not any(child.name.startswith("aten::") for child in event.cpu_children))
    reads = [event.name for event in events if event.name in SYNC_OPS  # once per read, not per nested operator
             and not any(child.name in SYNC_OPS for child in event.cpu_children)]
    return {"ops": ops, "syncs": len(reads), "sync_ops": sorted(set(reads))}


def count_cuda_syncs(fn) -> int:
    """Host synchronisations one ``fn()`` makes on a CUDA device, as CUDA's own sync debug mode
    reports them: reads back (``.item()``, ``nonzero``), but also the blocking host-to-device
    copies and device-to-host copies (a matcher's cost matrices) that a CPU profile cannot see."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum(1 for w in caught if "synchroniz" in str(w.message))


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
        "influencer_original": InfluencerCriterion(NUM_CLASSES, ORIGINAL_WEIGHTS, num_points=cfg.points,
                                                   potentials=InfluencerPotentials("original")),
    }


def weighted_total(crit, outputs, targets):
    losses = crit(outputs, targets)
    return sum(crit.weight_dict[k] * v for k, v in losses.items())


def weighted_backward(crit, outputs, targets, params):
    return torch.autograd.grad(weighted_total(crit, outputs, targets), params, allow_unused=True)


def padded_step(crit, outputs, targets, params, point_form: bool):
    """The default criterion on targets padded once per step, forward under
    ``torch.compile(fullgraph=True)`` (its backward is the compiled graph's too)."""
    shapes = [tuple(m.shape) for m in outputs["pred_masks"]] if point_form else None
    compiled = torch.compile(lambda padded: weighted_total(crit, outputs, padded), fullgraph=True)

    def step():
        total = compiled(pad_targets(targets, point_form, shapes))
        return torch.autograd.grad(total, params, allow_unused=True)
    return step


def graph_step(crit, outputs, targets, params, point_form: bool):
    """The default criterion's forward + backward captured once as a CUDA graph; each step pads the
    targets into the graph's static buffers and replays it."""
    shapes = [tuple(m.shape) for m in outputs["pred_masks"]] if point_form else None
    static = pad_targets(targets, point_form, shapes)  # the criterion's value checks are off (measure)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream (lazy initialisation, workspaces)
        for _ in range(3):
            weighted_backward(crit, outputs, static, params)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        weighted_backward(crit, outputs, static, params)

    def step():
        for buffer, value in zip(static, pad_targets(targets, point_form, shapes)):
            buffer.copy_(value)
        graph.replay()
    return step


def measure(cfg: Config, device: torch.device, repeats: int, warmup: int, compile_arm: bool = False,
            graph_arm: bool = False) -> Dict[str, dict]:
    outputs, targets = make_inputs(cfg, device)
    params = leaves(outputs)
    criteria = build_criteria(cfg)
    matcher_timers = {}
    for name, crit in criteria.items():
        crit.to(device)
        crit._value_checks_left = 0  # the steady state: value checks run in a criterion's first calls only
        if isinstance(crit, HungarianCriterion):
            matcher_timers[name] = ModuleTimer(crit.matcher, device)
    steps = {name: (lambda crit=crit: weighted_backward(crit, outputs, targets, params))
             for name, crit in criteria.items()}
    point_form = cfg.form == "point"
    failed: Dict[str, str] = {}
    arms = []
    if compile_arm:
        arms.append(("influencer_compiled", lambda: padded_step(criteria["influencer"], outputs, targets, params,
                                                                point_form)))
    if graph_arm and device.type == "cuda":
        arms.append(("influencer_graph", lambda: graph_step(criteria["influencer"], outputs, targets, params,
                                                            point_form)))
    for name, build in arms:  # an arm that cannot be built or run is reported, the others still measured
        try:
            step = build()
            step()  # compiles on the first call
            steps[name] = step
        except Exception as error:  # noqa: BLE001 -- reported in the results
            failed[name] = f"{type(error).__name__}: {str(error)[:500]}"
            print(f"{cfg.label()}: {name} failed: {failed[name]}", file=sys.stderr, flush=True)
    for _ in range(warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    matcher_times = {name: [] for name in matcher_timers}
    peaks = {}
    # Round-robin over the criteria, so that load changes on a shared machine hit all of them alike.
    for i in range(repeats):
        for name, step in steps.items():
            if name in matcher_timers:
                matcher_timers[name].total = 0.0
            base = reset_peak(device) if i == 0 else None
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
            if base is not None:
                peaks[name] = read_peak(device, base)
            if name in matcher_timers:
                matcher_times[name].append(matcher_timers[name].total)
    results = {name: {"ms": 1e3 * statistics.median(times[name]), "peak_mib": peaks.get(name),
                      "matcher_ms": 1e3 * statistics.median(matcher_times[name]) if name in matcher_times else None}
               for name in steps}
    for name in criteria:  # eager arms: what one step dispatches (a graph replay dispatches nothing)
        results[name].update(count_ops_and_syncs(steps[name]))
        if device.type == "cuda":
            results[name]["cuda_syncs"] = count_cuda_syncs(steps[name])
    results.update({name: {"failed": why} for name, why in failed.items()})
    base = results["hungarian"]
    for name, res in results.items():
        if "failed" in res:
            continue
        res["time_ratio_vs_hungarian"] = res["ms"] / base["ms"]
        hp, ip = base["peak_mib"], res["peak_mib"]
        res["memory_ratio_vs_hungarian"] = ip / hp if hp and ip is not None else None
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


def operators_cell(result: Dict) -> str:
    """``ops / syncs`` of one criterion's result, with CUDA's own sync count where measured."""
    if "ops" not in result:
        return "(one compiled / captured call)"
    cuda = f" ({result['cuda_syncs']} CUDA)" if "cuda_syncs" in result else ""
    return f"{result['ops']} / {result['syncs']}{cuda}"


def format_rows(device: str, cfg: Config, res: Dict[str, dict]) -> List[str]:
    h = res["hungarian"]
    share = f"{100 * h['matcher_ms'] / h['ms']:.0f}%" if h["matcher_ms"] is not None else "n/a"
    rows = []
    for name, r in res.items():
        if "failed" in r:
            rows.append(f"| {device} | {cfg.label()} | {name} | failed: {r['failed'][:120]} | | | | |")
            continue
        ops = operators_cell(r)
        mem = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "n/a"
        extra = f"matcher {h['matcher_ms']:.1f} ms ({share})" if name == "hungarian" else ""
        rows.append(f"| {device} | {cfg.label()} | {name} | {r['ms']:.1f} | {r['time_ratio_vs_hungarian']:.2f}x | "
                    f"{ops} | {mem} | {extra} |")
    return rows


HEADER = ("| dev | config | criterion | ms (fwd + bwd) | time / hungarian | ops / syncs per step | peak MiB | |\n"
          "|---|---|---|---|---|---|---|---|")


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
    parser.add_argument("--compile", action="store_true", help="add the default criterion under torch.compile")
    parser.add_argument("--cuda-graph", action="store_true", help="add the default criterion as a CUDA graph")
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
                print(f"| {device.type} | {cfg.label()} | skipped: ~{cfg.estimated_gb():.1f} GB > --max-gb {args.max_gb} |")
                records.append({"device": device.type, "config": asdict(cfg), "skipped": True})
                continue
            torch.manual_seed(0)
            res = measure(cfg, device, args.repeats, args.warmup, args.compile, args.cuda_graph)
            print("\n".join(format_rows(device.type, cfg, res)), flush=True)
            records.append({"device": device.type, "config": asdict(cfg), "results": res})
            if args.json:  # after every configuration: a run stopped later keeps what it measured
                write_json(args.json, {"machine": machine_info(devices), "repeats": args.repeats,
                                       "warmup": args.warmup, "records": records})
    if args.json:
        print(f"wrote {args.json}")
    return records


if __name__ == "__main__":
    main()
