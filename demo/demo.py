#!/usr/bin/env python
"""Draw a trained model's predictions and which query owns each pixel.

    python demo/demo.py --config-file configs/synthetic/influencer.py \
        --input img1.png img2.jpg --output demo_out \
        --checkpoint output/synthetic_influencer/model_final.pth

The weights come from --checkpoint (or the override train.init_checkpoint=FILE); without
either, from the config's train.output_dir/model_final.pth when that file exists. A model
without trained weights draws noise: the demo then warns on stderr.

For every input image two PNGs are written to --output (never the folder of an input):
  <name>.png         the instances scoring >= --confidence-threshold, drawn by
                     detectron2's Visualizer (mask, box, class, score);
  <name>_queries.png which query owns each pixel (argmax over queries of
                     P(object) x mask probability; pixels no query claims with at
                     least --owner-threshold are left dimmed), one colour per query
                     (queries whose regions touch never share a colour), with a legend.
"""

import argparse
import logging
import os
import sys

import numpy as np
import torch

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from detectron2.utils.visualizer import ColorMode, Visualizer  # noqa: E402

from projects.mask2former.train_setup import check_override_keys  # noqa: E402

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

logger = logging.getLogger("demo")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Weights: --checkpoint FILE (or train.init_checkpoint=FILE); default: the config's "
        "train.output_dir/model_final.pth if it exists, otherwise untrained weights (with a warning).",
    )
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input", nargs="+", required=True, help="image files or folders of images")
    p.add_argument("--output", required=True, help="folder for the PNGs (created if missing; not an input's folder)")
    p.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="trained weights (.pth), e.g. output/synthetic_influencer/model_final.pth; "
        "default: train.init_checkpoint if overridden, else the config's train.output_dir/model_final.pth",
    )
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    p.add_argument("--owner-threshold", type=float, default=0.5)
    p.add_argument(
        "--min-size", type=int, default=512, help="small images are drawn enlarged to at least this size"
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    return p.parse_args(argv)


def list_inputs(inputs):
    files = []
    for path in inputs:
        if os.path.isdir(path):
            files += sorted(
                os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path!r} does not exist")
    if not files:
        raise FileNotFoundError(f"no images found in {inputs}")
    return files


def output_paths(files, output_dir):
    """``{input: (instances_png, queries_png)}``; raises ValueError rather than write into an
    input's folder, over an input, or one output over another."""
    output_real = os.path.realpath(output_dir)
    for f in files:  # an output can only overwrite an input in the input's own folder
        if os.path.dirname(os.path.realpath(f)) == output_real:
            raise ValueError(
                f"--output {output_dir!r} is the folder of the input {f!r}: the drawings would mix with "
                f"(or overwrite) the inputs; choose another --output folder"
            )
    paths, taken = {}, {}
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        pair = (os.path.join(output_dir, f"{stem}.png"), os.path.join(output_dir, f"{stem}_queries.png"))
        for out in pair:
            if out in taken:
                raise ValueError(f"{f!r} and {taken[out]!r} would both be drawn to {out!r}; draw them separately")
            taken[out] = f
        paths[f] = pair
    return paths


def resolve_checkpoint(cfg, checkpoint_flag, opts):
    """``(path, why)`` of the weights to load; path "" means untrained weights."""
    if checkpoint_flag:
        return checkpoint_flag, "--checkpoint"
    if any(o.split("=", 1)[0].lstrip("+") == "train.init_checkpoint" for o in opts):
        return cfg.train.init_checkpoint, "train.init_checkpoint"
    final = os.path.join(cfg.train.output_dir, "model_final.pth")
    if os.path.isfile(final):
        return final, "the config's train.output_dir"
    return "", ""


def warn_untrained(message: str) -> None:
    """A warning that must not get lost in the log: on stderr, framed."""
    line = "!" * 78
    print(f"{line}\nWARNING: {message}\n{line}", file=sys.stderr, flush=True)


# Well separated colours (RGB); queries whose regions touch get different ones.
PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
        (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
        (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
        (0, 0, 128), (128, 128, 128),
    ],
    dtype=np.float64,
)


def touching_owners(owner: np.ndarray):
    """Pairs ``(a, b)``, a < b, of queries owning 4-neighbouring pixels."""
    pairs = set()
    for a, b in ((owner[1:, :], owner[:-1, :]), (owner[:, 1:], owner[:, :-1])):
        differ = (a != b) & (a >= 0) & (b >= 0)
        for x, y in zip(a[differ].tolist(), b[differ].tolist()):
            pairs.add((min(x, y), max(x, y)))
    return pairs


def owner_colours(owner: np.ndarray) -> dict:
    """``{query: RGB}`` for the queries owning pixels: all different while the palette lasts,
    and never the colour of a query whose region touches (greedy graph colouring)."""
    queries = sorted(int(q) for q in np.unique(owner[owner >= 0]))
    neighbours = {q: set() for q in queries}
    for a, b in touching_owners(owner):
        neighbours[a].add(b)
        neighbours[b].add(a)
    colours, uses = {}, np.zeros(len(PALETTE), dtype=int)
    for q in sorted(queries, key=lambda q: (-len(neighbours[q]), q)):
        banned = {colours[n] for n in neighbours[q] if n in colours}
        free = [c for c in range(len(PALETTE)) if c not in banned]
        if not free:  # more touching queries than colours: extend the palette
            colours[q] = len(PALETTE) + q
            continue
        colours[q] = min(free, key=lambda c: (uses[c], c))
        uses[colours[q]] += 1
    return {q: _colour(i) for q, i in colours.items()}


def _colour(index: int) -> np.ndarray:
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 0.618033988749895) % 1.0  # golden-ratio hues beyond the palette
    import colorsys

    return np.array(colorsys.hsv_to_rgb(hue, 0.9, 0.95)) * 255.0


