#!/usr/bin/env python
"""Deterministic synthetic COCO-format instance-segmentation dataset.

Every image shows a few shapes (five categories) drawn on a weakly saturated,
textured background, overlapping and occluding each other, with varied sizes,
orientations, colours and texture noise.  Most objects (``class_hue_prob``) take
a hue near their category's own hue, the rest any hue: colour is a strong but
not sufficient cue for the class, which keeps the classes learnable by a small
model trained from scratch on a CPU.  Each annotation is the *visible* part of a
shape (what remains after the shapes drawn later have covered it), stored as
uncompressed COCO RLE, so the dataset can be read by ``pycocotools`` and by
detectron2's ``load_coco_json`` without any conversion.

Layout written under ``ROOT``::

    ROOT/
      train/000000.png ...
      val/000000.png ...
      annotations/instances_train.json
      annotations/instances_val.json
      generator.json          (the parameters the data was generated with)

The whole tree is first written to a temporary sibling folder and then renamed
into place, so ``ROOT`` is either absent or complete.  An existing ``ROOT`` is
never replaced unless ``force=True`` (``--force`` on the command line).

The sample generation (:func:`generate_sample`, :func:`rle_encode`) needs only
numpy; writing PNGs needs Pillow.  Command line (from a checkout, or ``python -m`` this module)::

    python datasets/synthetic_coco.py --root datasets/synthetic_coco [--force]
"""

import argparse
import json
import os
import shutil
import sys
import uuid
import warnings
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = [
    "CATEGORIES",
    "SyntheticCocoSpec",
    "generate_sample",
    "rle_encode",
    "rle_decode",
    "build_split",
    "write_dataset",
    "is_complete",
    "CorruptDatasetError",
    "check_files",
    "regenerate_command",
    "ensure_dataset",
    "annotation_file",
    "image_dir",
    "main",
]

FORMAT_VERSION = 2

CATEGORIES: List[Dict] = [
    {"id": 1, "name": "ellipse", "supercategory": "shape"},
    {"id": 2, "name": "rectangle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "ring", "supercategory": "shape"},
    {"id": 5, "name": "star", "supercategory": "shape"},
]

SPLITS = ("train", "val")


@dataclass(frozen=True)
class SyntheticCocoSpec:
    """Parameters of a generated dataset (stored in ``generator.json``)."""

    num_train: int = 2000
    num_val: int = 200
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 6
    min_radius: float = 0.08  # fraction of the image size
    max_radius: float = 0.32
    min_visible_area: int = 24  # pixels
    min_visible_fraction: float = 0.25
    class_hue_prob: float = 0.8  # objects whose hue follows their category
    seed: int = 0

    def num_images(self, split: str) -> int:
        if split == "train":
            return self.num_train
        if split == "val":
            return self.num_val
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


# ----------------------------------------------------------------------------
# geometry (pure numpy)
# ----------------------------------------------------------------------------
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")  # (y, x)


def _rotated(yy, xx, cy, cx, angle):
    """Pixel coordinates in the frame of a shape centred at (cy, cx), rotated by angle."""
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return u, v


def _polygon_mask(yy, xx, ys, xs) -> np.ndarray:
    """Even-odd rule point-in-polygon test for every pixel centre."""
    inside = np.zeros(yy.shape, dtype=bool)
    n = len(xs)
    for i in range(n):
        y0, x0 = ys[i], xs[i]
        y1, x1 = ys[(i + 1) % n], xs[(i + 1) % n]
        if y0 == y1:
            continue
        crosses = (yy >= min(y0, y1)) & (yy < max(y0, y1))
        x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < x_at)
    return inside


def _shape_mask(rng: np.random.Generator, category: str, size: int, yy, xx, radius: float):
    cy, cx = rng.uniform(0.0, size, size=2)
    angle = rng.uniform(0.0, 2 * np.pi)
    if category == "ellipse":
        a = radius
        b = radius * rng.uniform(0.5, 1.0)
        u, v = _rotated(yy, xx, cy, cx, angle)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if category == "rectangle":
        half_w = radius * rng.uniform(0.7, 1.0)
        half_h = radius * rng.uniform(0.35, 0.9)
        u, v = _rotated(yy, xx, cy, cx, angle)
        return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
    if category == "triangle":
        base = angle + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
        jitter = rng.uniform(-0.35, 0.35, size=3)
        radii = radius * rng.uniform(0.8, 1.1, size=3)
        t = base + jitter
        return _polygon_mask(yy, xx, cy + radii * np.sin(t), cx + radii * np.cos(t))
    if category == "ring":
        inner = radius * rng.uniform(0.45, 0.7)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        return (d2 <= radius**2) & (d2 > inner**2)
    if category == "star":
        points = int(rng.integers(5, 7))
        inner = radius * rng.uniform(0.4, 0.55)
        t = angle + np.arange(2 * points) * np.pi / points
        r = np.where(np.arange(2 * points) % 2 == 0, radius, inner)
        return _polygon_mask(yy, xx, cy + r * np.sin(t), cx + r * np.cos(t))
    raise ValueError(f"unknown category {category!r}")


