#!/usr/bin/env python
"""Draw a trained model's predictions.

    python tools/demo.py --config-file configs/synthetic/influencer.py \
        --input img1.png img2.jpg --output demo_out \
        train.init_checkpoint=output/synthetic_influencer/model_final.pth

For every input image two PNGs are written to --output:
  <name>.png         the instances scoring >= --confidence-threshold, drawn by
                     detectron2's Visualizer (mask, box, class, score);
  <name>_queries.png which query owns each pixel (argmax over queries of
                     P(object) x mask probability; pixels no query claims with at
                     least --owner-threshold are left uncoloured), one colour per query.
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
from detectron2.utils.colormap import colormap  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from detectron2.utils.visualizer import ColorMode, Visualizer  # noqa: E402

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

logger = logging.getLogger("demo")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input", nargs="+", required=True, help="image files or folders of images")
    p.add_argument("--output", required=True, help="folder for the PNGs (created if missing)")
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


def query_colours(num_queries: int) -> np.ndarray:
    palette = colormap(rgb=True, maximum=255)
    return np.stack([palette[i % len(palette)] for i in range(num_queries)]).astype(np.float64)


def draw_owners(image_rgb: np.ndarray, owner: np.ndarray, num_queries: int, alpha: float = 0.6) -> np.ndarray:
    """Blend one colour per query over the pixels it owns (owner == -1: untouched)."""
    colours = query_colours(num_queries)
    out = image_rgb.astype(np.float64) * 0.5  # dim the image so the colours stand out
    claimed = owner >= 0
    out[claimed] = (1 - alpha) * image_rgb[claimed] + alpha * colours[owner[claimed]]
    # mark the borders between owners
    edges = np.zeros_like(claimed)
    edges[1:, :] |= owner[1:, :] != owner[:-1, :]
    edges[:, 1:] |= owner[:, 1:] != owner[:, :-1]
    out[edges] = 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def save_png(path: str, image_rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image_rgb).save(path, format="PNG")


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="demo")
    setup_logger(name="detectron2")
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    device = str(cfg.train.get("device", "cuda"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"

    model = instantiate(cfg.model).to(device).eval()
    checkpoint = cfg.train.init_checkpoint
    if checkpoint:
        DetectionCheckpointer(model).load(checkpoint)
    else:
        logger.warning("train.init_checkpoint is empty: drawing an untrained model")
    mapper = instantiate(cfg.dataloader.test.mapper)
    names = cfg.dataloader.test.dataset.names
    metadata = MetadataCatalog.get(names if isinstance(names, str) else names[0])
    num_queries = model.transformer_decoder.num_queries

    os.makedirs(args.output, exist_ok=True)
    for path in list_inputs(args.input):
        inputs = mapper({"file_name": path})
        with torch.no_grad():
            instances = model([inputs])[0]["instances"].to("cpu")
            owner = model.query_ownership([inputs], threshold=args.owner_threshold)[0].cpu().numpy()
        instances = instances[instances.scores >= args.confidence_threshold]
        image_rgb = read_image(path, format="RGB")

        stem = os.path.splitext(os.path.basename(path))[0]
        scale = max(1.0, args.min_size / max(image_rgb.shape[:2]))
        drawn = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
        drawn = drawn.draw_instance_predictions(instances).get_image()
        save_png(os.path.join(args.output, f"{stem}.png"), drawn)
        factor = int(round(scale))  # nearest-neighbour enlargement keeps the owner borders sharp
        big_image = image_rgb.repeat(factor, axis=0).repeat(factor, axis=1)
        big_owner = owner.repeat(factor, axis=0).repeat(factor, axis=1)
        save_png(os.path.join(args.output, f"{stem}_queries.png"), draw_owners(big_image, big_owner, num_queries))
        logger.info(
            f"{path}: {len(instances)} instances >= {args.confidence_threshold}, "
            f"{len(np.unique(owner[owner >= 0]))} queries own pixels"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
