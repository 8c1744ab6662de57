#!/usr/bin/env python
"""Synthetic indoor rooms written in the S3DIS layout that mmdetection3d's converter produces.

Every room has a floor, a ceiling and four walls, optional beams and columns, doors and windows
cut into the walls, boards on the walls, and box / cylinder furniture of the S3DIS classes
(tables with legs, chairs, sofas, bookcases, clutter). Points are sampled on the surfaces in
proportion to their area, jittered, and coloured per class with per-instance and per-point
variation. The output directory looks like ``data/s3dis`` after
``python tools/create_data.py s3dis`` in mmdetection3d 1.x::

    points/Area_{a}_{room}.bin          float32 (N, 6): x y z r g b (colours 0..255, xyz min at 0)
    instance_mask/Area_{a}_{room}.bin   int64 (N,): instance id, 1..n_instances
    semantic_mask/Area_{a}_{room}.bin   int64 (N,): class id 0..12
    s3dis_infos_Area_{a}.pkl            {'metainfo': ..., 'data_list': [...]} (info version 1.1)
    seg_info/Area_{a}_resampled_scene_idxs.npy, seg_info/Area_{a}_label_weight.npy

so a OneFormer3D pipeline can be smoke-tested end to end without the 2 GB download. Usage::

    python datasets/synthetic_s3dis.py --out-dir data/s3dis_synthetic --rooms-per-area 2

Files are written atomically (temporary name, then rename); an existing file is never replaced
unless ``--force`` is given.
"""
from __future__ import annotations

import argparse
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..atomic_files import atomic_write as _atomic_write

CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door",
           "table", "chair", "sofa", "bookcase", "board", "clutter")
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
# The converter keeps boxes for these five furniture classes only (GSDN convention) and
# numbers them 0..4 in the infos.
BOX_CLASSES = ("table", "chair", "sofa", "bookcase", "board")
BOX_LABEL = {CLASS_ID[name]: i for i, name in enumerate(BOX_CLASSES)}
AREAS = (1, 2, 3, 4, 5, 6)
ROOM_KINDS = ("office", "conferenceRoom", "hallway", "lounge", "storage", "pantry", "copyRoom")

# Base colours per class (RGB, 0..255).
CLASS_COLOUR = {
    "ceiling": (222, 220, 214), "floor": (148, 121, 92), "wall": (201, 196, 186),
    "beam": (183, 181, 172), "column": (190, 186, 178), "window": (138, 168, 201),
    "door": (118, 82, 52), "table": (162, 112, 63), "chair": (58, 60, 72), "sofa": (96, 42, 44),
    "bookcase": (131, 92, 54), "board": (238, 238, 236), "clutter": (120, 120, 120),
}


