"""Packed training: K runs of one model shape trained in one process as one batched computation.

`train_packed(cfgs, out_dirs)` trains K run configs that share the model
shape, data, batch layout and validation set (see `sweeps.packing`) as one
`models.packed.PackedGPT`. Everything that makes a run itself stays per model:

- init: each model is built exactly as `train.loop.train` builds it (seeded
  from its own run.seed), then stacked;
- optimizer: AdamW whose hyperparameters (lr and its schedule, betas, eps,
  weight decay, muP LR multipliers) are per model. Adam's moments and
  decoupled decay are elementwise, so one update over stacked tensors with
  per-model coefficients is the same arithmetic as K separate AdamWs
  (Loshchilov & Hutter 2019, Alg. 2; bias correction by the shared step);
- gradient clipping by each model's own global gradient norm;
- data: every model sees the batches its own run would see: batches are a
  pure function of (data config, batch index), and the data config is shared;
- divergence and budgets: a diverged model, or one that reached its own token
  budget, leaves the pack (the packed model and optimizer are rebuilt from the
  remaining slices) while the others continue;
- run directories: each model writes its own config.json, metrics.jsonl,
  summary.json and ckpt/ exactly as a single run does. Checkpoints are in
  the single-run format (model and torch AdamW state dicts), so a packed run
  resumes from them, and a single run can resume from a packed one's.

Resume: a relaunch resumes every unfinished model from the latest step
checkpointed by all of them (the pack saves all its models at the union of
their checkpoint steps, then prunes each by its own policy).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models import build_model
from models.counting import flops_per_token, param_counts
from models.packed import PackedGPT
from sweeps.packing import check_packable
from train import checkpoint as ckpt
from train import ddp
from train.api import prepare_run_dir
from train.config import ConfigError, OptimConfig, RunConfig, load_config
from train.contract import EXIT_BY_STATUS as EXIT, eval_steps
from train.loop import (autocast, finite_or_none, load_data, metrics_row, resolve_device, run_summary,
                        seed_everything)
from train.optim import build_optimizer, plan_batches, set_lr
from train.rundir import CKPT_DIR, METRICS, SUMMARY, atomic_write_json, read_metrics, write_metrics
from train.schedules import lr_curve
from train.trackers import open_trackers

Progress = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------------------
# loss, eval, clipping, optimizer over stacked parameters

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
def evaluate_packed(model: PackedGPT, val_NxT1: torch.Tensor, rows: int,
                    amp_factory: Callable[[], Any]) -> list[float]:
    """Mean val loss of every model over the fixed held-out windows (as `train.loop.evaluate`)."""
    was_training = model.training
    model.eval()
    total_K = torch.zeros(model.k, dtype=torch.float64, device=val_NxT1.device)
    for i in range(0, len(val_NxT1), rows):
        chunk = val_NxT1[i:i + rows]
        total_K += packed_lm_loss(model, chunk, amp_factory()).double() * chunk[:, 1:].numel()
    model.train(was_training)
    return (total_K / val_NxT1[:, 1:].numel()).tolist()


@torch.no_grad()
def clip_per_model(grad_KxP: torch.Tensor, max_norm_K: torch.Tensor) -> torch.Tensor:
    """Clip each model's global gradient norm (row k of the flat gradient) in place; max_norm 0
    leaves a model unclipped. Returns the pre-clip norms (K,).

    Same rule as `torch.nn.utils.clip_grad_norm_` per model: coefficient
    max_norm / (norm + 1e-6), capped at 1.
    """
    total_K = torch.linalg.vector_norm(grad_KxP, dim=1)
    coef_K = torch.clamp(max_norm_K / (total_K + 1e-6), max=1.0)
    coef_K = torch.where(max_norm_K > 0, coef_K, torch.ones_like(coef_K))
    grad_KxP.mul_(coef_K.unsqueeze(1))
    return total_K


@dataclass(frozen=True)
class ModelHparams:
    """One model's AdamW settings for each stacked parameter (by name)."""
    weight_decay: dict[str, float]
    lr_mult: dict[str, float]
    beta1: float
    beta2: float
    eps: float