# ----------------------------------------------------------------------------
# appearance (pure numpy)
# ----------------------------------------------------------------------------
def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    coarse = rng.uniform(0.0, 1.0, size=(cells + 1, cells + 1))
    pos = (np.arange(size) + 0.5) * cells / size
    i0 = np.clip(np.floor(pos).astype(int), 0, cells - 1)
    f = pos - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """h, s, v in [0, 1] -> RGB in [0, 255]."""
    h = (h % 1.0) * 6.0
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Weakly saturated colour with a low-frequency tint field and pixel noise."""
    base = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.85))
    field = _smooth_field(rng, size, int(rng.integers(2, 6)))
    tint = rng.uniform(-40, 40, size=3)
    img = base[None, None, :] + (field[..., None] - 0.5) * 2 * tint[None, None, :]
    img += rng.normal(0.0, rng.uniform(3, 12), size=img.shape)
    return img


def _object_colour(rng: np.random.Generator, category_index: int, spec: "SyntheticCocoSpec") -> np.ndarray:
    """Saturated colour. With probability ``spec.class_hue_prob`` the hue is near the
    category's own hue (centres 1/5 of the colour wheel apart), otherwise any hue, so
    colour is a strong but not a sufficient cue for the class."""
    if rng.uniform() < spec.class_hue_prob:
        hue = category_index / len(CATEGORIES) + rng.normal(0.0, 0.035)
    else:
        hue = rng.uniform()
    return _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))


def _object_texture(rng: np.random.Generator, size: int, colour: np.ndarray, yy, xx) -> np.ndarray:
    kind = int(rng.integers(0, 3))
    tex = np.broadcast_to(colour, (size, size, 3)).astype(np.float64)
    if kind == 1:  # stripes
        period = rng.uniform(4, 12)
        theta = rng.uniform(0, np.pi)
        phase = np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period)
        tex = tex + phase[..., None] * rng.uniform(10, 35)
    elif kind == 2:  # blotches
        field = _smooth_field(rng, size, int(rng.integers(4, 10)))
        tex = tex + (field[..., None] - 0.5) * rng.uniform(20, 70)
    return tex + rng.normal(0.0, rng.uniform(2, 14), size=tex.shape)


# ----------------------------------------------------------------------------
# one sample
# ----------------------------------------------------------------------------
def generate_sample(rng: np.random.Generator, spec: SyntheticCocoSpec):
    """Draw one image.

    Returns ``(image, objects)``: ``image`` is an (S, S, 3) uint8 RGB array,
    ``objects`` a list of ``(category_id, visible_mask)`` in painting order
    (later objects occlude earlier ones).  Every visible mask is non-empty,
    the visible masks are pairwise disjoint.
    """
    size = spec.image_size
    yy, xx = _grid(size)
    image = _background(rng, size)

    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    shapes = []
    for _ in range(n):
        cat = int(rng.integers(len(CATEGORIES)))
        radius = size * np.exp(rng.uniform(np.log(spec.min_radius), np.log(spec.max_radius)))
        mask = _shape_mask(rng, CATEGORIES[cat]["name"], size, yy, xx, radius)
        colour = _object_colour(rng, cat, spec)
        texture = _object_texture(rng, size, colour, yy, xx)
        if mask.sum() > 0:
            shapes.append((CATEGORIES[cat]["id"], mask, texture))

    # drop shapes that end up (almost) hidden, until stable
    keep = list(range(len(shapes)))
    while True:
        visible = _visible_masks([shapes[i][1] for i in keep])
        ok = [
            v.sum() >= spec.min_visible_area
            and v.sum() >= spec.min_visible_fraction * shapes[i][1].sum()
            for i, v in zip(keep, visible)
        ]
        if all(ok):
            break
        keep = [i for i, good in zip(keep, ok) if good]

    objects = []
    for i, vis in zip(keep, visible):
        cat_id, mask, texture = shapes[i]
        image[mask] = texture[mask]
        objects.append((cat_id, vis))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


def _visible_masks(masks: List[np.ndarray]) -> List[np.ndarray]:
    out = [None] * len(masks)
    covered = None
    for i in range(len(masks) - 1, -1, -1):
        m = masks[i]
        out[i] = m if covered is None else (m & ~covered)
        covered = m.copy() if covered is None else (covered | m)
    return out


# ----------------------------------------------------------------------------
# COCO encoding (pure numpy)
# ----------------------------------------------------------------------------
def rle_encode(mask: np.ndarray) -> Dict:
    """Uncompressed COCO RLE (column-major runs, starting with a run of zeros)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    flat = mask.ravel(order="F").astype(np.int8)
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def rle_decode(rle: Dict) -> np.ndarray:
    """Inverse of :func:`rle_encode` (uncompressed RLE only)."""
    h, w = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, rle["counts"])
    return flat.reshape((w, h)).T