# ------------------------------------------------------------------------------------------
# Surface sampling
# ------------------------------------------------------------------------------------------
@dataclass
class Part:
    """One primitive surface of an object, in room coordinates."""

    kind: str  # "box" | "cylinder" | "rect"
    center: Tuple[float, float, float]
    size: Tuple[float, float, float]  # box: (sx, sy, sz); cylinder: (r, r, h); rect: see below
    yaw: float = 0.0
    skip_faces: Tuple[str, ...] = ()  # box faces not sampled: "-x" "+x" "-y" "+y" "-z" "+z"
    normal_axis: int = 2  # rect: the axis the rectangle is perpendicular to

    def faces(self) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
        """Flat pieces as (origin, edge_u, edge_v, area) in the part's local frame."""
        cx, cy, cz = 0.0, 0.0, 0.0
        if self.kind == "rect":
            a, b = [i for i in range(3) if i != self.normal_axis]
            origin = np.zeros(3)
            origin[a] -= self.size[a] / 2
            origin[b] -= self.size[b] / 2
            u = np.zeros(3)
            u[a] = self.size[a]
            v = np.zeros(3)
            v[b] = self.size[b]
            return [(origin, u, v, self.size[a] * self.size[b])]
        sx, sy, sz = self.size
        out = []
        for axis, sign, name in [(0, -1, "-x"), (0, 1, "+x"), (1, -1, "-y"), (1, 1, "+y"),
                                 (2, -1, "-z"), (2, 1, "+z")]:
            if name in self.skip_faces:
                continue
            a, b = [i for i in range(3) if i != axis]
            half = np.array([sx, sy, sz]) / 2
            origin = np.array([cx, cy, cz]) - half
            origin[axis] = sign * half[axis]
            u = np.zeros(3)
            u[a] = 2 * half[a]
            v = np.zeros(3)
            v[b] = 2 * half[b]
            out.append((origin, u, v, float(u[a] * v[b])))
        return out

    def area(self) -> float:
        if self.kind == "cylinder":
            r, _, h = self.size
            return 2 * np.pi * r * h + 2 * np.pi * r * r
        return sum(f[3] for f in self.faces())

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if n <= 0:
            return np.zeros((0, 3))
        if self.kind == "cylinder":
            r, _, h = self.size
            side, cap = 2 * np.pi * r * h, np.pi * r * r
            which = rng.choice(3, size=n, p=np.array([side, cap, cap]) / (side + 2 * cap))
            theta = rng.uniform(0, 2 * np.pi, n)
            rad = np.where(which == 0, r, r * np.sqrt(rng.uniform(0, 1, n)))
            z = np.where(which == 0, rng.uniform(-h / 2, h / 2, n), np.where(which == 1, -h / 2, h / 2))
            local = np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=1)
        else:
            faces = self.faces()
            areas = np.array([f[3] for f in faces])
            which = rng.choice(len(faces), size=n, p=areas / areas.sum())
            origins = np.stack([f[0] for f in faces])[which]
            us = np.stack([f[1] for f in faces])[which]
            vs = np.stack([f[2] for f in faces])[which]
            local = origins + rng.uniform(0, 1, (n, 1)) * us + rng.uniform(0, 1, (n, 1)) * vs
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return local @ rot.T + np.asarray(self.center)


@dataclass
class Obj:
    """One annotated instance: a class and the primitive surfaces it is made of."""

    cls: str
    parts: List[Part]
    # Axis-aligned (xmin, xmax, zmin, zmax) holes cut in a wall plane (for walls only), with
    # the wall's in-plane axis: points inside are removed (doors and windows replace them).
    holes: List[Tuple[float, float, float, float]] = field(default_factory=list)
    hole_axis: int = 0

    def area(self) -> float:
        return sum(p.area() for p in self.parts)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        areas = np.array([p.area() for p in self.parts])
        counts = rng.multinomial(n, areas / areas.sum())
        pts = np.concatenate([p.sample(k, rng) for p, k in zip(self.parts, counts)], axis=0)
        if self.holes and len(pts):
            keep = np.ones(len(pts), dtype=bool)
            for lo, hi, zlo, zhi in self.holes:
                inside = ((pts[:, self.hole_axis] > lo) & (pts[:, self.hole_axis] < hi)
                          & (pts[:, 2] > zlo) & (pts[:, 2] < zhi))
                keep &= ~inside
            pts = pts[keep]
        return pts