class PackedAdamW:
    """AdamW over stacked (K, ...) parameters with per-model coefficients, on one flat buffer.

    torch.optim.AdamW takes one lr per parameter group; here every model has its
    own lr (schedule), weight decay, betas and eps along the leading dimension, so
    the update is written out (the same steps as torch's single-tensor AdamW).

    Every parameter is re-pointed to a slice of one (K, P) buffer (P = one model's
    parameter count) and the moments live in (K, P) buffers too, so a step is a
    dozen elementwise kernels over all parameters of all models, however many
    tensors the model has: small kernels are what packing exists to avoid. The
    per-(model, element) LR multipliers and weight decays are precomputed as (K, P)
    rows; all coefficients stay on the device, so a step copies nothing from the host.
    """

    def __init__(self, named_params: dict[str, torch.nn.Parameter], hparams: Sequence[ModelHparams]):
        self.params = named_params
        self.hparams = list(hparams)
        first = next(iter(named_params.values()))
        K, dev = first.shape[0], first.device
        f32 = dict(dtype=torch.float32, device=dev)
        with torch.no_grad():
            self.flat_KxP = torch.cat([p.detach().reshape(K, -1) for p in named_params.values()], dim=1)
        self.slices: dict[str, slice] = {}
        mult, wd, off = [], [], 0
        for n, p in named_params.items():
            size = p[0].numel()
            self.slices[n] = slice(off, off + size)
            p.data = self.flat_KxP[:, off:off + size].view(p.shape)   # the parameter now lives in the buffer
            mult.append(torch.tensor([h.lr_mult[n] for h in hparams], **f32).unsqueeze(1).expand(K, size))
            wd.append(torch.tensor([h.weight_decay[n] for h in hparams], **f32).unsqueeze(1).expand(K, size))
            off += size
        self.mult_KxP = torch.cat(mult, dim=1)
        self.mult_wd_KxP = self.mult_KxP * torch.cat(wd, dim=1)
        # float64 for the bias corrections: 1 - beta2**step loses digits in float32 when beta2 ~ 1
        self.beta1 = torch.tensor([h.beta1 for h in hparams], dtype=torch.float64, device=dev)
        self.beta2 = torch.tensor([h.beta2 for h in hparams], dtype=torch.float64, device=dev)
        self.eps_Kx1 = torch.tensor([h.eps for h in hparams], **f32).unsqueeze(1)
        self.exp_avg_KxP = torch.zeros_like(self.flat_KxP)
        self.exp_avg_sq_KxP = torch.zeros_like(self.flat_KxP)

    def moments(self, name: str) -> dict[str, torch.Tensor]:
        """Views of one parameter's Adam moments, shaped like the (K, ...) parameter."""
        shape, sl = self.params[name].shape, self.slices[name]
        return {"exp_avg": self.exp_avg_KxP[:, sl].view(shape), "exp_avg_sq": self.exp_avg_sq_KxP[:, sl].view(shape)}

    def select(self, named_params: dict[str, torch.nn.Parameter], keep: Sequence[int]) -> "PackedAdamW":
        """The optimizer of a smaller pack holding models `keep` (its parameters `named_params`)."""
        out = PackedAdamW(named_params, [self.hparams[i] for i in keep])
        out.exp_avg_KxP.copy_(self.exp_avg_KxP[list(keep)])
        out.exp_avg_sq_KxP.copy_(self.exp_avg_sq_KxP[list(keep)])
        return out

    def flat_grad(self) -> torch.Tensor:
        """All gradients as one (K, P) tensor (zeros where a parameter got none)."""
        K = self.flat_KxP.shape[0]
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(K, -1)
                          for p in self.params.values()], dim=1)

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self, step: int, lr_K: torch.Tensor, grad_KxP: torch.Tensor) -> None:
        """Apply update number `step` (1-based, for bias correction) with per-model lrs (K,) and the
        (clipped) flat gradient."""
        step_size_Kx1 = (lr_K.double() / (1.0 - self.beta1 ** step)).float().unsqueeze(1)
        bc2_sqrt_Kx1 = torch.sqrt(1.0 - self.beta2 ** step).float().unsqueeze(1)
        b1_Kx1, b2_Kx1 = self.beta1.float().unsqueeze(1), self.beta2.float().unsqueeze(1)
        g, m, v = grad_KxP, self.exp_avg_KxP, self.exp_avg_sq_KxP
        self.flat_KxP.mul_(1 - lr_K.unsqueeze(1) * self.mult_wd_KxP)      # decoupled weight decay
        m.lerp_(g, 1 - b1_Kx1)
        v.mul_(b2_Kx1).add_(g * g * (1 - b2_Kx1))
        denom = (v.sqrt() / bc2_sqrt_Kx1).add_(self.eps_Kx1)
        self.flat_KxP.sub_(m / denom * (step_size_Kx1 * self.mult_KxP))


