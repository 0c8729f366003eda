"""Packed training: K runs of one model shape trained in one process as one batched computation.

`train_packed(cfgs, out_dirs)` trains K run configs that share the model shape,
data, batch layout and validation set (`train.packable`) as one
`models.packed.PackedGPT`. The loop, the run bookkeeping and the run directories
are the single-run trainer's (`train.loop.run_loop`, `train.book.RunBook`); only
the step differs (`PackStep`). Everything that makes a run itself stays per model:

- init: each model is built exactly as `train.loop.train` builds it (seeded
  from its own run.seed), then stacked;
- optimizer: `train.packed_adamw.PackedAdamW`, per-model hyperparameters;
- gradient clipping by each model's own global gradient norm;
- data: every model sees the batches its own run would see: batches are a
  pure function of (data config, batch index), and the data config is shared;
- divergence and budgets: a diverged model, or one that reached its own token
  budget, leaves the pack while the others continue. Uncompiled, the pack is
  rebuilt without it at once. Compiled, it stays in its slot with lr 0 until at
  most half the slots train, so a pack of K compiles O(log K) times instead of
  once per departure (each rebuild changes the stacked shapes);
- run directories: each model writes its own config.json, metrics.jsonl,
  summary.json and ckpt/ exactly as a single run does. Checkpoints are in
  the single-run format (model and torch AdamW state dicts), so a packed run
  resumes from them, and a single run can resume from a packed one's.

Resume: a relaunch resumes every unfinished model from the latest step
checkpointed by all of them (the pack saves all its models at the union of
their checkpoint steps, then prunes each by its own policy).
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models import build_model
from models.packed import PackedGPT
from train import ddp
from train.api import locked_run_dirs, prepare_run_dir
from train.book import Progress, RunBook
from train.checkpoint import set_rng_state
from train.config import ConfigError, RunConfig
from train.contract import COMPLETED
from train.data import fingerprint
from train.loop import (Batches, autocast, eval_chunks, load_data, precision, resolve_device, run_loop,
                        seed_everything, set_up_device, start_runs, take_step)
from train.optim import BatchPlan, build_optimizer, pack_plan, plan_batches
from train.packable import check_packable
from train.packed_adamw import PackedAdamW, clip_per_model, export_adamw_state, import_adamw_state, model_hparams


def packed_lm_loss(model: PackedGPT, batch_BxT1: torch.Tensor, amp: contextlib.AbstractContextManager) -> torch.Tensor:
    """Per-model mean next-token cross-entropy (K,) of one (B, T+1) batch shared by all models."""
    x_BxT, y_BxT = batch_BxT1[:, :-1], batch_BxT1[:, 1:]
    with amp:
        logits_KxBxTxV, _ = model(x_BxT)
    K = logits_KxBxTxV.shape[0]
    y_KxN = y_BxT.reshape(1, -1).expand(K, -1)
    nll = F.cross_entropy(logits_KxBxTxV.float().flatten(0, 2), y_KxN.flatten(), reduction="none")
    return nll.view(K, -1).mean(dim=1)


@torch.no_grad()
def evaluate_packed(model: PackedGPT, val_NxT1: torch.Tensor, rows: int, amp_factory: Callable[[], Any],
                    eager: PackedGPT | None = None) -> list[float]:
    """Mean val loss of every model over the fixed held-out windows (as `train.loop.evaluate`)."""
    total_K = torch.zeros(_k(model), dtype=torch.float64, device=val_NxT1.device)
    for chunk, fwd in eval_chunks(val_NxT1, rows, model, eager or model):
        total_K += packed_lm_loss(fwd, chunk, amp_factory()).double() * chunk[:, 1:].numel()
    return (total_K / val_NxT1[:, 1:].numel()).tolist()


def _k(model: torch.nn.Module) -> int:
    return getattr(model, "_orig_mod", model).k


class PackStep:
    """The packed stepper: the runs still training, as one PackedGPT with its PackedAdamW.

    Slot k holds books[k] (None: a run that stopped but still occupies its slot, see the
    module doc). `singles[k]`/`opts[k]` are the run's ordinary GPT and torch AdamW: its
    init, and the layout of its checkpoints.
    """

    def __init__(self, books: list[RunBook | None], singles: list[torch.nn.Module], opts: list[torch.optim.AdamW],
                 model: PackedGPT, optimizer: PackedAdamW, plan: BatchPlan, amp_factory: Callable[[], Any],
                 compile: bool):
        self.books, self.singles, self.opts = books, singles, opts
        self.model, self.optimizer, self.plan, self.amp, self.compile = model, optimizer, plan, amp_factory, compile
        self.context = model.config.context
        self.fwd = torch.compile(model) if compile else model
        dev = model.wte.weight.device
        live = [b for b in books if b is not None]
        self.max_norm_K = torch.tensor([b.cfg.train.grad_clip if b else 0.0 for b in books],
                                       dtype=torch.float32, device=dev)
        # every model's lr for every step up to the longest run, on the device (0 past a run's end)
        longest = max(b.total for b in live)
        self.lrs_SxK = torch.tensor(
            np.stack([np.pad(b.lrs, (0, longest - b.total)) if b else np.zeros(longest) for b in books], axis=1),
            dtype=torch.float32, device=dev)

    @classmethod
    def build(cls, books: list[RunBook], singles, opts, plan: BatchPlan, amp_factory, compile: bool) -> "PackStep":
        if compile:
            # a training and an eval graph for each pack size (K, K/2, ..., 1): more than dynamo's
            # default limit of 8 per function for K > 8, past which it would silently run eager
            import torch._dynamo.config as dynamo_config
            needed = 2 * (math.ceil(math.log2(len(books))) + 2)
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, needed)
        model = PackedGPT.from_models(singles)
        optimizer = PackedAdamW(dict(model.named_parameters()),
                                [model_hparams(s, o, b.cfg.optim) for s, o, b in zip(singles, opts, books)])
        return cls(list(books), list(singles), list(opts), model, optimizer, plan, amp_factory, compile)

    def step(self, step: int, batch_BxT1: torch.Tensor) -> torch.Tensor:
        """One optimizer update of every model (as `train.loop` takes it); returns the step losses (K,)."""
        loss_sum_K = take_step(self, lambda plan: self._accumulate(batch_BxT1, plan))
        grad_KxP = self.optimizer.flat_grad()
        clip_per_model(grad_KxP, self.max_norm_K)
        self.optimizer.step(step, self.lrs_SxK[step - 1], grad_KxP)
        self.optimizer.zero_grad()
        return loss_sum_K

    def _accumulate(self, batch_BxT1: torch.Tensor, plan: BatchPlan) -> torch.Tensor:
        loss_sum_K = torch.zeros(len(self.books), device=batch_BxT1.device)
        for mb in range(plan.accum_steps):
            micro = batch_BxT1[mb * plan.micro_rows:(mb + 1) * plan.micro_rows]
            loss_K = packed_lm_loss(self.fwd, micro, self.amp()) / plan.accum_steps
            loss_K.sum().backward()   # models are independent: d(sum)/d(model k) = d(loss_k)
            loss_sum_K += loss_K.detach()
        return loss_sum_K

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def evaluate(self, val_NxT1: torch.Tensor, rows: int) -> list[float]:
        return evaluate_packed(self.fwd, val_NxT1, rows, self.amp, eager=self.model)

    def checkpoint(self, slot: int, step: int) -> dict[str, Any]:
        """Slot `slot`'s model and optimizer in the single-run checkpoint layout."""
        single, opt, book = self.singles[slot], self.opts[slot], self.books[slot]
        single.load_state_dict(self.model.model_state_dict(slot))
        return {"model": single.state_dict(),
                "optimizer": export_adamw_state(single, opt, self.optimizer, slot, step, book.lr(step))}

    def without(self, stopped: set[int], shrink: bool = False) -> tuple["PackStep | None", list[int]]:
        """The stepper after runs in `stopped` left, and the old slots it keeps (in order);
        `shrink` rebuilds the pack even when it is compiled."""
        books = [None if k in stopped else b for k, b in enumerate(self.books)]
        live = [k for k, b in enumerate(books) if b is not None]
        if not live:
            return None, []
        if self.compile and not shrink and 2 * len(live) > len(books):
            self.books = books          # stay in place: the stopped slots train at lr 0
            self.lrs_SxK[:, sorted(stopped)] = 0.0
            self.max_norm_K[sorted(stopped)] = 0.0
            return self, list(range(len(books)))
        model = self.model.select(live)
        optimizer = self.optimizer.select(dict(model.named_parameters()), live)
        return PackStep([books[k] for k in live], [self.singles[k] for k in live], [self.opts[k] for k in live],
                        model, optimizer, self.plan, self.amp, self.compile), live