# ------------------------------------------------------------------------------------------
# Room layout
# ------------------------------------------------------------------------------------------
class _Floorplan:
    """Axis-aligned footprints already taken, for rejection sampling of furniture positions."""

    def __init__(self, width: float, depth: float):
        self.width, self.depth = width, depth
        self.taken: List[Tuple[float, float, float, float]] = []

    def free(self, x0, x1, y0, y1, margin=0.05) -> bool:
        if x0 < 0.05 or y0 < 0.05 or x1 > self.width - 0.05 or y1 > self.depth - 0.05:
            return False
        return all(x1 + margin <= a0 or x0 - margin >= a1 or y1 + margin <= b0 or y0 - margin >= b1
                   for a0, a1, b0, b1 in self.taken)

    def place(self, rng, sx, sy, tries=60, near_wall=False) -> Optional[Tuple[float, float, float]]:
        """A free centre (x, y, yaw in {0, pi/2}) for an sx-by-sy footprint, or None."""
        for _ in range(tries):
            yaw = float(rng.choice([0.0, np.pi / 2]))
            fx, fy = (sx, sy) if yaw == 0.0 else (sy, sx)
            if fx + 0.12 >= self.width or fy + 0.12 >= self.depth:
                continue
            if near_wall:
                side = rng.integers(4)
                x = rng.uniform(fx / 2 + 0.06, self.width - fx / 2 - 0.06)
                y = rng.uniform(fy / 2 + 0.06, self.depth - fy / 2 - 0.06)
                if side == 0:
                    x = fx / 2 + 0.06
                elif side == 1:
                    x = self.width - fx / 2 - 0.06
                elif side == 2:
                    y = fy / 2 + 0.06
                else:
                    y = self.depth - fy / 2 - 0.06
            else:
                x = rng.uniform(fx / 2, self.width - fx / 2)
                y = rng.uniform(fy / 2, self.depth - fy / 2)
            box = (x - fx / 2, x + fx / 2, y - fy / 2, y + fy / 2)
            if self.free(*box):
                self.taken.append(box)
                return x, y, yaw
        return None


def _legs(cx, cy, yaw, sx, sy, height, radius=0.025) -> List[Part]:
    c, s = np.cos(yaw), np.sin(yaw)
    parts = []
    for dx in (-sx / 2 + 0.05, sx / 2 - 0.05):
        for dy in (-sy / 2 + 0.05, sy / 2 - 0.05):
            x, y = cx + c * dx - s * dy, cy + s * dx + c * dy
            parts.append(Part("cylinder", (x, y, height / 2), (radius, radius, height)))
    return parts


def _offset(cx, cy, yaw, dx, dy):
    c, s = np.cos(yaw), np.sin(yaw)
    return cx + c * dx - s * dy, cy + s * dx + c * dy


