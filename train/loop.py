"""The training loop: one function that reads top to bottom, and the single-run trainer.

`run_loop(steps, books, ...)` is the loop both trainers share. Each run keeps a
`train.book.RunBook` (rows, evals, divergence, checkpoint payload, summary); what
differs between trainers is only the stepper, which takes an optimizer step:
`SingleStep` here (one model, possibly under DDP), `train.packed.PackStep` (K
models stacked into one). Per step the loop: takes the batch (built ahead and,
on CUDA, pinned and copied asynchronously), lets the stepper update, reads the
losses back when any run logs, evaluates or checkpoints (a host sync on CUDA;
on CPU every step), checks divergence, evaluates, checkpoints, and retires runs
that finished or diverged.

`train(cfg, out_dir)` assumes `train.api` already checked and locked the run
directory. Eval points: `eval.points` log-spaced steps from 1 to the last step
(rounded and deduplicated) plus the last step (train/contract.py).
"""
from __future__ import annotations

import contextlib
import inspect
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models import build_model
from train import ddp
from train.book import Progress, RunBook, find_resume, finite_or_none, load_branch, warn  # noqa: F401  (finite_or_none re-exported)
from train.checkpoint import set_rng_state
from train.config import ConfigError, RunConfig
from train.contract import COMPLETED, DIVERGED
from train.data import build_data, fingerprint
from train.optim import BatchPlan, build_optimizer, clip_grads, plan_batches, set_lr, smaller_micro_batch


def resolve_device(spec: str, info: ddp.DistInfo) -> torch.device:
    """The device of this process. Under torchrun each rank takes cuda:LOCAL_RANK; an explicit
    cuda:N would put every rank on one GPU, so it is refused there."""
    if info.enabled and spec.startswith("cuda:"):
        raise ConfigError(f"train.device={spec!r} under torchrun would put all {info.world_size} ranks on one GPU; "
                          f"use train.device=cuda (rank r takes cuda:LOCAL_RANK) and CUDA_VISIBLE_DEVICES to choose GPUs")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={spec!r} but CUDA is not available")
        if spec == "cuda":
            spec = f"cuda:{info.local_rank}"
    return torch.device(spec)


def precision(requested: str, device: torch.device, pinned: str | None = None) -> str:
    """The dtype a run trains in: train.dtype, with `auto` resolved once per run.

    auto is bf16 autocast on CUDA and fp32 elsewhere when a run starts; a resumed run keeps
    the precision its checkpoint was written in (`pinned`), so a CPU run resumed on a GPU
    stays fp32 instead of switching precision halfway along its curve.
    """
    if requested != "auto":
        return requested
    if pinned and pinned != "auto":
        return pinned
    return "bfloat16" if device.type == "cuda" else "float32"


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when the run's dtype is bfloat16 (or auto on CUDA), plain fp32 otherwise."""
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


def set_up_device(cfg: RunConfig, device: torch.device) -> None:
    threads = cpu_threads(cfg.train.threads)
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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


def eval_chunks(val_NxT1: torch.Tensor, rows: int, full: Callable, short: Callable):
    """(chunk, forward) over the val windows in chunks of `rows`: `full` for whole chunks and
    `short` for a shorter last one, so a compiled forward never sees a second batch shape."""
    for i in range(0, len(val_NxT1), rows):
        chunk = val_NxT1[i:i + rows]
        yield chunk, (full if len(chunk) == rows else short)


@torch.no_grad()
def evaluate(model: torch.nn.Module, val_NxT1: torch.Tensor, rows: int, amp_factory: Callable[[], Any],
             info: ddp.DistInfo, eager: torch.nn.Module | None = None) -> float:
    """Mean val loss over the fixed held-out windows; ranks split the windows and sum.

    The model is not switched to eval mode: neither model has dropout or batch statistics,
    and a mode switch would make a compiled model compile again.
    """
    mine = val_NxT1[info.rank::info.world_size]
    total = torch.zeros((), dtype=torch.float64, device=val_NxT1.device)
    for chunk, fwd in eval_chunks(mine, rows, model, eager or model):
        total += lm_loss(fwd, chunk, amp_factory()).double() * chunk[:, 1:].numel()
    return (ddp.all_sum(total, info) / val_NxT1[:, 1:].numel()).item()