def train_packed(cfgs: Sequence[RunConfig], out_dirs: Sequence[str | Path],
                 progress: Progress | None = None) -> list[dict[str, Any]]:
    """Train K compatible run configs as one packed computation; return their summaries (in order).

    Each out_dir follows `train.api.train_run`'s rules: locked against a second writer,
    created when new, resumed when it holds the same config, returned as is when that run
    already finished, refused (ConfigError naming the key) when it holds a different config.
    """
    if len(cfgs) != len(out_dirs):
        raise ConfigError(f"train_packed got {len(cfgs)} configs but {len(out_dirs)} run directories")
    cfgs = [c.resolved() for c in cfgs]
    check_packable(cfgs)
    if cfgs[0].model.kind != "gpt":
        raise ConfigError(f"packed training supports model.kind=gpt only, got {cfgs[0].model.kind!r}")
    outs = [Path(d) for d in out_dirs]
    if len({p.resolve() for p in outs}) != len(outs):
        raise ConfigError("train_packed needs a distinct run directory per config")
    for c in cfgs:
        plan_batches(c)
    info = ddp.DistInfo()
    with locked_run_dirs(cfgs, outs, info):
        done = [prepare_run_dir(c, o, info) for c, o in zip(cfgs, outs)]
        todo = [i for i, d in enumerate(done) if d is None]
        summaries: list[dict[str, Any] | None] = list(done)
        if todo:
            for i, s in zip(todo, _train_pack([cfgs[i] for i in todo], [outs[i] for i in todo], progress)):
                summaries[i] = s
    return summaries  # type: ignore[return-value]


