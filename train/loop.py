"""The training loop: one function that reads top to bottom.

`train(cfg, out_dir)` assumes `train.api` already checked the run directory.
It builds data, model and optimizer, restores a checkpoint (own, or the
`train.init_from` parent for branches), then: micro-batches, clip, step, log,
evaluate at log-spaced steps, checkpoint on schedule, and writes summary.json
at the end, on divergence, and on failure.

Eval points: `eval.points` log-spaced steps from 1 to the last step (rounded
and deduplicated) plus the last step. Step 0 is not evaluated: a curve point
at zero tokens has no place on the log axes scaling fits use.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from models import build_model
from models.counting import flops_per_token, param_counts
from train import checkpoint as ckpt
from train import ddp
from train.config import ConfigError, RunConfig
from train.contract import COMPLETED, DIVERGED, eval_steps
from train.data import build_data
from train.optim import BatchPlan, build_optimizer, clip_grads, plan_batches, set_lr
from train.provenance import provenance
from train.rundir import CKPT_DIR, METRICS, SUMMARY, atomic_write_json, read_metrics, write_metrics
from train.schedules import lr_curve
from train.trackers import open_trackers

Progress = Callable[[dict[str, Any]], None]


class Diverged(RuntimeError):
    """The train loss became NaN/inf or exceeded run.diverge_factor x its first value."""


def resolve_device(spec: str, info: ddp.DistInfo) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={spec!r} but CUDA is not available")
        if spec == "cuda":
            spec = f"cuda:{info.local_rank}"
    return torch.device(spec)


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA by default (or when asked for), plain fp32 otherwise."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_threads(requested: int) -> int | None:
    """Torch CPU threads: train.threads when set; else, with several ranks on one host, a fair share of
    the cores (K ranks x all cores oversubscribes the CPU, and OpenMP threads that wait on each other
    make small matmuls many times slower); else torch's default (None), which honours OMP_NUM_THREADS."""
    if requested:
        return requested
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_world > 1 and "OMP_NUM_THREADS" not in os.environ:
        return max(1, (os.cpu_count() or 1) // local_world)
    return None


def load_data(cfg: RunConfig, device: torch.device):
    """The run's data source, its fixed validation tokens on `device`, and their exact loss floor (or None)."""
    data = build_data(cfg.data, cfg.model.context)
    if data.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is below the data's vocabulary ({data.vocab_size})")
    val_NxT1 = data.val_batch(cfg.eval.tokens)
    floor = data.loss_floor(val_NxT1)
    return data, val_NxT1.to(device), floor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lm_loss(model: torch.nn.Module, batch_BxT1: torch.Tensor, amp: contextlib.AbstractContextManager) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of a (B, T+1) window batch."""
    x_BxT, y_BxT = batch_BxT1[:, :-1], batch_BxT1[:, 1:]
    with amp:
        logits_BxTxV, _ = model(x_BxT)
    return F.cross_entropy(logits_BxTxV.float().flatten(0, 1), y_BxT.flatten())


@torch.no_grad()
def evaluate(model: torch.nn.Module, val_NxT1: torch.Tensor, rows: int, amp_factory: Callable[[], Any],
             info: ddp.DistInfo) -> float:
    """Mean val loss over the fixed held-out windows; ranks split the windows and sum."""
    was_training = model.training
    model.eval()
    mine = val_NxT1[info.rank::info.world_size]
    total = torch.zeros((), dtype=torch.float64, device=val_NxT1.device)
    for i in range(0, len(mine), rows):
        chunk = mine[i:i + rows]
        total += lm_loss(model, chunk, amp_factory()).double() * chunk[:, 1:].numel()
    model.train(was_training)
    return (ddp.all_sum(total, info) / val_NxT1[:, 1:].numel()).item()


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch_BxT1: torch.Tensor,
               plan: BatchPlan, amp_factory: Callable[[], Any], grad_clip: float, distributed: bool) -> torch.Tensor:
    """One optimizer update on this rank's rows: micro-batches, clip, step. Returns the mean loss
    as a device tensor (no host sync)."""
    loss_sum = torch.zeros((), device=batch_BxT1.device)
    for m in range(plan.accum_steps):
        micro_BxT1 = batch_BxT1[m * plan.micro_rows:(m + 1) * plan.micro_rows]
        # under DDP only the last micro-batch all-reduces the gradients
        skip_sync = distributed and m < plan.accum_steps - 1
        with model.no_sync() if skip_sync else contextlib.nullcontext():
            loss = lm_loss(model, micro_BxT1, amp_factory()) / plan.accum_steps
            loss.backward()
        loss_sum += loss.detach()
    clip_grads(model, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


def finite_or_none(x: float) -> float | None:
    """x, or None for NaN/inf (JSON rows hold null for a diverged loss)."""
    return x if math.isfinite(x) else None


def _check_branch_compatible(cfg: RunConfig, parent: dict[str, Any], step: int) -> None:
    """A branch must share everything that shaped the parent's first `step` updates."""
    mine = cfg.to_dict()
    for section in ("model", "data", "optim"):
        for k, v in mine[section].items():
            if parent[section].get(k) != v:
                raise ConfigError(
                    f"train.init_from: {section}.{k} differs from the parent run ({parent[section].get(k)!r} there, {v!r} here)")
    for key in (("run", "seed"), ("train", "batch_tokens")):
        if parent[key[0]][key[1]] != mine[key[0]][key[1]]:
            raise ConfigError(f"train.init_from: {'.'.join(key)} differs from the parent run")
    parent_cfg = RunConfig.from_dict(parent)
    if step > cfg.steps:
        raise ConfigError(f"train.init_from: the checkpoint is at step {step}, past this run's {cfg.steps} steps")
    ours = lr_curve(cfg.steps, cfg.optim.lr, cfg.schedule)[:step]
    theirs = lr_curve(parent_cfg.steps, parent_cfg.optim.lr, parent_cfg.schedule)[:step]
    if not np.array_equal(ours, theirs):
        first = int(np.argmax(ours != theirs)) + 1
        raise ConfigError(
            f"train.init_from: schedule differs from the parent run's at step {first} "
            f"(lr {theirs[first - 1]:.6g} there, {ours[first - 1]:.6g} here); a WSD cooldown must branch "
            f"inside the stable phase of both runs")


def restore(cfg: RunConfig, out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            device: torch.device, info: ddp.DistInfo) -> tuple[int, float | None, float, dict | None]:
    """Load the run's latest checkpoint, else the `train.init_from` parent's; align metrics.jsonl with it.

    Returns (step, first loss, elapsed seconds, tracker state); (0, None, 0.0, None) for a fresh start.
    """
    metrics_path = out / METRICS
    resume_from = ckpt.latest_checkpoint(out / CKPT_DIR)
    source = resume_from or (Path(cfg.train.init_from) if cfg.train.init_from else None)
    if source is None:
        if info.is_main and metrics_path.exists():
            write_metrics(metrics_path, [])  # a run stopped before its first checkpoint starts over
        return 0, None, 0.0, None
    state = ckpt.load_checkpoint(source, map_location=device)
    step = state["step"]
    if not resume_from:
        _check_branch_compatible(cfg, state["config"], step)
    if state["data_index"] != step:
        raise ValueError(f"checkpoint {source}: data position {state['data_index']} does not match step {step}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    ckpt.set_rng_state(state["rng"])
    if info.is_main:
        # rows past the checkpoint belong to a run that no longer exists (resume), or to the
        # parent's own future (branch): keep only steps <= the checkpoint's step
        rows = read_metrics(metrics_path if resume_from else source.parent.parent / METRICS)
        write_metrics(metrics_path, [r for r in rows if r["step"] <= step])
    return step, state["first_loss"], state["elapsed_s"], (state.get("tracker") if resume_from else None)


def metrics_row(cfg: RunConfig, fpt: float, lrs, kind: str, step: int, time_s: float, **values: Any) -> dict[str, Any]:
    """One metrics.jsonl row (train or eval) of a run at `step`; the same for single and packed runs."""
    tokens = step * cfg.train.batch_tokens
    return {"kind": kind, "step": step, "tokens": tokens, "flops": tokens * fpt,
            "lr": float(lrs[step - 1]) if step else 0.0, "time_s": round(time_s, 4), **values}


def run_summary(cfg: RunConfig, status: str, *, counts: dict, fpt: float, last_train, last_val, floor,
                step: int, wall_s: float, step_tokens: int, step_time: float, device: str, world_size: int,
                data_description: dict, **extra: Any) -> dict[str, Any]:
    """The summary.json of a run (DESIGN.md's run directory); the single-run and packed trainers both write it."""
    return {"status": status, "run_id": cfg.run_id(),
            "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
            "params_embedding": counts["embedding"], "flops_per_token": fpt,
            "flop_convention": cfg.run.flop_convention,
            "final_train_loss": last_train, "final_val_loss": last_val, "loss_floor": floor,
            "tokens": step * cfg.train.batch_tokens, "steps": step, "total_steps": cfg.steps,
            "wall_time_s": round(wall_s, 3), "tokens_per_s": round(step_tokens / max(step_time, 1e-9), 1),
            "device": device, "world_size": world_size, "data": data_description, **provenance(), **extra}


def train(cfg: RunConfig, out_dir: str | Path, info: ddp.DistInfo = ddp.DistInfo(),
          progress: Progress | None = None) -> dict[str, Any]:
    """Train `cfg` (resolved) into `out_dir`; return the summary (also written to summary.json on rank 0)."""
    out = Path(out_dir)
    t_start = time.perf_counter()
    device = resolve_device(cfg.train.device, info)
    ddp.init(info, device)
    threads = cpu_threads(cfg.train.threads)
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_factory = lambda: autocast(device, cfg.train.dtype)  # noqa: E731  (a fresh context per use)

    # ---- data, model, optimizer -----------------------------------------
    plan: BatchPlan = plan_batches(cfg, info.world_size)
    data, val_NxT1, floor = load_data(cfg, device)
    seed_everything(cfg.run.seed)
    model = build_model(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg.optim, device)
    counts = param_counts(cfg.model)
    fpt = flops_per_token(cfg.model, cfg.run.flop_convention)
    total = cfg.steps
    lrs = lr_curve(total, cfg.optim.lr, cfg.schedule)
    evals = set(eval_steps(total, cfg.eval.points))
    log_every = cfg.run.log_every or max(1, total // 200)
    policy = ckpt.CheckpointPolicy.from_config(cfg.run.ckpt_every, cfg.run.ckpt_keep, cfg.run.ckpt_steps, total)
    eval_rows = cfg.eval.batch_size or plan.micro_rows

    # ---- restore: own checkpoint first, else the branch parent -----------
    metrics_path, ckpt_dir = out / METRICS, out / CKPT_DIR
    step, first_loss, elapsed, tracker_state = restore(cfg, out, model, optimizer, device, info)
    prior = read_metrics(metrics_path) if info.is_main else []
    last_train = next((r["loss"] for r in reversed(prior) if r["kind"] == "train"), None)
    last_val = next((r["val_loss"] for r in reversed(prior) if r["kind"] == "eval"), None)

    raw_model = model
    if cfg.train.compile:
        model = torch.compile(model)
    eval_model = model  # evaluation bypasses DDP: ranks evaluate different numbers of windows
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    trackers = open_trackers(metrics_path, cfg.run, cfg.run_id(), cfg.to_dict(), tracker_state) if info.is_main else None

    def row(kind: str, s: int, **values: Any) -> dict[str, Any]:
        return metrics_row(cfg, fpt, lrs, kind, s, elapsed + time.perf_counter() - t_start, **values)

    def summary(status: str, **extra: Any) -> dict[str, Any]:
        s = run_summary(cfg, status, counts=counts, fpt=fpt, last_train=last_train, last_val=last_val, floor=floor,
                        step=step, wall_s=elapsed + time.perf_counter() - t_start, step_tokens=step_tokens,
                        step_time=step_time, device=str(device) + (f" x{info.world_size}" if info.enabled else ""),
                        world_size=info.world_size, data_description=data.describe(), **extra)
        if info.is_main:
            atomic_write_json(out / SUMMARY, s)
        return s

    # ---- the loop ------------------------------------------------------
    step_tokens, step_time = 0, 0.0   # tokens and seconds of optimizer steps in this process (evals excluded)
    worst = torch.zeros((), device=device)  # running max of the step loss since the last check (NaN propagates)
    check_every = 1 if device.type == "cpu" else log_every  # a divergence check is a host sync on CUDA
    model.train()
    try:
        while step < total:
            t0 = time.perf_counter()
            step += 1
            set_lr(optimizer, float(lrs[step - 1]))
            batch_BxT1 = data.train_batch(step - 1, plan.global_rows)[plan.rank_slice(info.rank)]
            loss_sum = train_step(model, optimizer, batch_BxT1.to(device, non_blocking=True), plan,
                                  amp_factory, cfg.train.grad_clip, info.enabled)
            worst = torch.maximum(worst, loss_sum)
            step_time += time.perf_counter() - t0
            step_tokens += cfg.train.batch_tokens

            log_now = step == 1 or step % log_every == 0 or step == total
            if log_now or step % check_every == 0:
                w, cur = ddp.all_mean(torch.stack([worst, loss_sum]), info).tolist()
                first_loss = cur if first_loss is None else first_loss
                diverged = not (math.isfinite(w) and w <= cfg.run.diverge_factor * first_loss)
                if log_now or diverged:
                    last_train = finite_or_none(cur)
                    if trackers:
                        trackers.log(row("train", step, loss=last_train))
                if diverged:
                    raise Diverged(f"train loss {w:.4g} at step {step} (first loss {first_loss:.4g}, "
                                   f"run.diverge_factor={cfg.run.diverge_factor})")
                worst = torch.zeros((), device=device)
            if step in evals:
                last_val = evaluate(eval_model, val_NxT1, eval_rows, amp_factory, info)
                r = row("eval", step, val_loss=finite_or_none(last_val))
                if trackers:
                    trackers.log(r)
                if progress and info.is_main:
                    progress({**r, "loss": last_train, "total_steps": total})
            if policy.due(step) and info.is_main:
                ckpt.save_checkpoint(ckpt.ckpt_path(ckpt_dir, step), {
                    "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step, "data_index": step, "first_loss": first_loss,
                    "elapsed_s": elapsed + time.perf_counter() - t_start, "rng": ckpt.rng_state(),
                    "tracker": trackers.state() if trackers else {}, "config": cfg.to_dict()})
                policy.prune(ckpt_dir)
        return summary(COMPLETED)
    except Diverged as e:
        return summary(DIVERGED, error=str(e))
    except BaseException as e:
        summary("failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if trackers:
            trackers.close()