def layout_room(rng: np.random.Generator, kind: str = "office") -> Tuple[List[Obj], Tuple[float, float, float]]:
    """Objects of one random room and its (width, depth, height)."""
    width = float(rng.uniform(4.0, 9.0) if kind != "hallway" else rng.uniform(8.0, 14.0))
    depth = float(rng.uniform(3.5, 7.0) if kind != "hallway" else rng.uniform(2.0, 3.0))
    height = float(rng.uniform(2.7, 3.3))
    objs: List[Obj] = [
        Obj("floor", [Part("rect", (width / 2, depth / 2, 0.0), (width, depth, 0.0), normal_axis=2)]),
        Obj("ceiling", [Part("rect", (width / 2, depth / 2, height), (width, depth, 0.0), normal_axis=2)]),
    ]
    # Walls: (plane axis, plane position, in-plane axis, length). Doors/windows/boards go on them.
    walls = [(1, 0.0, 0, width), (1, depth, 0, width), (0, 0.0, 1, depth), (0, width, 1, depth)]
    wall_objs = []
    for axis, pos, along, length in walls:
        centre = [width / 2, depth / 2, height / 2]
        centre[axis] = pos
        size = [width, depth, height]
        size[axis] = 0.0
        wall = Obj("wall", [Part("rect", tuple(centre), tuple(size), normal_axis=axis)], hole_axis=along)
        wall_objs.append(wall)
    objs.extend(wall_objs)

    def on_wall(cls, wall_index, lo, hi, zlo, zhi, protrude, cut):
        axis, pos, along, _ = walls[wall_index]
        inward = protrude if pos == 0.0 else -protrude
        centre = [0.0, 0.0, (zlo + zhi) / 2]
        centre[along] = (lo + hi) / 2
        centre[axis] = pos + inward
        size = [0.0, 0.0, zhi - zlo]
        size[along] = hi - lo
        objs.append(Obj(cls, [Part("rect", tuple(centre), tuple(size), normal_axis=axis)]))
        if cut:
            wall_objs[wall_index].holes.append((lo, hi, zlo, zhi))

    used: Dict[int, List[Tuple[float, float]]] = {i: [] for i in range(4)}

    def wall_slot(wall_index, span):
        length = walls[wall_index][3]
        for _ in range(30):
            lo = float(rng.uniform(0.3, max(0.31, length - span - 0.3)))
            hi = lo + span
            if hi < length - 0.2 and all(hi + 0.2 < a or lo - 0.2 > b for a, b in used[wall_index]):
                used[wall_index].append((lo, hi))
                return lo, hi
        return None

    for _ in range(int(rng.integers(1, 3))):
        w = int(rng.integers(4))
        slot = wall_slot(w, float(rng.uniform(0.85, 1.0)))
        if slot:
            on_wall("door", w, slot[0], slot[1], 0.0, float(rng.uniform(2.0, 2.2)), 0.03, cut=True)
    for _ in range(int(rng.integers(0, 3))):
        w = int(rng.integers(4))
        slot = wall_slot(w, float(rng.uniform(1.0, 2.2)))
        if slot:
            zlo = float(rng.uniform(0.8, 1.0))
            on_wall("window", w, slot[0], slot[1], zlo, min(height - 0.3, zlo + float(rng.uniform(1.0, 1.5))),
                    0.04, cut=True)
    if rng.uniform() < 0.6:
        w = int(rng.integers(4))
        slot = wall_slot(w, float(rng.uniform(1.2, 2.8)))
        if slot:
            on_wall("board", w, slot[0], slot[1], 0.9, float(rng.uniform(1.9, 2.1)), 0.02, cut=False)

    if rng.uniform() < 0.5:  # a beam under the ceiling across the room
        along_x = bool(rng.uniform() < 0.5)
        size = (width, 0.3, 0.4) if along_x else (0.3, depth, 0.4)
        centre = (width / 2, float(rng.uniform(1.0, depth - 1.0)), height - 0.2) if along_x else \
            (float(rng.uniform(1.0, width - 1.0)), depth / 2, height - 0.2)
        objs.append(Obj("beam", [Part("box", centre, size, skip_faces=("+z",))]))

    plan = _Floorplan(width, depth)
    for _ in range(int(rng.integers(0, 3))):  # columns in corners / along walls
        spot = plan.place(rng, 0.45, 0.45, near_wall=True)
        if spot:
            x, y, _ = spot
            if rng.uniform() < 0.5:
                objs.append(Obj("column", [Part("box", (x, y, height / 2), (0.45, 0.45, height),
                                                skip_faces=("-z", "+z"))]))
            else:
                objs.append(Obj("column", [Part("cylinder", (x, y, height / 2), (0.22, 0.22, height))]))

    for _ in range(int(rng.integers(0, 3))):  # bookcases against walls
        sx, sy, sz = float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.3, 0.4)), float(rng.uniform(1.6, 2.2))
        spot = plan.place(rng, sx, sy, near_wall=True)
        if spot:
            x, y, yaw = spot
            objs.append(Obj("bookcase", [Part("box", (x, y, sz / 2), (sx, sy, sz), yaw=yaw, skip_faces=("-z",))]))

    tables = []
    for _ in range(int(rng.integers(1, 4))):
        sx, sy = float(rng.uniform(1.2, 2.2)), float(rng.uniform(0.6, 1.0))
        spot = plan.place(rng, sx + 1.1, sy + 1.1)  # room for chairs around it
        if not spot:
            continue
        x, y, yaw = spot
        top = float(rng.uniform(0.70, 0.78))
        parts = [Part("box", (x, y, top - 0.025), (sx, sy, 0.05), yaw=yaw)] + _legs(x, y, yaw, sx, sy, top - 0.05)
        objs.append(Obj("table", parts))
        tables.append((x, y, yaw, sx, sy, top))
        for side in (-1, 1):  # chairs along both long sides
            for _ in range(int(rng.integers(0, 3))):
                dx = float(rng.uniform(-sx / 2 + 0.3, sx / 2 - 0.3))
                cx, cy = _offset(x, y, yaw, dx, side * (sy / 2 + 0.35))
                cyaw = yaw + (0.0 if side > 0 else np.pi) + float(rng.normal(0, 0.2))
                objs.append(_chair(cx, cy, cyaw))
    for _ in range(int(rng.integers(0, 3))):  # free-standing chairs
        spot = plan.place(rng, 0.5, 0.5)
        if spot:
            objs.append(_chair(spot[0], spot[1], float(rng.uniform(0, 2 * np.pi))))
    if rng.uniform() < 0.4:
        sx = float(rng.uniform(1.6, 2.2))
        spot = plan.place(rng, sx, 0.85, near_wall=True)
        if spot:
            x, y, yaw = spot
            bx, by = _offset(x, y, yaw, 0.0, 0.32)
            objs.append(Obj("sofa", [
                Part("box", (x, y, 0.22), (sx, 0.85, 0.44), yaw=yaw, skip_faces=("-z",)),
                Part("box", (bx, by, 0.62), (sx, 0.2, 0.36), yaw=yaw, skip_faces=("-z",)),
            ]))
    for _ in range(int(rng.integers(2, 7))):  # clutter on tables or on the floor
        small = (float(rng.uniform(0.1, 0.4)), float(rng.uniform(0.1, 0.4)), float(rng.uniform(0.05, 0.35)))
        if tables and rng.uniform() < 0.6:
            x, y, yaw, sx, sy, top = tables[int(rng.integers(len(tables)))]
            px, py = _offset(x, y, yaw, float(rng.uniform(-sx / 2 + 0.2, sx / 2 - 0.2)),
                             float(rng.uniform(-sy / 2 + 0.15, sy / 2 - 0.15)))
            base = top
        else:
            spot = plan.place(rng, small[0], small[1])
            if not spot:
                continue
            px, py, _ = spot
            base = 0.0
        if rng.uniform() < 0.5:
            part = Part("box", (px, py, base + small[2] / 2), small, yaw=float(rng.uniform(0, np.pi)),
                        skip_faces=("-z",))
        else:
            r = min(small[0], small[1]) / 2
            part = Part("cylinder", (px, py, base + small[2] / 2), (r, r, small[2]))
        objs.append(Obj("clutter", [part]))
    return objs, (width, depth, height)