def _train_pack(cfgs: list[RunConfig], outs: list[Path], progress: Progress | None) -> list[dict[str, Any]]:
    t_start = time.perf_counter()
    c0 = cfgs[0]
    info = ddp.DistInfo()
    device = resolve_device(c0.train.device, info)
    set_up_device(c0, device)

    # ---- data (shared), models (each seeded as its single run), optimizers --
    data, val_NxT1, floor = load_data(c0, device)
    books, singles, opts = [], [], []
    data_id = fingerprint(data, c0.model.context)
    for c, o in zip(cfgs, outs):
        seed_everything(c.run.seed)
        single = build_model(c.model).to(device)
        books.append(RunBook(c, o, t_start, data_id=data_id))
        singles.append(single)
        opts.append(build_optimizer(single, c.optim, device))

    step, states = start_runs(books)
    dtype = precision(c0.train.dtype, device, states[0].get("dtype") if states[0] else None)
    for b, single, opt, state in zip(books, singles, opts, states):
        b.dtype = dtype
        if state is not None:
            single.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
    if states[-1] is not None:
        set_rng_state(states[-1]["rng"])
    plan = pack_plan(plan_batches(c0), len(cfgs), device.type)
    amp_factory = lambda: autocast(device, dtype)  # noqa: E731
    stepper = PackStep.build(books, singles, opts, plan, amp_factory, c0.train.compile)
    if step:
        for k, (single, opt) in enumerate(zip(singles, opts)):
            import_adamw_state(single, opt, stepper.optimizer, k, step)

    def finish(b: RunBook, status: str, s: int, **extra: Any) -> dict[str, Any]:
        """A run's summary: the fields of a single run's summary, plus the pack size."""
        return b.finish(status, s, device=str(device), world_size=1, data=data.describe(), floor=floor,
                        packed_with=len(books), **extra)

    # ---- runs that ended with their final checkpoint; the rest train together ----
    ended = {k for k, b in enumerate(books) if step >= b.total}
    for k in ended:
        finish(books[k], COMPLETED, books[k].total)
    live: PackStep | None = stepper.without(ended, shrink=True)[0] if ended else stepper
    try:
        if live is not None:
            longest = max(b.total for b in live.books if b is not None)
            run_loop(live, step, Batches(data, plan, 0, device, longest), val_NxT1, c0.eval.batch_size,
                     info, device, progress, finish)
        return [b.summary for b in books]
    except BaseException as e:
        for b in books:
            if b.summary is None:
                b.fail(finish, e)
        raise
    finally:
        for b in books:
            b.close()

