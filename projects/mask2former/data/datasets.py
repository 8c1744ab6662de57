"""Dataset registration and checks.

* COCO comes from detectron2's built-in registration (``coco_2017_train``,
  ``coco_2017_val``, ...) under ``$DETECTRON2_DATASETS``; :func:`check_dataset`
  turns a missing folder into an error that names the path and the variable.
* The synthetic shapes dataset (:mod:`..synthetic_coco`) is registered as
  ``synthetic_coco_train`` / ``synthetic_coco_val`` and generated on first use.
  Its root is ``$INFLUENCERFORMER_SYNTHETIC_ROOT`` if set, otherwise
  ``$DETECTRON2_DATASETS/synthetic_coco`` (``./datasets/synthetic_coco`` by default).
"""

import logging
import os
from typing import Dict, List, Optional, Sequence, Union

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.datasets import load_coco_json

__all__ = [
    "SYNTHETIC_NAMES",
    "synthetic_generator",
    "default_synthetic_root",
    "register_synthetic_coco",
    "check_dataset",
    "checked_dataset_dicts",
]

logger = logging.getLogger(__name__)

SYNTHETIC_PREFIX = "synthetic_coco"
SYNTHETIC_NAMES = (f"{SYNTHETIC_PREFIX}_train", f"{SYNTHETIC_PREFIX}_val")

# dataset name -> (root, spec) of the synthetic datasets registered in this process
_SYNTHETIC: Dict[str, tuple] = {}


def synthetic_generator():
    """The generator module (``projects/mask2former/synthetic_coco.py``)."""
    from .. import synthetic_coco

    return synthetic_coco


def _datasets_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def default_synthetic_root() -> str:
    root = os.getenv("INFLUENCERFORMER_SYNTHETIC_ROOT")
    if root:
        return os.path.expanduser(root)
    return os.path.join(_datasets_root(), SYNTHETIC_PREFIX)


def register_synthetic_coco(root: Optional[str] = None, spec=None, prefix: str = SYNTHETIC_PREFIX) -> List[str]:
    """Register ``{prefix}_train`` and ``{prefix}_val`` (replacing earlier registrations
    of these names). Nothing is generated until a split is first loaded.

    Args:
        root: dataset folder; default :func:`default_synthetic_root`.
        spec: a ``SyntheticCocoSpec`` used if the data has to be generated.
    Returns the registered names.
    """
    gen = synthetic_generator()
    root = os.path.abspath(root or default_synthetic_root())
    spec = spec or gen.SyntheticCocoSpec()
    thing_classes = [c["name"] for c in gen.CATEGORIES]
    names = []
    for split in gen.SPLITS:
        name = f"{prefix}_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        json_file = gen.annotation_file(root, split)
        image_root = gen.image_dir(root, split)

        def load(name=name, json_file=json_file, image_root=image_root):
            ensure_synthetic(name)
            return load_coco_json(json_file, image_root, name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=thing_classes,
            thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(gen.CATEGORIES)},
            synthetic_root=root,
        )
        _SYNTHETIC[name] = (root, spec)
        names.append(name)
    return names


def ensure_synthetic(name: str) -> None:
    """Generate the registered synthetic dataset ``name`` if its folder is missing; raise the
    generator's ``CorruptDatasetError`` (naming the file and the command that regenerates it)
    if its files are damaged."""
    root, spec = _SYNTHETIC[name]
    gen = synthetic_generator()
    if not gen.is_complete(root):
        logger.info(f"Generating the synthetic dataset under {root} (first use) ...")
    gen.ensure_dataset(root, spec)


def check_dataset(name: str) -> None:
    """Make sure the files of a registered dataset are there (generating the synthetic
    one if needed); raise FileNotFoundError naming the missing path otherwise."""
    if name in _SYNTHETIC:
        ensure_synthetic(name)
        return
    if name not in DatasetCatalog.list():
        raise KeyError(f"dataset {name!r} is not registered; registered: {', '.join(sorted(DatasetCatalog.list()))}")
    meta = MetadataCatalog.get(name)
    for key in ("image_root", "json_file", "panoptic_root", "sem_seg_root"):
        path = getattr(meta, key, None)
        if path is None or "://" in str(path):
            continue
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"dataset {name!r}: {key} {path!r} does not exist (resolved to {os.path.abspath(path)!r}). "
                f"detectron2's built-in datasets live under $DETECTRON2_DATASETS "
                f"(currently {os.getenv('DETECTRON2_DATASETS', '<unset>, i.e. ./datasets')!s}); "
                f"set DETECTRON2_DATASETS to the folder holding 'coco/' (see datasets/README.md)."
            )


def checked_dataset_dicts(names: Union[str, Sequence[str]], filter_empty: bool = True, **kwargs) -> List[Dict]:
    """``detectron2.data.get_detection_dataset_dicts`` after :func:`check_dataset` on each name."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    for name in names:
        check_dataset(name)
    return get_detection_dataset_dicts(names, filter_empty=filter_empty, **kwargs)


def coco_evaluator(dataset_name: str, output_dir: Optional[str] = None, **kwargs):
    """detectron2's ``COCOEvaluator`` after :func:`check_dataset`."""
    from detectron2.evaluation import COCOEvaluator

    check_dataset(dataset_name)
    return COCOEvaluator(dataset_name, output_dir=output_dir, **kwargs)


register_synthetic_coco()
