"""Sweep plans: the runs, their cost, and design diagnostics (torch-free except `measure_rates`).

Diagnostics flag designs that cannot answer the question they are built for:

- isoFLOP bracketing: an isoFLOP profile locates its loss minimum only if the sizes of a
  budget sit on both sides of it. The prior for the minimum is Chinchilla-like:
  "besiroglu" (default) uses the refit of Hoffmann et al.'s Approach 3 by Besiroglu et al.
  2024 (E=1.817, A=482.0, B=2085.4, alpha=0.348, beta=0.366), whose compute-optimal size
  under C = 6ND is N_opt(C) = G (C/6)^a with G = (alpha A / (beta B))^(1/(alpha+beta)) and
  a = beta/(alpha+beta) (Hoffmann et al. 2022, eq. 4); "tpp20" uses D = 20 N, i.e.
  N_opt = sqrt(C / 120). Tiny models on synthetic data need not follow either, so this is a
  warning about the design, not a rule.
- collinearity: a law in N and D needs them to vary independently; |corr(log N, log D)|
  > 0.95 across runs makes their exponents unidentifiable.
- coverage: fewer than 3 distinct sizes or 3 distinct token counts cannot pin a power law.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from sweeps.expand import PlannedRun

# Besiroglu et al. 2024, Table 1 (their Approach-3 refit of Chinchilla)
BESIROGLU = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}
PRIORS = ("besiroglu", "tpp20")
COLLINEAR_CORR = 0.95
MIN_DISTINCT = 3


def n_opt(flops: float, prior: str = "besiroglu") -> float:
    """Compute-optimal parameter count at C FLOPs under a Chinchilla-like prior (see module doc)."""
    if prior == "tpp20":
        return math.sqrt(flops / (6.0 * 20.0))
    if prior != "besiroglu":
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    from analysis.laws import CHINCHILLA   # the law's own closed form (torch-free)

    return float(CHINCHILLA.n_opt(BESIROGLU, flops, 6.0)[0, 0])


def diagnostics(runs: list[PlannedRun], family: str, prior: str = "besiroglu") -> list[str]:
    """Warnings about the design; an empty list for a sound one."""
    out = []
    if family == "isoflop":
        budgets = sorted({r.tags["budget"] for r in runs})
        for c in budgets:
            ns = [r.n_params for r in runs if r.tags["budget"] == c]
            opt = n_opt(c, prior)
            if not min(ns) < opt < max(ns):
                side = "all sizes are above" if min(ns) >= opt else "all sizes are below"
                out.append(f"isoFLOP budget {c:.3g}: sizes N in [{min(ns):,}, {max(ns):,}] do not bracket the "
                           f"predicted optimum N_opt ~ {opt:,.0f} ({prior} prior): {side} it, so the profile "
                           f"cannot locate its minimum; add sizes on the other side")
    sizes = {(r.config.model.kind, r.config.model.width, r.config.model.depth, r.n_params) for r in runs}
    tokens = {r.tokens for r in runs}
    if len(sizes) < MIN_DISTINCT:
        out.append(f"only {len(sizes)} model size(s): a law in N needs at least {MIN_DISTINCT}")
    if len(tokens) < MIN_DISTINCT:
        out.append(f"only {len(tokens)} token count(s): a law in D needs at least {MIN_DISTINCT}")
    log_n = np.log([float(r.n_params) for r in runs])
    log_d = np.log([float(r.tokens) for r in runs])
    if len(runs) >= 3 and log_n.std() > 0 and log_d.std() > 0:
        corr = float(np.corrcoef(log_n, log_d)[0, 1])
        if abs(corr) > COLLINEAR_CORR:
            out.append(f"N and D are nearly collinear across runs (corr(log N, log D) = {corr:+.3f}, "
                       f"|corr| > {COLLINEAR_CORR}): their exponents cannot be separated; vary tokens per "
                       f"parameter at fixed size")
    return out


# ---------------------------------------------------------------------------
# time estimates

@dataclass(frozen=True)
class RateModel:
    """Achieved training FLOP/s (by each run's declared convention) as a function of its FLOPs/token.

    Measured at a few sizes; log-log interpolation between them, constant outside.
    """
    fpt: tuple[float, ...]
    flops_per_s: tuple[float, ...]
    how: str

    def seconds(self, run: PlannedRun) -> float:
        rate = math.exp(np.interp(math.log(run.flops_per_token), np.log(self.fpt), np.log(self.flops_per_s)))
        return run.flops / rate


def measure_rates(runs: list[PlannedRun], min_steps: int = 3, max_steps: int = 30, budget_s: float = 1.0,
                  max_tokens: int = 4096) -> RateModel:
    """Time optimizer steps (median of up to `max_steps`, about `budget_s` each) of the smallest and largest model of the sweep on this device.

    Uses the trainer's own pieces (model, AdamW with the run's groups, loss under autocast).
    Batches of at most `max_tokens` tokens keep this quick for large models; per-token cost
    barely depends on the batch beyond a few rows on a CPU. Needs torch.
    """
    import torch

    from models import build_model
    from train.ddp import DistInfo
    from train.loop import autocast, lm_loss, resolve_device
    from train.optim import build_optimizer

    by_fpt = sorted(runs, key=lambda r: r.flops_per_token)
    picks = [by_fpt[0]] if by_fpt[0].flops_per_token == by_fpt[-1].flops_per_token else [by_fpt[0], by_fpt[-1]]
    fpts, rates = [], []
    for r in picks:
        cfg = r.config
        device = resolve_device(cfg.train.device, DistInfo())
        torch.manual_seed(0)
        model = build_model(cfg.model).to(device)
        opt = build_optimizer(model, cfg.optim, device)
        rows = max(1, min(cfg.batch_size, max_tokens // cfg.model.context))
        batch = torch.randint(0, cfg.model.vocab_size, (rows, cfg.model.context + 1), device=device)
        times = []
        for i in range(max_steps + 1):  # the first step warms up allocators and kernels
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = lm_loss(model, batch, autocast(device, cfg.train.dtype))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
            if len(times) >= min_steps and sum(times) > budget_s:
                break
        # the median step resists hiccups from other processes sharing the machine
        tokens_per_s = rows * cfg.model.context / float(np.median(times))
        fpts.append(r.flops_per_token)
        rates.append(tokens_per_s * r.flops_per_token)
        del model, opt
    return RateModel(tuple(fpts), tuple(rates), f"median step of {len(picks)} model(s) timed on {device}")


def fixed_rate(flops_per_s: float) -> RateModel:
    return RateModel((1.0,), (float(flops_per_s),), f"assumed {flops_per_s:.3g} FLOP/s")


def plan_rows(runs: list[PlannedRun], rates: RateModel | None) -> list[dict]:
    rows = []
    for r in runs:
        row = {"run_id": r.run_id, "shape": r.shape(), "N": r.n_params, "D": r.tokens,
               "tokens_per_param": r.tokens / r.n_params, "C": r.flops, "steps": r.config.steps,
               "lr": r.config.optim.lr, "schedule": r.config.schedule.kind, "parent": r.parent,
               "branch_step": r.branch_step, "tags": r.tags}
        if rates is not None:
            sec = rates.seconds(r)
            if r.parent:  # a branch only trains from its branch step on
                sec *= 1 - r.branch_step / r.config.steps
            row["est_seconds"] = sec
        rows.append(row)
    return rows


def totals(rows: list[dict], jobs: int = 1) -> dict:
    out = {"runs": len(rows), "C": sum(r["C"] for r in rows)}
    if rows and "est_seconds" in rows[0]:
        serial = sum(r["est_seconds"] for r in rows)
        out.update(est_seconds_serial=serial, est_seconds_parallel=serial / jobs, jobs=jobs)
    return out
