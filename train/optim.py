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


def build_optimizer(model: torch.nn.Module, o: OptimConfig, device: torch.device) -> "torch.optim.AdamW | PlainAdamW":
    """AdamW (Loshchilov & Hutter 2019: decay decoupled from the gradient) over `model.param_groups`.

    Each group carries `lr_mult` (1.0 under SP, muP's per-group multiplier); the
    trainer sets group["lr"] = lr_at(step) * lr_mult before each update.
    """
    groups = model.param_groups(o.weight_decay, o.exclude_from_decay)
    for g in groups:
        g.setdefault("lr_mult", 1.0)
        g["lr"] = o.lr * g["lr_mult"]
    if device.type == "cpu":
        return PlainAdamW(groups, betas=(o.beta1, o.beta2), eps=o.eps)
    fused = bool(o.fused and device.type == "cuda")
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused)


class PlainAdamW:
    """torch's single-tensor AdamW written out, for the CPU: the same operations in the same order
    (so the same numbers, bit for bit: `tests/test_optim.py`), and a state dict in torch's layout,
    so a checkpoint moves between this and `torch.optim.AdamW` either way.

    Why not torch.optim.AdamW on the CPU: its `add_param_group` and `step` import torch._dynamo on
    first use, about 1.8 s of a CPU sweep worker's ~4.5 s start-up (torch 2.13), paid by every run a
    sweep launches. On CUDA the fused torch kernel is used instead. No amsgrad, no maximize, no
    sparse gradients: the trainer uses none of them.
    """

    def __init__(self, groups: list[dict], betas: tuple[float, float], eps: float):
        self.param_groups: list[dict] = []
        for g in groups:
            group = dict(g, params=list(g["params"]))
            group.setdefault("betas", betas)
            group.setdefault("eps", eps)
            group.setdefault("weight_decay", 0.0)
            # torch AdamW's remaining options, at the values this class implements, so that a
            # state dict saved here loads into torch.optim.AdamW unchanged
            for k, v in (("amsgrad", False), ("maximize", False), ("foreach", None), ("capturable", False),
                         ("differentiable", False), ("fused", None), ("decoupled_weight_decay", True)):
                group.setdefault(k, v)
            self.param_groups.append(group)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        for g in self.param_groups:
            lr, wd, eps = g["lr"], g["weight_decay"], g["eps"]
            beta1, beta2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                st = self.state.get(p)
                if not st:
                    st = self.state[p] = {"step": torch.tensor(0.0, dtype=torch.float32),
                                          "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                          "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
                exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
                st["step"] += 1
                if wd != 0:
                    p.mul_(1 - lr * wd)                        # decoupled decay (Loshchilov & Hutter 2019)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = st["step"].item()
                step_size = lr / (1 - beta1 ** step)
                denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict:
        """torch's layout: parameters numbered in group order; state keyed by those numbers."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            for p in g["params"]:
                index.setdefault(id(p), len(index))
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": [index[id(p)] for p in g["params"]]})
        return {"state": {index[id(p)]: st for p, st in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict of this class or of torch.optim.AdamW over the same parameter groups."""
        saved = state_dict["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the optimizer state's parameter groups do not match the model's "
                             f"({[len(g['params']) for g in saved]} parameters per group, "
                             f"expected {[len(g['params']) for g in self.param_groups]})")
        params = {i: p for s, g in zip(saved, self.param_groups) for i, p in zip(s["params"], g["params"])}
        self.state = {}
        for i, st in state_dict["state"].items():
            p = params[i]
            self.state[p] = {k: (v.to(torch.float32, copy=True).cpu() if k == "step"
                                 else v.to(dtype=p.dtype, device=p.device, copy=True)) for k, v in st.items()}
        self.param_groups = [{**s, "params": g["params"]} for s, g in zip(saved, self.param_groups)]


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
