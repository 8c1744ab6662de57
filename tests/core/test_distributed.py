"""num_masks is averaged over torch.distributed workers (2 CPU processes, gloo)."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from influencerformer.criterion import HungarianCriterion
from influencerformer.matching import HungarianMatcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(rank: int):
    gen = torch.Generator().manual_seed(rank)
    num_inst = 1 + 2 * rank  # worker 0: 1 mask, worker 1: 3 masks -> mean 2
    outputs = {"pred_logits": [torch.randn(6, 4, generator=gen)], "pred_masks": [torch.randn(6, 30, generator=gen)]}
    targets = [{"labels": torch.zeros(num_inst, dtype=torch.long), "masks": torch.rand(num_inst, 30, generator=gen) > 0.5}]
    return outputs, targets


def _worker(rank: int, port: int, result_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    crit = HungarianCriterion(3, HungarianMatcher(), {"loss_ce": 1, "loss_mask": 1, "loss_dice": 1})
    losses = crit(*_batch(rank))
    dist.destroy_process_group()
    torch.save({k: v.detach() for k, v in losses.items()}, os.path.join(result_dir, f"{rank}.pt"))


def test_num_masks_is_averaged_over_workers(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    crit = HungarianCriterion(3, HungarianMatcher(), {"loss_ce": 1, "loss_mask": 1, "loss_dice": 1})
    for rank in (0, 1):
        distributed = torch.load(tmp_path / f"{rank}.pt")
        local = crit(*_batch(rank))  # not distributed: divides by the local count 1 or 3
        local_count = 1 + 2 * rank
        for key in ("loss_mask", "loss_dice"):
            expected = local[key] * local_count / 2.0
            assert torch.allclose(distributed[key], expected, rtol=1e-5), (rank, key)
        assert torch.allclose(distributed["loss_ce"], local["loss_ce"])