def _chair(x: float, y: float, yaw: float) -> Obj:
    bx, by = _offset(x, y, yaw, 0.0, 0.21)
    return Obj("chair", [
        Part("box", (x, y, 0.45), (0.45, 0.45, 0.05), yaw=yaw),
        Part("box", (bx, by, 0.70), (0.45, 0.04, 0.45), yaw=yaw),
    ] + _legs(x, y, yaw, 0.45, 0.45, 0.42, radius=0.015))


# ------------------------------------------------------------------------------------------
# One room -> arrays
# ------------------------------------------------------------------------------------------
def generate_room(rng: np.random.Generator, num_points: int = 50000, kind: str = "office",
                  noise: float = 0.005, colour_noise: float = 6.0,
                  min_points_per_instance: int = 30) -> Dict[str, np.ndarray]:
    """Sample one room.

    Returns ``points`` float32 (N, 6) (xyz shifted so that the minimum is 0, as the S3DIS
    exporter does; rgb 0..255), ``semantic_mask`` int64 (N,) with class ids 0..12 and
    ``instance_mask`` int64 (N,) with ids 1..n (every point belongs to an instance, as in S3DIS).
    N is close to ``num_points`` (cut-outs for doors and windows remove a few wall points).
    """
    objs, _ = layout_room(rng, kind)
    areas = np.array([o.area() for o in objs])
    budget = max(num_points - min_points_per_instance * len(objs), 0)
    counts = rng.multinomial(budget, areas / areas.sum()) + min_points_per_instance
    xyz, rgb, sem, inst = [], [], [], []
    next_id = 1
    for obj, n in zip(objs, counts):
        pts = obj.sample(int(n), rng)
        if len(pts) == 0:
            continue
        pts = pts + rng.normal(0.0, noise, pts.shape)
        base = np.array(CLASS_COLOUR[obj.cls], dtype=np.float64)
        if obj.cls == "clutter":
            base = rng.uniform(30, 230, 3)
        tint = base + rng.normal(0.0, 12.0, 3)
        colour = np.clip(tint + rng.normal(0.0, colour_noise, pts.shape), 0, 255)
        xyz.append(pts)
        rgb.append(colour)
        sem.append(np.full(len(pts), CLASS_ID[obj.cls], dtype=np.int64))
        inst.append(np.full(len(pts), next_id, dtype=np.int64))
        next_id += 1
    xyz_all = np.concatenate(xyz)
    xyz_all -= xyz_all.min(axis=0)
    points = np.concatenate([xyz_all, np.concatenate(rgb)], axis=1).astype(np.float32)
    return {"points": points, "semantic_mask": np.concatenate(sem), "instance_mask": np.concatenate(inst)}


