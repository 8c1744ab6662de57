#!/usr/bin/env python
"""Train or evaluate a LazyConfig model with detectron2's trainer.

    python tools/train_net.py --config-file configs/synthetic/influencer.py
    python tools/train_net.py --config-file configs/coco/influencer.py --num-gpus 8
    python tools/train_net.py --config-file CFG --resume              # continue from the last checkpoint
    python tools/train_net.py --config-file CFG --eval-only train.init_checkpoint=MODEL.pth
    python tools/train_net.py --config-file CFG train.max_iter=100 dataloader.train.total_batch_size=4

Everything after the flags is a ``key=value`` override of the config; a key the config does
not have is an error (``+key=value`` adds one on purpose).  Without CUDA the model runs on
the CPU (AMP off); ``--num-gpus N`` then starts N CPU processes (gloo), each with as many
torch threads as the cores left after the data-loader workers allow (``--cpu-threads``).

A run writes ``config.yaml``, ``log.txt``, ``metrics.json``, TensorBoard events,
``model_*.pth`` / ``last_checkpoint`` and ``inference/`` to ``train.output_dir``.  A new run
refuses a folder that holds another run's checkpoints or metrics: pass ``--resume`` to
continue it, another ``train.output_dir=...``, or ``--overwrite`` to replace it.
"""

import argparse
import contextlib
import logging
import os
import sys

