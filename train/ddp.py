"""Data-parallel training under torchrun: process group from the environment, rank helpers.

`torchrun --nproc_per_node K -m train CONFIG --out DIR` starts K processes;
each takes its rows of every global batch, gradients are averaged by
DistributedDataParallel, and rank 0 alone writes the run directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank and world size as torchrun sets them (a single process when unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (nccl on CUDA, gloo on CPU); a no-op for a single process."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of `t` over ranks (a copy; `t` itself is unchanged)."""
    out = t.detach().clone()
    if info.enabled:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    return all_sum(t, info) / info.world_size