def accumulate(model: torch.nn.Module, batch_BxT1: torch.Tensor, plan: BatchPlan, amp_factory: Callable[[], Any],
               distributed: bool) -> torch.Tensor:
    """Forward and backward of this rank's rows in micro-batches; returns the mean loss (no host sync)."""
    loss_sum = torch.zeros((), device=batch_BxT1.device)
    for m in range(plan.accum_steps):
        micro_BxT1 = batch_BxT1[m * plan.micro_rows:(m + 1) * plan.micro_rows]
        # under DDP only the last micro-batch all-reduces the gradients
        skip_sync = distributed and m < plan.accum_steps - 1
        with model.no_sync() if skip_sync else contextlib.nullcontext():
            loss = lm_loss(model, micro_BxT1, amp_factory()) / plan.accum_steps
            loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch_BxT1: torch.Tensor,
               plan: BatchPlan, amp_factory: Callable[[], Any], grad_clip: float, distributed: bool) -> torch.Tensor:
    """One optimizer update on this rank's rows: micro-batches, clip, step. Returns the mean loss
    as a device tensor (no host sync)."""
    loss_sum = accumulate(model, batch_BxT1, plan, amp_factory, distributed)
    clip_grads(model, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


def take_step(stepper: Any, accumulate_fn: Callable[[BatchPlan], torch.Tensor]) -> torch.Tensor:
    """`accumulate_fn(stepper.plan)` (forward and backward of one step), retried with smaller
    micro-batches when the device runs out of memory.

    Only the gradient pass is retried, never the optimizer update, so a retried step applies
    exactly one update (the same gradient, up to float rounding of the finer accumulation).
    Under DDP an out-of-memory error is raised: every rank would have to agree to retry.
    """
    while True:
        try:
            return accumulate_fn(stepper.plan)
        except torch.OutOfMemoryError:
            smaller = smaller_micro_batch(stepper.plan)
            if smaller is None or getattr(stepper, "distributed", False):
                raise
            stepper.zero_grad()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            warn(f"out of memory with micro-batches of {stepper.plan.micro_rows} sequences; "
                 f"continuing with {smaller.micro_rows} (train.micro_batch_tokens={smaller.micro_rows * stepper.context})")
            stepper.plan = smaller


class Batches:
    """Training batches by index, built one step ahead: the next batch is assembled on the CPU
    while the device runs the current step, and on CUDA copied from pinned memory without
    blocking the host."""

    def __init__(self, data, plan: BatchPlan, rank: int, device: torch.device, last: int):
        self.data, self.plan, self.rank, self.device, self.last = data, plan, rank, device, last
        self._next: tuple[int, torch.Tensor] | None = None

    def _build(self, index: int) -> torch.Tensor:
        batch = self.data.train_batch(index, self.plan.global_rows)[self.plan.rank_slice(self.rank)]
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def get(self, index: int) -> torch.Tensor:
        if self._next is not None and self._next[0] == index:
            batch = self._next[1]
        else:
            batch = self._build(index)
        self._next = None
        return batch

    def prefetch(self, index: int) -> None:
        if index < self.last:
            self._next = (index, self._build(index))


class SingleStep:
    """The single-run stepper: one model (compiled and/or DDP-wrapped), its AdamW, its batch plan."""

    def __init__(self, book: RunBook, model: torch.nn.Module, optimizer: torch.optim.Optimizer, plan: BatchPlan,
                 amp_factory: Callable[[], Any], info: ddp.DistInfo, device: torch.device, compile: bool):
        self.books: list[RunBook | None] = [book]
        self.raw, self.optimizer, self.plan, self.amp, self.info = model, optimizer, plan, amp_factory, info
        self.distributed, self.context = info.enabled, book.cfg.model.context
        # DDP wraps the plain module and is compiled as a whole (torch docs, "DDP and torch.compile"),
        # so gradient all-reduce still overlaps the backward; buffers are derived constants (rope
        # tables), not state to re-broadcast every step.
        self.model = model
        if info.enabled:
            ddp_cls = torch.nn.parallel.DistributedDataParallel
            no_buffer_sync = ({"forward_sync_buffers": False}   # torch >= 2.12 names it so
                              if "forward_sync_buffers" in inspect.signature(ddp_cls.__init__).parameters
                              else {"broadcast_buffers": False})
            self.model = ddp_cls(model, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync)
        self.eval_model = model   # evaluation bypasses DDP: ranks evaluate different numbers of windows
        if compile:
            self.model = torch.compile(self.model)
            self.eval_model = torch.compile(model) if info.enabled else self.model

    def step(self, step: int, batch_BxT1: torch.Tensor) -> torch.Tensor:
        book = self.books[0]
        set_lr(self.optimizer, book.lr(step))
        loss = take_step(self, lambda plan: accumulate(self.model, batch_BxT1, plan, self.amp, self.distributed))
        clip_grads(self.model, book.cfg.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.view(1)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def evaluate(self, val_NxT1: torch.Tensor, rows: int) -> list[float]:
        return [evaluate(self.eval_model, val_NxT1, rows, self.amp, self.info, eager=self.raw)]

    def checkpoint(self, slot: int, step: int) -> dict[str, Any]:
        return {"model": self.raw.state_dict(), "optimizer": self.optimizer.state_dict()}

    def without(self, stopped: set[int]) -> tuple[None, list[int]]:
        return None, []


def run_loop(stepper: Any, step: int, batches: Batches, val_NxT1: torch.Tensor, eval_batch: int,
             info: ddp.DistInfo, device: torch.device, progress: Progress | None,
             finish: Callable[[RunBook, str, int], Any]) -> None:
    """Train every run of `stepper.books` (None: a slot that no longer trains) from `step` to its end.

    The stepper takes one optimizer step of all its runs and returns their losses (K,) as a
    device tensor; `finish(book, status, step, **extra)` writes a run's summary. Evals take
    `eval_batch` sequences a forward (eval.batch_size), else the stepper's micro-batch.
    """
    cpu = device.type == "cpu"
    worst_K = torch.zeros(len(stepper.books), device=device)   # max step loss per slot since the last check
    while stepper is not None:
        live = [(k, b) for k, b in enumerate(stepper.books) if b is not None]
        t0 = time.perf_counter()
        step += 1
        for _, b in live:
            b.step = step
        batch_BxT1 = batches.get(step - 1)
        loss_K = stepper.step(step, batch_BxT1)
        batches.prefetch(step)
        worst_K = torch.maximum(worst_K, loss_K)

        stopped: set[int] = set()
        if cpu or any(b.syncs_at(step) or step == b.total for _, b in live):
            # the host sync: on CUDA the wait for this and earlier steps' kernels ends here, so the
            # step time below includes the device time of every step since the last sync
            w_K, cur_K = ddp.all_mean(torch.stack([worst_K, loss_K]), info).tolist()
            for k, b in live:
                why = b.check(step, w_K[k], cur_K[k])
                if why:
                    finish(b, DIVERGED, step, error=why)
                    stopped.add(k)
            worst_K = torch.zeros_like(worst_K)
        seconds = time.perf_counter() - t0
        for _, b in live:
            b.count_step(seconds)

        live = [(k, b) for k, b in live if k not in stopped]
        if any(b.evaluates_at(step) for _, b in live):
            vals = stepper.evaluate(val_NxT1, eval_batch or stepper.plan.micro_rows)
            for k, b in live:
                if b.evaluates_at(step):
                    b.log_eval(step, vals[k], progress)
        if any(b.saves_at(step) for _, b in live):
            # every live run at one step, so a relaunch finds a common resume point
            for k, b in live:
                b.save(step, stepper.checkpoint(k, step) if b.write else {})
            for _, b in live:
                b.prune()
        for k, b in live:
            if step == b.total:
                finish(b, COMPLETED, step)
                stopped.add(k)
        if stopped:
            stepper, kept = stepper.without(stopped)
            worst_K = worst_K[kept]


def start_runs(books: Sequence[RunBook], branch_of: RunConfig | None = None) -> tuple[int, list[dict | None]]:
    """Where the runs resume: their newest common intact checkpoint, else (one run) its
    `train.init_from` parent's, else step 0. Rows and trackers are aligned with it."""
    step, states = find_resume(books)
    branch = None
    if not step and branch_of is not None and branch_of.train.init_from:
        step, state = load_branch(branch_of)
        states, branch = [state], Path(branch_of.train.init_from)
    for b, state in zip(books, states):
        b.start(step, state, branch)
    return step, states


def restore(cfg: RunConfig, out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            device: torch.device, info: ddp.DistInfo = ddp.DistInfo(), t_start: float | None = None,
            data_id: str | None = None) -> tuple[RunBook, int]:
    """The run's book and the step it resumes at, with model, optimizer and RNG restored; a checkpoint
    written on other data than `data_id` (`train.data.fingerprint`) is refused.

    Checkpoints are read onto the CPU whatever `device` is: torch's RNG setters accept only
    CPU states, and `load_state_dict` copies weights and moments onto the model's device.
    """
    book = RunBook(cfg, out, time.perf_counter() if t_start is None else t_start, write=info.is_main, data_id=data_id)
    step, (state,) = start_runs([book], cfg)
    book.dtype = precision(cfg.train.dtype, device, state.get("dtype") if state else None)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
    return book, step


def train(cfg: RunConfig, out_dir: str | Path, info: ddp.DistInfo = ddp.DistInfo(),
          progress: Progress | None = None) -> dict[str, Any]:
    """Train `cfg` (resolved) into `out_dir`; return the summary (also written to summary.json on rank 0)."""
    out = Path(out_dir)
    t_start = time.perf_counter()
    device = resolve_device(cfg.train.device, info)
    ddp.init(info, device)
    set_up_device(cfg, device)

    plan = plan_batches(cfg, info.world_size)
    data, val_NxT1, floor = load_data(cfg, device)
    seed_everything(cfg.run.seed)
    model = build_model(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg.optim, device)
    book, step = restore(cfg, out, model, optimizer, device, info, t_start, fingerprint(data, cfg.model.context))
    if cfg.train.dtype == "auto" and book.dtype != precision("auto", device):
        warn(f"{out}: this run started in {book.dtype} (train.dtype=auto) and continues in it on {device}")
    amp_factory = lambda: autocast(device, book.dtype)  # noqa: E731  (a fresh context per use)
    stepper = SingleStep(book, model, optimizer, plan, amp_factory, info, device, cfg.train.compile)
    where = str(device) + (f" x{info.world_size}" if info.enabled else "")

    def finish(b: RunBook, status: str, s: int, **extra: Any) -> dict[str, Any]:
        return b.finish(status, s, device=where, world_size=info.world_size, data=data.describe(), floor=floor, **extra)

    try:
        if step >= cfg.steps:
            return finish(book, COMPLETED, step)
        run_loop(stepper, step, Batches(data, plan, info.rank, device, cfg.steps), val_NxT1,
                 cfg.eval.batch_size, info, device, progress, finish)
        return book.summary
    except BaseException as e:
        book.fail(finish, e)
        raise
    finally:
        book.close()