# ---------------------------------------------------------------------------
# single-run checkpoints <-> the pack

def model_hparams(single: torch.nn.Module, opt: torch.optim.AdamW, o: OptimConfig) -> ModelHparams:
    """Model `single`'s AdamW settings per parameter name, read from its own optimizer's groups."""
    names = {id(p): n for n, p in single.named_parameters()}
    wd, mult = {}, {}
    for g in opt.param_groups:
        for p in g["params"]:
            wd[names[id(p)]], mult[names[id(p)]] = g["weight_decay"], g["lr_mult"]
    return ModelHparams(wd, mult, o.beta1, o.beta2, o.eps)


def _export_optimizer(single: torch.nn.Module, opt: torch.optim.AdamW, packed_opt: PackedAdamW,
                      i: int, step: int, lr: float) -> dict[str, Any]:
    """Model i's slice of the packed AdamW state as a torch AdamW state dict over `single`."""
    opt.state.clear()
    for n, p in single.named_parameters():
        st = packed_opt.moments(n)
        opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": st["exp_avg"][i].clone(),
                        "exp_avg_sq": st["exp_avg_sq"][i].clone()}
    set_lr(opt, lr)
    return opt.state_dict()


def _import_optimizer(single: torch.nn.Module, opt: torch.optim.AdamW, packed_opt: PackedAdamW,
                      i: int, step: int) -> None:
    """Copy a loaded torch AdamW state (over `single`) into slice i of the packed state."""
    for n, p in single.named_parameters():
        st = opt.state[p]
        if int(st["step"]) != step:
            raise ValueError(f"optimizer state of {n} is at step {int(st['step'])}, checkpoint at step {step}")
        mine = packed_opt.moments(n)
        mine["exp_avg"][i].copy_(st["exp_avg"])
        mine["exp_avg_sq"][i].copy_(st["exp_avg_sq"])


def _common_checkpoint_step(ckpt_dirs: Sequence[Path]) -> int:
    """The latest step every directory holds a checkpoint for (0: none in common)."""
    common: set[int] | None = None
    for d in ckpt_dirs:
        steps = {s for s, _ in ckpt.list_checkpoints(d)}
        common = steps if common is None else common & steps
    return max(common) if common else 0


# ---------------------------------------------------------------------------
# the packed loop

@dataclass
class _Run:
    """Per-model bookkeeping of the packed loop."""
    cfg: RunConfig
    out: Path
    total: int
    lrs: np.ndarray
    evals: set[int]
    log_every: int
    policy: ckpt.CheckpointPolicy
    fpt: float
    counts: dict[str, int]
    first_loss: float | None = None
    elapsed: float = 0.0
    tracker_state: dict[str, Any] | None = None
    trackers: Any = None
    last_train: float | None = None
    last_val: float | None = None
    step_tokens: int = 0
    step_time: float = 0.0
    summary: dict[str, Any] | None = None
    single: torch.nn.Module | None = None          # the ordinary GPT: init, and checkpoint layout
    opt: torch.optim.AdamW | None = None           # its torch AdamW: groups, and checkpoint layout