import torch

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.engine import (  # noqa: E402
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model  # noqa: E402
from detectron2.evaluation import inference_on_dataset, print_csv_format  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from projects.mask2former.train_setup import (  # noqa: E402
    AtomicJSONWriter,
    OutputDirInUseError,
    UnknownOverrideKeyError,
    check_output_dir,
    check_override_keys,
    choose_cpu_threads,
)

logger = logging.getLogger("detectron2")


def load_config(args):
    """The config with the command line's overrides; an override of a key the config does
    not have raises ``UnknownOverrideKeyError`` (detectron2 would add the key silently)."""
    cfg = LazyConfig.load(args.config_file)
    check_override_keys(cfg, args.opts)
    return LazyConfig.apply_overrides(cfg, args.opts)


class _AtomicConfigSave:
    """Stands in for ``LazyConfig`` inside ``default_setup``: the config is written to a temporary
    file and renamed into place; an eval-only run into a training run's folder writes
    ``config_eval.yaml`` so that the training run keeps its ``config.yaml``."""

    def __init__(self, file_name: str):
        self.file_name = file_name

    def __getattr__(self, name):
        return getattr(LazyConfig, name)

    def save(self, cfg, path):
        path = os.path.join(os.path.dirname(path), self.file_name)
        tmp = f"{path}.tmp-{os.getpid()}"
        LazyConfig.save(cfg, tmp)
        if os.path.exists(tmp + ".pkl"):  # LazyConfig.save's fallback for unserialisable configs
            os.replace(tmp + ".pkl", path + ".pkl")
        if os.path.exists(tmp):
            os.replace(tmp, path)


@contextlib.contextmanager
def atomic_config_save(file_name: str = "config.yaml"):
    import detectron2.engine.defaults as d2_defaults

    original = d2_defaults.LazyConfig
    d2_defaults.LazyConfig = _AtomicConfigSave(file_name)
    try:
        yield
    finally:
        d2_defaults.LazyConfig = original


def set_cpu_threads(cfg, args) -> None:
    """On the CPU, torch's thread count from the cores left after the data-loader workers."""
    if str(cfg.train.device).startswith("cuda"):
        return
    loader = cfg.dataloader.test if args.eval_only else cfg.dataloader.train
    workers = int(loader.get("num_workers", 0) or 0)
    threads, why = choose_cpu_threads(workers, max(1, args.num_gpus), args.cpu_threads)
    torch.set_num_threads(threads)
    logger.info(f"CPU run: {threads} torch thread(s) per process ({why}); change with --cpu-threads N")


def resolve_device(cfg) -> None:
    """Fall back to the CPU (and switch AMP off) when CUDA is not available."""
    device = str(cfg.train.get("device", "cuda"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA is not available: training on the CPU")
        cfg.train.device = "cpu"
    if cfg.train.amp.enabled and not str(cfg.train.device).startswith("cuda"):
        logger.warning("AMP needs CUDA: disabled on the CPU")
        cfg.train.amp.enabled = False


def build_evaluator(cfg):
    if "evaluator" not in cfg.dataloader:
        return None
    if "output_dir" in cfg.dataloader.evaluator and cfg.dataloader.evaluator.output_dir is None:
        cfg.dataloader.evaluator.output_dir = os.path.join(cfg.train.output_dir, "inference")
    return instantiate(cfg.dataloader.evaluator)


def do_test(cfg, model):
    if "evaluator" not in cfg.dataloader:
        return {}
    data_loader = instantiate(cfg.dataloader.test)  # first: the synthetic data is generated here if missing
    results = inference_on_dataset(model, data_loader, build_evaluator(cfg))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def build_ddp(cfg, model):
    kwargs = dict(cfg.train.ddp)
    if not str(cfg.train.device).startswith("cuda"):
        kwargs["device_ids"] = None  # CPU module
        kwargs["fp16_compression"] = False
    return create_ddp_model(model, **kwargs)


def build_diagnostics_hook(cfg):
    """``AssignmentDiagnosticsHook`` on the first ``num_images`` training images, mapped without
    augmentation (the same probe at every logging step); None when ``period`` is 0."""
    diag = cfg.train.get("diagnostics")
    if not diag or int(diag.get("period", 0)) <= 0:
        return None
    from projects.mask2former.hooks import AssignmentDiagnosticsHook, unaugmented_inputs

    if int(diag.period) < int(cfg.train.log_period):
        logger.warning(f"train.diagnostics.period={diag.period} < train.log_period={cfg.train.log_period}: "
                       "metrics.json keeps only the last diagnostics between two writes")
    probe = unaugmented_inputs(cfg, int(diag.get("num_images", 8)), diag.get("dataset"))
    return AssignmentDiagnosticsHook(probe, int(diag.period))


def build_writers(cfg):
    """detectron2's default writers, with metrics.json rewritten atomically (see AtomicJSONWriter)."""
    writers = default_writers(cfg.train.output_dir, cfg.train.max_iter)
    metrics = os.path.join(cfg.train.output_dir, "metrics.json")
    return [AtomicJSONWriter(metrics) if type(w).__name__ == "JSONWriter" else w for w in writers]


def do_train(args, cfg):
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = build_ddp(cfg, model)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    writers = build_writers(cfg) if comm.is_main_process() else []
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            build_diagnostics_hook(cfg),  # before the writer: its scalars go out the same step
            hooks.PeriodicWriter(writers, period=cfg.train.log_period) if comm.is_main_process() else None,
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    if args.resume and checkpointer.has_checkpoint():
        # the checkpoint stores the iteration that just finished
        start_iter = trainer.iter + 1
    else:
        start_iter = 0
    for writer in writers:
        if isinstance(writer, AtomicJSONWriter):
            writer.set_start_iter(start_iter)
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    cfg = load_config(args)
    resolve_device(cfg)
    previous = check_output_dir(cfg.train.output_dir, args.resume, args.overwrite, args.eval_only)
    if previous and args.overwrite and comm.is_main_process() and not args.eval_only:
        # the new run's checkpoints and metrics replace the old ones as they are written; without
        # this pointer a --resume before the first new checkpoint would continue the old run
        last = os.path.join(cfg.train.output_dir, "last_checkpoint")
        if os.path.isfile(last):
            os.remove(last)
    with atomic_config_save("config_eval.yaml" if args.eval_only and previous else "config.yaml"):
        default_setup(cfg, args)
    if previous and args.overwrite and not args.eval_only:
        logger.warning(f"--overwrite: this run replaces the one in {cfg.train.output_dir}")
    set_cpu_threads(cfg, args)

    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = build_ddp(cfg, model)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(args, cfg)


def argument_parser() -> argparse.ArgumentParser:
    parser = default_argument_parser()
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in a train.output_dir that holds another run's checkpoints or metrics",
    )
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads per process on the CPU (default: the cores left after the data-loader "
        "workers; also $INFLUENCERFORMER_CPU_THREADS, $OMP_NUM_THREADS)",
    )
    return parser


def check_before_launch(args) -> None:
    """The checks that must fail before any process starts or any file is written."""
    cfg = load_config(args)
    check_output_dir(cfg.train.output_dir, args.resume, args.overwrite, args.eval_only)


def invoke_main(argv=None) -> None:
    args = argument_parser().parse_args(argv)
    try:
        check_before_launch(args)
    except (UnknownOverrideKeyError, OutputDirInUseError) as e:
        sys.exit(f"error: {e}")
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