def draw_owners(image_rgb: np.ndarray, owner: np.ndarray, num_queries: int = None, alpha: float = 0.6,
                colours: dict = None) -> np.ndarray:
    """Blend one colour per query over the pixels it owns (owner == -1: dimmed)."""
    colours = owner_colours(owner) if colours is None else colours
    out = image_rgb.astype(np.float64) * 0.5  # dim the image so the colours stand out
    for query, colour in colours.items():
        mine = owner == query
        out[mine] = (1 - alpha) * image_rgb[mine] + alpha * colour
    # mark the borders between owners
    edges = np.zeros(owner.shape, dtype=bool)
    edges[1:, :] |= owner[1:, :] != owner[:-1, :]
    edges[:, 1:] |= owner[:, 1:] != owner[:, :-1]
    out[edges] = 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


LEGEND_WIDTH = 160


def add_legend(picture: np.ndarray, owner: np.ndarray, colours: dict, max_rows: int = None) -> np.ndarray:
    """The picture with a panel on its right: a swatch, the query index and its share of the
    image for each owning query (largest first), and the unclaimed share."""
    from PIL import Image, ImageDraw

    height = picture.shape[0]
    panel = Image.new("RGB", (LEGEND_WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    row = 14
    rows = max_rows or max(1, height // row - 2)
    total = owner.size
    shares = sorted(((int((owner == q).sum()), q) for q in colours), reverse=True)
    draw.text((6, 2), "query: share of pixels", fill=(0, 0, 0))
    y = 2 + row
    for i, (count, query) in enumerate(shares):
        if i == rows - 1 and len(shares) > rows:
            draw.text((6, y), f"... {len(shares) - i} more", fill=(0, 0, 0))
            y += row
            break
        draw.rectangle([6, y + 2, 18, y + 11], fill=tuple(int(c) for c in colours[query]), outline=(0, 0, 0))
        draw.text((24, y), f"q{query}: {100.0 * count / total:.1f}%", fill=(0, 0, 0))
        y += row
    unclaimed = int((owner < 0).sum())
    if y + row <= height:
        draw.rectangle([6, y + 2, 18, y + 11], fill=(64, 64, 64), outline=(0, 0, 0))
        draw.text((24, y), f"none: {100.0 * unclaimed / total:.1f}%", fill=(0, 0, 0))
    return np.concatenate([picture, np.asarray(panel)], axis=1)


def save_png(path: str, image_rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image_rgb).save(path, format="PNG")


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="demo")
    setup_logger(name="detectron2")
    cfg = LazyConfig.load(args.config_file)
    try:
        check_override_keys(cfg, args.opts)
        files = list_inputs(args.input)
        outputs = output_paths(files, args.output)
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    device = str(cfg.train.get("device", "cuda"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"

    model = instantiate(cfg.model).to(device).eval()
    checkpoint, source = resolve_checkpoint(cfg, args.checkpoint, args.opts)
    if checkpoint:
        logger.info(f"Weights: {checkpoint} (from {source})")
        DetectionCheckpointer(model).load(checkpoint)
    elif cfg.train.init_checkpoint:
        warn_untrained(
            f"no trained weights (no --checkpoint, no {cfg.train.output_dir}/model_final.pth): only "
            f"{cfg.train.init_checkpoint} is loaded, the heads are RANDOM. Pass --checkpoint FILE."
        )
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
    else:
        warn_untrained(
            f"no trained weights (no --checkpoint, no {cfg.train.output_dir}/model_final.pth): "
            f"drawing a RANDOMLY INITIALISED model. Pass --checkpoint FILE."
        )
    mapper = instantiate(cfg.dataloader.test.mapper)
    names = cfg.dataloader.test.dataset.names
    metadata = MetadataCatalog.get(names if isinstance(names, str) else names[0])

    os.makedirs(args.output, exist_ok=True)
    for path in files:
        inputs = mapper({"file_name": path})
        with torch.no_grad():
            instances = model([inputs])[0]["instances"].to("cpu")
            owner = model.query_ownership([inputs], threshold=args.owner_threshold)[0].cpu().numpy()
        instances = instances[instances.scores >= args.confidence_threshold]
        image_rgb = read_image(path, format="RGB")

        instances_png, queries_png = outputs[path]
        scale = max(1.0, args.min_size / max(image_rgb.shape[:2]))
        drawn = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
        drawn = drawn.draw_instance_predictions(instances).get_image()
        save_png(instances_png, drawn)
        factor = int(round(scale))  # nearest-neighbour enlargement keeps the owner borders sharp
        big_image = image_rgb.repeat(factor, axis=0).repeat(factor, axis=1)
        big_owner = owner.repeat(factor, axis=0).repeat(factor, axis=1)
        colours = owner_colours(owner)
        picture = draw_owners(big_image, big_owner, colours=colours)
        save_png(queries_png, add_legend(picture, owner, colours))
        logger.info(
            f"{path}: {len(instances)} instances >= {args.confidence_threshold}, "
            f"{len(colours)} queries own pixels"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