class _Pack:
    """The models still training, as one packed model with its optimizer; slot i is runs[i].

    When models stop (budget reached, diverged) the pack is rebuilt without them, so
    no compute goes to models that no longer train.
    """

    def __init__(self, runs: list[_Run], model: PackedGPT, optimizer: PackedAdamW, compile: bool):
        self.runs, self.model, self.optimizer, self.compile = runs, model, optimizer, compile
        self.fwd = torch.compile(model) if compile else model
        dev = model.wte.weight.device
        self.max_norm_K = torch.tensor([r.cfg.train.grad_clip for r in runs], dtype=torch.float32, device=dev)
        # every model's lr for every step up to the longest run, on the device (0 past a run's end)
        longest = max(r.total for r in runs)
        self.lrs_SxK = torch.tensor(np.stack([np.pad(r.lrs, (0, longest - r.total)) for r in runs], axis=1),
                                    dtype=torch.float32, device=dev)

    @classmethod
    def build(cls, runs: list[_Run], compile: bool) -> "_Pack":
        model = PackedGPT.from_models([r.single for r in runs])
        named = dict(model.named_parameters())
        return cls(runs, model, PackedAdamW(named, [model_hparams(r.single, r.opt, r.cfg.optim) for r in runs]), compile)

    def without(self, stopped: set[int]) -> "_Pack":
        keep = [i for i in range(len(self.runs)) if i not in stopped]
        model = self.model.select(keep)
        optimizer = self.optimizer.select(dict(model.named_parameters()), keep)
        return _Pack([self.runs[i] for i in keep], model, optimizer, self.compile)

    def train_step(self, step: int, batch_BxT1: torch.Tensor, micro_rows: int, accum: int,
                   amp_factory: Callable[[], Any]) -> torch.Tensor:
        """One optimizer update of every model (as `train.loop` takes it); returns the step losses (K,)."""
        loss_sum_K = torch.zeros(len(self.runs), device=batch_BxT1.device)
        for mb in range(accum):
            micro = batch_BxT1[mb * micro_rows:(mb + 1) * micro_rows]
            loss_K = packed_lm_loss(self.fwd, micro, amp_factory()) / accum
            loss_K.sum().backward()   # models are independent: d(sum)/d(model k) = d(loss_k)
            loss_sum_K += loss_K.detach()
        grad_KxP = self.optimizer.flat_grad()
        clip_per_model(grad_KxP, self.max_norm_K)
        self.optimizer.step(step, self.lrs_SxK[step - 1], grad_KxP)
        self.optimizer.zero_grad()
        return loss_sum_K

    def checkpoint(self, i: int, step: int) -> dict[str, Any]:
        """Slot i's model and optimizer in the single-run checkpoint layout."""
        r = self.runs[i]
        r.single.load_state_dict(self.model.model_state_dict(i))
        return {"model": r.single.state_dict(),
                "optimizer": _export_optimizer(r.single, r.opt, self.optimizer, i, step, float(r.lrs[step - 1]))}