def room_annotations(points: np.ndarray, instance_mask: np.ndarray, semantic_mask: np.ndarray) -> List[dict]:
    """The ``instances`` of one v2 info entry: axis-aligned boxes (centre, size) of the five
    furniture classes, labelled 0..4, in instance-id order, as the converter derives them."""
    instances = []
    for i in range(1, int(instance_mask.max()) + 1):
        sel = instance_mask == i
        if not sel.any():
            continue
        labels = semantic_mask[sel]
        if labels.min() != labels.max():
            raise ValueError(f"instance {i} mixes semantic labels {np.unique(labels).tolist()}")
        if int(labels[0]) not in BOX_LABEL:
            continue
        pts = points[sel, :3]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        box = np.concatenate(((lo + hi) / 2, hi - lo))
        instances.append({"bbox_3d": box.tolist(),
                          "bbox_label_3d": np.array([BOX_LABEL[int(labels[0])]], dtype=np.int64)[0]})
    return instances


def seg_info(semantic_masks: Sequence[np.ndarray], num_points: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
    """Scene resampling indices and class weights of one area, computed as the converter's
    seg-info step does (scenes repeated in proportion to their size in ``num_points`` blocks;
    weights ``1 / log(1.2 + class frequency)``)."""
    num_classes = len(CLASSES)
    sizes = np.array([len(m) for m in semantic_masks], dtype=np.float64)
    counts = np.zeros(num_classes + 1)
    for m in semantic_masks:
        counts += np.histogram(m, range(num_classes + 2))[0]
    prob = sizes / sizes.sum()
    num_iter = int(sizes.sum() / float(num_points))
    idxs: List[int] = []
    for idx, p in enumerate(prob):
        idxs.extend([idx] * int(round(p * num_iter)))
    freq = counts[:-1].astype(np.float32)
    freq = freq / freq.sum()
    weight = (1.0 / np.log(1.2 + freq)).astype(np.float32)
    return np.array(idxs).astype(np.int32), weight


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
class UsageError(ValueError):
    """Invalid generator arguments."""


def room_names(area: int, rooms_per_area: int) -> List[str]:
    return [f"{ROOM_KINDS[(area + j) % len(ROOM_KINDS)]}_{j + 1}" for j in range(rooms_per_area)]


def planned_files(out_dir: Path, areas: Iterable[int], rooms_per_area: int, with_seg_info: bool = True) -> List[Path]:
    files = []
    for area in areas:
        for room in room_names(area, rooms_per_area):
            stem = f"Area_{area}_{room}.bin"
            files += [out_dir / "points" / stem, out_dir / "instance_mask" / stem, out_dir / "semantic_mask" / stem]
        files.append(out_dir / f"s3dis_infos_Area_{area}.pkl")
        if with_seg_info:
            files += [out_dir / "seg_info" / f"Area_{area}_resampled_scene_idxs.npy",
                      out_dir / "seg_info" / f"Area_{area}_label_weight.npy"]
    return files


def write_dataset(out_dir, rooms_per_area: int = 2, num_points: int = 50000, seed: int = 0,
                  areas: Sequence[int] = AREAS, force: bool = False, with_seg_info: bool = True,
                  verbose: bool = False) -> List[Path]:
    """Generate and write the synthetic dataset; returns the paths written.

    Raises FileExistsError (listing the clashes) before writing anything when a target file
    exists and ``force`` is False.
    """
    out_dir = Path(out_dir)
    areas = [int(a) for a in areas]
    bad = [a for a in areas if a not in AREAS]
    if bad:
        raise UsageError(f"S3DIS areas are 1..6; got {bad}")
    if rooms_per_area < 1 or num_points < 100:
        raise UsageError(f"need rooms_per_area >= 1 and num_points >= 100; got {rooms_per_area}, {num_points}")
    targets = planned_files(out_dir, areas, rooms_per_area, with_seg_info)
    clashes = [p for p in targets if p.exists()]
    if clashes and not force:
        shown = ", ".join(str(p) for p in clashes[:5]) + (" ..." if len(clashes) > 5 else "")
        raise FileExistsError(f"{len(clashes)} output file(s) already exist ({shown}); pass --force to overwrite")
    written: List[Path] = []
    for area in areas:
        data_list, sem_masks = [], []
        for j, room in enumerate(room_names(area, rooms_per_area)):
            rng = np.random.default_rng([seed, area, j])
            kind = room.rsplit("_", 1)[0]
            scene = generate_room(rng, num_points=num_points, kind=kind)
            stem = f"Area_{area}_{room}.bin"
            for sub, key in (("points", "points"), ("instance_mask", "instance_mask"),
                             ("semantic_mask", "semantic_mask")):
                path = out_dir / sub / stem
                _atomic_write(path, lambda f, a=scene[key]: f.write(np.ascontiguousarray(a).tobytes()))
                written.append(path)
            sem_masks.append(scene["semantic_mask"])
            data_list.append({
                "sample_idx": j,
                "lidar_points": {"num_pts_feats": 6, "lidar_path": stem},
                "instances": room_annotations(scene["points"], scene["instance_mask"], scene["semantic_mask"]),
                "pts_semantic_mask_path": stem,
                "pts_instance_mask_path": stem,
            })
            if verbose:
                print(f"Area_{area} {room}: {len(scene['points'])} points, "
                      f"{int(scene['instance_mask'].max())} instances")
        info = {"metainfo": {"categories": {name: i for i, name in enumerate(BOX_CLASSES)},
                             "dataset": "s3dis", "info_version": "1.1"},
                "data_list": data_list}
        path = out_dir / f"s3dis_infos_Area_{area}.pkl"
        _atomic_write(path, lambda f: pickle.dump(info, f, protocol=2))
        written.append(path)
        if with_seg_info:
            idxs, weight = seg_info(sem_masks)
            for name, arr in ((f"Area_{area}_resampled_scene_idxs.npy", idxs), (f"Area_{area}_label_weight.npy", weight)):
                path = out_dir / "seg_info" / name
                _atomic_write(path, lambda f, a=arr: np.save(f, a))
                written.append(path)
    return written


def read_scene(data_root, info: dict) -> Dict[str, np.ndarray]:
    """Load one scene of an info entry back (the way mmdet3d's loaders read the .bin files)."""
    root = Path(data_root)
    pts = np.fromfile(root / "points" / info["lidar_points"]["lidar_path"], dtype=np.float32).reshape(-1, 6)
    inst = np.fromfile(root / "instance_mask" / info["pts_instance_mask_path"], dtype=np.int64)
    sem = np.fromfile(root / "semantic_mask" / info["pts_semantic_mask_path"], dtype=np.int64)
    return {"points": pts, "instance_mask": inst, "semantic_mask": sem}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", required=True, help="dataset root to create (e.g. data/s3dis_synthetic)")
    parser.add_argument("--rooms-per-area", type=int, default=2)
    parser.add_argument("--points-per-room", type=int, default=50000)
    parser.add_argument("--areas", type=int, nargs="+", default=list(AREAS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-seg-info", action="store_true", help="skip seg_info/*.npy")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    try:
        written = write_dataset(args.out_dir, args.rooms_per_area, args.points_per_room, args.seed, args.areas,
                                force=args.force, with_seg_info=not args.no_seg_info, verbose=True)
    except (FileExistsError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files under {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