def _bbox(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def build_split(spec: SyntheticCocoSpec, split: str, image_writer=None, progress=None) -> Dict:
    """Generate one split; returns the COCO dict.

    ``image_writer(file_name, image)`` is called for each image (``file_name``
    relative to the split's image folder); pass None to skip writing images.
    ``progress(done, total)`` is called after each image.
    """
    split_index = SPLITS.index(split)
    images, annotations = [], []
    ann_id = 1
    total = spec.num_images(split)
    for idx in range(total):
        rng = np.random.default_rng([spec.seed, split_index, idx])
        image, objects = generate_sample(rng, spec)
        file_name = f"{idx:06d}.png"
        if image_writer is not None:
            image_writer(file_name, image)
        image_id = idx + 1
        images.append(
            {"id": image_id, "file_name": file_name, "height": spec.image_size, "width": spec.image_size}
        )
        for cat_id, mask in objects:
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": int(cat_id),
                    "segmentation": rle_encode(mask),
                    "area": float(mask.sum()),
                    "bbox": _bbox(mask),
                    "iscrowd": 0,
                }
            )
            ann_id += 1
        if progress is not None:
            progress(idx + 1, total)
    return {
        "info": {
            "description": f"InfluencerFormer synthetic shapes, {split} split",
            "version": str(FORMAT_VERSION),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    }


# ----------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------
def annotation_file(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{split}.json")


def image_dir(root: str, split: str) -> str:
    return os.path.join(root, split)


def is_complete(root: str) -> bool:
    return os.path.isfile(os.path.join(root, "generator.json")) and all(
        os.path.isfile(annotation_file(root, s)) for s in SPLITS
    )


def _png_writer(folder: str):
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow ships with torchvision
        raise ImportError("writing the synthetic dataset needs Pillow (pip install pillow)") from e

    def write(file_name, image):
        Image.fromarray(image, mode="RGB").save(os.path.join(folder, file_name), format="PNG")

    return write


def _stderr_progress(root: str, split: str, steps: int = 10):
    """Progress lines on stderr (detectron2 leaves most loggers unconfigured, and generating
    the default dataset takes ~20 s)."""
    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // steps) == 0:
            print(f"synthetic_coco: {split} {done}/{total} images -> {root}", file=sys.stderr, flush=True)

    return report


def write_dataset(
    root: str, spec: Optional[SyntheticCocoSpec] = None, force: bool = False, progress: bool = True
) -> str:
    """Generate the dataset into ``root`` atomically; returns ``root``.

    Raises FileExistsError if ``root`` exists and ``force`` is False. ``progress``
    prints a line on stderr every tenth of each split.
    """
    spec = spec or SyntheticCocoSpec()
    root = os.path.abspath(root)
    if os.path.lexists(root) and not force:
        raise FileExistsError(f"{root} already exists; pass force=True (--force) to regenerate it")
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(root)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(os.path.join(tmp, "annotations"))
        for split in SPLITS:
            folder = image_dir(tmp, split)
            os.makedirs(folder)
            report = _stderr_progress(root, split) if progress else None
            coco = build_split(spec, split, _png_writer(folder), report)
            with open(annotation_file(tmp, split), "w") as f:
                json.dump(coco, f)
        with open(os.path.join(tmp, "generator.json"), "w") as f:
            json.dump({"format_version": FORMAT_VERSION, **asdict(spec)}, f, indent=2)
        _move_into_place(tmp, root, force)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _move_into_place(tmp: str, root: str, force: bool) -> None:
    old = None
    if os.path.lexists(root):
        if not force:
            raise FileExistsError(f"{root} appeared while generating; not overwriting it")
        old = f"{tmp}.old"
        os.rename(root, old)
    try:
        os.rename(tmp, root)
    except OSError:
        if old is not None:
            os.rename(old, root)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class CorruptDatasetError(ValueError):
    """A file of a generated dataset cannot be read (e.g. truncated by an interrupted copy)."""


def regenerate_command(root: str) -> str:
    """The command line that regenerates the dataset under ``root``."""
    wrapper = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "datasets", "synthetic_coco.py")
    if os.path.isfile(wrapper):  # a checkout
        return f"python {wrapper} --root {root} --force"
    module = __spec__.name if __spec__ is not None else "projects.mask2former.synthetic_coco"
    return f"python -m {module} --root {root} --force"


def _read_json(path: str, root: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptDatasetError(
            f"{path} is damaged ({type(e).__name__}: {e}); regenerate the synthetic dataset with: "
            f"{regenerate_command(root)}"
        ) from None


# (path, size, mtime) of the files check_files has read, so each is parsed once per process
_CHECKED = set()


def check_files(root: str) -> None:
    """Raise :class:`CorruptDatasetError` naming the file and the command that regenerates
    the dataset when ``generator.json`` or an annotation file is not what the generator wrote."""
    root = os.path.abspath(root)
    expected = {os.path.join(root, "generator.json"): {"format_version"}}
    expected.update({annotation_file(root, s): {"images", "annotations", "categories"} for s in SPLITS})
    for path, keys in expected.items():
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key in _CHECKED:
            continue
        data = _read_json(path, root)
        if not isinstance(data, dict) or not keys <= set(data):
            raise CorruptDatasetError(
                f"{path} lacks {sorted(keys)}: it was not written by this generator; regenerate the "
                f"synthetic dataset with: {regenerate_command(root)}"
            )
        _CHECKED.add(key)


def read_spec(root: str) -> SyntheticCocoSpec:
    data = _read_json(os.path.join(root, "generator.json"), root)
    data.pop("format_version", None)
    return SyntheticCocoSpec(**data)


def _warn_if_different(root: str, spec: SyntheticCocoSpec) -> None:
    stored = _read_json(os.path.join(root, "generator.json"), root)
    version = stored.pop("format_version", None)
    wanted = asdict(spec)
    if version != FORMAT_VERSION or any(stored.get(k) != v for k, v in wanted.items()):
        warnings.warn(
            f"using the synthetic dataset in {root}, generated with {stored} (format {version}); "
            f"the current generator would write {wanted} (format {FORMAT_VERSION}). "
            f"Regenerate with: {regenerate_command(root)}"
        )


def ensure_dataset(root: str, spec: Optional[SyntheticCocoSpec] = None) -> str:
    """Generate the dataset under ``root`` unless a complete one is already there.

    Safe when several processes call it at once: each writes its own temporary
    folder, the first rename wins and the others discard their copy. An existing
    dataset whose files do not parse raises :class:`CorruptDatasetError`.
    """
    root = os.path.abspath(root)
    if is_complete(root):
        check_files(root)
        _warn_if_different(root, spec or SyntheticCocoSpec())
        return root
    if os.path.lexists(root):
        raise FileExistsError(
            f"{root} exists but is not a complete synthetic dataset "
            f"(expected generator.json and annotations/instances_{{train,val}}.json); "
            f"delete it or regenerate with: {regenerate_command(root)}"
        )
    try:
        write_dataset(root, spec, force=False)
    except (FileExistsError, OSError):
        if not is_complete(root):  # another process won the race only if it is complete
            raise
    return root


def main(argv=None) -> int:
    defaults = SyntheticCocoSpec()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="output folder (must not exist unless --force)")
    p.add_argument("--num-train", type=int, default=defaults.num_train)
    p.add_argument("--num-val", type=int, default=defaults.num_val)
    p.add_argument("--image-size", type=int, default=defaults.image_size)
    p.add_argument("--max-objects", type=int, default=defaults.max_objects)
    p.add_argument("--min-radius", type=float, default=defaults.min_radius, help="fraction of the image size")
    p.add_argument("--max-radius", type=float, default=defaults.max_radius, help="fraction of the image size")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--force", action="store_true", help="replace an existing ROOT")
    args = p.parse_args(argv)
    spec = SyntheticCocoSpec(
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        max_objects=args.max_objects,
        min_radius=args.min_radius,
        max_radius=args.max_radius,
        seed=args.seed,
    )
    try:
        root = write_dataset(args.root, spec, force=args.force)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {spec.num_train} train + {spec.num_val} val images to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