def train_packed(cfgs: Sequence[RunConfig], out_dirs: Sequence[str | Path],
                 progress: Progress | None = None) -> list[dict[str, Any]]:
    """Train K compatible run configs as one packed computation; return their summaries (in order).

    Each out_dir follows `train.api.train_run`'s rules: created when new, resumed when
    it holds the same config, returned as is when that run already finished, refused
    (ConfigError naming the key) when it holds a different config.
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
    device = resolve_device(c0.train.device, ddp.DistInfo())
    if c0.train.threads:
        torch.set_num_threads(c0.train.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_factory = lambda: autocast(device, c0.train.dtype)  # noqa: E731

    # ---- data (shared), models (each seeded as its single run), optimizers --
    plan = plan_batches(c0)
    data, val_NxT1, floor = load_data(c0, device)
    eval_rows = c0.eval.batch_size or plan.micro_rows
    runs = []
    for c, o in zip(cfgs, outs):
        seed_everything(c.run.seed)
        single = build_model(c.model).to(device)
        total = c.steps
        runs.append(_Run(
            cfg=c, out=o, total=total, lrs=lr_curve(total, c.optim.lr, c.schedule),
            evals=set(eval_steps(total, c.eval.points)), log_every=c.run.log_every or max(1, total // 200),
            policy=ckpt.CheckpointPolicy.from_config(c.run.ckpt_every, c.run.ckpt_keep, c.run.ckpt_steps, total),
            fpt=flops_per_token(c.model, c.run.flop_convention), counts=param_counts(c.model),
            single=single, opt=build_optimizer(single, c.optim, device)))

    step = _restore(runs, device)
    pack = _Pack.build(runs, c0.train.compile)
    if step:
        for i, r in enumerate(runs):
            _import_optimizer(r.single, r.opt, pack.optimizer, i, step)
    for r in runs:
        r.trackers = open_trackers(r.out / METRICS, r.cfg.run, r.cfg.run_id(), r.cfg.to_dict(), r.tracker_state)

    def now(r: _Run) -> float:
        return r.elapsed + time.perf_counter() - t_start

    def row(r: _Run, kind: str, s: int, **values: Any) -> dict[str, Any]:
        return metrics_row(r.cfg, r.fpt, r.lrs, kind, s, now(r), **values)

    def finish(r: _Run, status: str, s: int, **extra: Any) -> None:
        """Write r's summary.json: the fields of a single run's summary, plus the pack size."""
        r.summary = run_summary(r.cfg, status, counts=r.counts, fpt=r.fpt, last_train=r.last_train,
                                last_val=r.last_val, floor=floor, step=s, wall_s=now(r), step_tokens=r.step_tokens,
                                step_time=r.step_time, device=str(device), world_size=1,
                                data_description=data.describe(), packed_with=len(runs), **extra)
        atomic_write_json(r.out / SUMMARY, r.summary)

    # ---- the loop: one packed update per step; stopped models leave the pack ----
    ended = {i for i, r in enumerate(runs) if step >= r.total}   # stopped after the final checkpoint
    for i in ended:
        finish(runs[i], "completed", runs[i].total)
    live_pack: _Pack | None = None if len(ended) == len(runs) else pack.without(ended) if ended else pack
    worst_K = torch.zeros(len(runs) - len(ended), device=device)   # each model's max step loss since its last check
    cpu = device.type == "cpu"
    try:
        while live_pack is not None:
            pack = live_pack
            t0 = time.perf_counter()
            step += 1
            batch_BxT1 = data.train_batch(step - 1, plan.global_rows).to(device, non_blocking=True)
            loss_sum_K = pack.train_step(step, batch_BxT1, plan.micro_rows, plan.accum_steps, amp_factory)
            worst_K = torch.maximum(worst_K, loss_sum_K)
            for r in pack.runs:
                r.step_time += time.perf_counter() - t0
                r.step_tokens += r.cfg.train.batch_tokens

            # a host sync only when some model logs, evaluates or ends (every step on CPU,
            # where the single-run loop also checks every step)
            stopped: set[int] = set()
            due = [i for i, r in enumerate(pack.runs)
                   if cpu or step == 1 or step % r.log_every == 0 or step in r.evals or step == r.total]
            if due:
                w_K, cur_K = worst_K.tolist(), loss_sum_K.tolist()
                for i in due:
                    r, w, cur = pack.runs[i], w_K[i], cur_K[i]
                    if r.first_loss is None:
                        r.first_loss = cur
                    ok = math.isfinite(w) and w <= r.cfg.run.diverge_factor * r.first_loss
                    if step == 1 or step % r.log_every == 0 or step == r.total or not ok:
                        r.last_train = finite_or_none(cur)
                        r.trackers.log(row(r, "train", step, loss=r.last_train))
                    if not ok:
                        finish(r, "diverged", step, error=(
                            f"train loss {w:.4g} at step {step} (first loss {r.first_loss:.4g}, "
                            f"run.diverge_factor={r.cfg.run.diverge_factor})"))
                        stopped.add(i)
                checked = torch.zeros(len(pack.runs), dtype=torch.bool)
                checked[due] = True
                worst_K = torch.where(checked.to(device), torch.zeros((), device=device), worst_K)
            live = [i for i in range(len(pack.runs)) if i not in stopped]
            evaluating = [i for i in live if step in pack.runs[i].evals]
            if evaluating:
                vals = evaluate_packed(pack.fwd, val_NxT1, eval_rows, amp_factory)
                for i in evaluating:
                    r = pack.runs[i]
                    r.last_val = vals[i]
                    er = row(r, "eval", step, val_loss=finite_or_none(vals[i]))
                    r.trackers.log(er)
                    if progress:
                        progress({**er, "loss": r.last_train, "total_steps": r.total, "run_id": r.cfg.run_id()})
            if any(pack.runs[i].policy.due(step) for i in live):
                # every live model at one step, so a relaunch finds a common resume point
                for i in live:
                    r = pack.runs[i]
                    ckpt.save_checkpoint(ckpt.ckpt_path(r.out / CKPT_DIR, step), {
                        **pack.checkpoint(i, step), "step": step, "data_index": step,
                        "first_loss": r.first_loss, "elapsed_s": now(r), "rng": ckpt.rng_state(),
                        "tracker": r.trackers.state(), "config": r.cfg.to_dict()})
                for i in live:
                    pack.runs[i].policy.prune(pack.runs[i].out / CKPT_DIR)
            for i in live:
                if step == pack.runs[i].total:
                    finish(pack.runs[i], "completed", step)
                    stopped.add(i)
            if stopped:
                keep = [i for i in range(len(pack.runs)) if i not in stopped]
                worst_K = worst_K[keep]
                live_pack = pack.without(stopped) if keep else None
        return [r.summary for r in runs]
    except BaseException as e:
        for r in runs:
            if r.summary is None:
                finish(r, "failed", step, error=f"{type(e).__name__}: {e}")
        raise
    finally:
        for r in runs:
            if r.trackers:
                r.trackers.close()


def _restore(runs: list[_Run], device: torch.device) -> int:
    """Load every model from the latest step all of them checkpointed; return that step (0: none).

    Metrics rows past that step are dropped (as a single run's resume does), and
    checkpoints past it, from an attempt that is being redone, are deleted.
    """
    step = _common_checkpoint_step([r.out / CKPT_DIR for r in runs])
    rng = None
    for r in runs:
        metrics_path = r.out / METRICS
        if step:
            state = ckpt.load_checkpoint(ckpt.ckpt_path(r.out / CKPT_DIR, step), map_location=device)
            if state["data_index"] != step:
                raise ValueError(f"checkpoint of {r.out}: data position {state['data_index']} does not match step {step}")
            r.single.load_state_dict(state["model"])
            r.opt.load_state_dict(state["optimizer"])
            r.first_loss, r.elapsed, r.tracker_state = state["first_loss"], state["elapsed_s"], state.get("tracker")
            rng = state["rng"]
            write_metrics(metrics_path, [row for row in read_metrics(metrics_path) if row["step"] <= step])
        elif metrics_path.exists():
            write_metrics(metrics_path, [])   # no common checkpoint: this model starts over
        for s, p in ckpt.list_checkpoints(r.out / CKPT_DIR):
            if s > step:
                p.unlink(missing_ok=True)
        prior = read_metrics(metrics_path)
        r.last_train = next((row["loss"] for row in reversed(prior) if row["kind"] == "train"), None)
        r.last_val = next((row["val_loss"] for row in reversed(prior) if row["kind"] == "eval"), None)
    if rng is not None:
        ckpt.set_rng_state(rng)
    return step


# ---------------------------------------------------------------------------
# command line



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.packed",
        description="Train several runs of one model shape as one packed computation; each writes its own run directory.",
        epilog="example: python -m train.packed --run a.json runs/a --run b.json runs/b")
    p.add_argument("--run", nargs=2, action="append", metavar=("CONFIG", "RUN_DIR"), required=True,
                   help="a run config file (YAML/JSON) and its run directory; repeat per run")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides applied to every run")
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every run completed, 3 when some diverged (none failed), 1 on failure, 2 on a config error."""
    ns = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfgs = [load_config(path, ns.overrides) for path, _ in ns.run]
        summaries = train_packed(cfgs, [out for _, out in ns.run])
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"packed run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT["failed"]
    statuses = [s.get("status", "failed") for s in summaries]
    for (_, out), s in zip(ns.run, summaries):
        print(f"{s.get('status')}: {s.get('run_id')} steps {s.get('steps')} val_loss {s.get('final_val_loss')} -> {out}")
    return max(EXIT.get(s, 1) for s in statuses) if "failed" not in statuses else 1


if __name__ == "__main__":
    sys.exit(main())
