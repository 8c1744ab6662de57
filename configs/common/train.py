"""Options read by tools/train_net.py."""

train = dict(
    output_dir="./output",
    # "" = random init; the COCO configs load detectron2's ImageNet R-50 weights
    init_checkpoint="",
    max_iter=90000,
    amp=dict(enabled=False),  # switched off automatically on CPU
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=3),
    eval_period=5000,
    log_period=20,
    device="cuda",  # tools/train_net.py falls back to "cpu" when CUDA is unavailable
    seed=-1,  # < 0: random
    # assignment diagnostics (diag/* in metrics.json) on the first num_images training images,
    # every period iterations; dataset=None: the training set; period=0: off
    diagnostics=dict(period=1000, num_images=8, dataset=None),
)
