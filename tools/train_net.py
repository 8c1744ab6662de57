#!/usr/bin/env python
"""Train or evaluate a LazyConfig model with detectron2's trainer.

    python tools/train_net.py --config-file configs/synthetic/influencer.py
    python tools/train_net.py --config-file configs/coco/influencer.py --num-gpus 8
    python tools/train_net.py --config-file CFG --resume              # continue from the last checkpoint
    python tools/train_net.py --config-file CFG --eval-only train.init_checkpoint=MODEL.pth
    python tools/train_net.py --config-file CFG train.max_iter=100 dataloader.train.total_batch_size=4

Everything after the flags is a ``key=value`` override of the config.  Without CUDA the
model runs on the CPU (AMP off); ``--num-gpus N`` then starts N CPU processes (gloo).
"""

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

logger = logging.getLogger("detectron2")


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
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            build_diagnostics_hook(cfg),  # before the writer: its scalars go out the same step
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period
            )
            if comm.is_main_process()
            else None,
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    if args.resume and checkpointer.has_checkpoint():
        # the checkpoint stores the iteration that just finished
        start_iter = trainer.iter + 1
    else:
        start_iter = 0
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    resolve_device(cfg)
    default_setup(cfg, args)

    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = build_ddp(cfg, model)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(args, cfg)


def invoke_main(argv=None) -> None:
    args = default_argument_parser().parse_args(argv)
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
