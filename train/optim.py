"""AdamW over the model's parameter groups, per-step lr, clipping, and batch splitting."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.config import ConfigError, OptimConfig, RunConfig


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's global batch is split across ranks and micro-batches."""
    global_rows: int      # sequences per optimizer step, all ranks
    rank_rows: int        # sequences this rank processes per step
    micro_rows: int       # sequences per forward/backward
    accum_steps: int      # micro-batches per step on each rank

    def rank_slice(self, rank: int) -> slice:
        return slice(rank * self.rank_rows, (rank + 1) * self.rank_rows)


def plan_batches(cfg: RunConfig, world_size: int = 1) -> BatchPlan:
    """Split train.batch_tokens over `world_size` ranks and micro-batches of train.micro_batch_tokens.

    Gradient accumulation = rank rows / micro rows; every micro-batch has the same
    size, so averaging the micro-batch mean losses gives the global-batch mean.
    """
    rows = cfg.batch_size
    if rows % world_size:
        raise ConfigError(
            f"train.batch_tokens={cfg.train.batch_tokens} is {rows} sequences, which does not split "
            f"evenly over {world_size} ranks")
    rank_rows = rows // world_size
    micro = cfg.train.micro_batch_tokens // cfg.model.context if cfg.train.micro_batch_tokens else rank_rows
    micro = min(micro, rank_rows)
    if rank_rows % micro:
        raise ConfigError(
            f"train.micro_batch_tokens={cfg.train.micro_batch_tokens} ({micro} sequences) does not divide "
            f"the {rank_rows} sequences each of the {world_size} ranks takes per step")
    return BatchPlan(rows, rank_rows, micro, rank_rows // micro)


def build_optimizer(model: torch.nn.Module, o: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019: decay decoupled from the gradient) over `model.param_groups`.

    Each group carries `lr_mult` (1.0 under SP, muP's per-group multiplier); the
    trainer sets group["lr"] = lr_at(step) * lr_mult before each update.
    """
    groups = model.param_groups(o.weight_decay, o.exclude_from_decay)
    for g in groups:
        g.setdefault("lr_mult", 1.0)
        g["lr"] = o.lr * g["lr_mult"]
    fused = bool(o.fused and device.type == "cuda")
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_mult"]


def clip_grads(model: torch.nn.Module, max_norm: float) -> torch.Tensor | None:
    """Clip the global gradient norm (0 disables); returns the pre-clip norm as a device tensor (no host sync)."""
    if max_norm <= 0:
        return None
    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)


def smaller_micro_batch(plan: BatchPlan) -> BatchPlan | None:
    """The plan with the largest micro-batch of at most half the current rows that still divides
    the rank's rows (the out-of-memory fallback); None when a micro-batch is already one row.
    Accumulating more, smaller micro-batches computes the same mean loss and gradient."""
    for m in range(plan.micro_rows // 2, 0, -1):
        if plan.rank_rows % m == 0:
            return BatchPlan(plan.global_rows, plan.rank_rows, m, plan.rank_rows // m)
    return None


def pack_plan(plan: BatchPlan, k: int, device_type: str) -> BatchPlan:
    """The micro-batch of a pack of `k` models.

    On CUDA one forward of a pack holds k models' activations, so the single run's
    micro-batch (the memory one run is allowed) is divided by k, down to a divisor of the
    rank's rows (K=32 at the GPU demo's 65k-token batches would otherwise need ~200 GB).
    On the CPU the micro-batch stays as the single run's: host memory is not the limit at
    CPU model sizes, and the fewer, larger matmuls are what packing is for.
    """
    if device_type != "cuda" or k <= 1:
        return plan
    target = max(1, plan.micro_rows // k)
    micro = max(m for m in range(1, target + 1) if plan.rank_rows % m == 0)
    return BatchPlan(plan.global_rows, plan.rank_rows, micro, plan.rank_rows // micro)
