"""Sweep plans: the runs, their cost, and design diagnostics (torch-free; time estimates: sweeps/estimate.py).

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
- the early plateau: runs that end within 3x the plateau (analysis.plateau) show the drop
  after it, not scaling.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING


from sweeps.expand import PlannedRun

if TYPE_CHECKING:  # pragma: no cover
    from sweeps.estimate import RateModel

# Besiroglu et al. 2024, Table 1 (their Approach-3 refit of Chinchilla)
BESIROGLU = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}
PRIORS = ("besiroglu", "tpp20")
MIN_DISTINCT = 3


def n_opt(flops: float, prior: str = "besiroglu") -> float:
    """Compute-optimal parameter count at C FLOPs under a Chinchilla-like prior (see module doc)."""
    if prior == "tpp20":
        return math.sqrt(flops / (6.0 * 20.0))
    if prior != "besiroglu":
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    from analysis.laws import CHINCHILLA   # the law's own closed form (torch-free)

    return float(CHINCHILLA.n_opt(BESIROGLU, flops, 6.0)[0, 0])


def diagnostics(runs: list[PlannedRun], family: str, prior: str = "besiroglu",
                plateau_steps: float | None = None) -> list[str]:
    """Warnings about the design; an empty list for a sound one.

    `plateau_steps`: the early plateau's length in optimizer steps for this setup (default:
    `analysis.plateau.PLATEAU_STEPS`)."""
    from analysis.plateau import PLATEAU_STEPS, short_runs

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
    from analysis.fitting import nd_collinearity   # the fit's own rule (torch-free)

    collinear = nd_collinearity([float(r.n_params) for r in runs], [float(r.tokens) for r in runs])
    if collinear:
        out.append(collinear)
    steps = {r.run_id: -(-r.tokens // r.config.train.batch_tokens) for r in runs}
    plateau = short_runs(steps, PLATEAU_STEPS if plateau_steps is None else plateau_steps)
    if plateau:
        out.append(plateau)
    return out


# ---------------------------------------------------------------------------
# the plan table

def plan_rows(runs: list[PlannedRun], rates: "RateModel | None") -> list[dict]:
    """One row per run. `C` is the run's compute (what a law reads); `C_trained` what the sweep spends on it
    (a WSD branch starts from its parent's checkpoint, so it trains only the steps after its branch step)."""
    from sweeps.estimate import train_tokens

    rows = []
    for r in runs:
        row = {"run_id": r.run_id, "shape": r.shape(), "N": r.n_params, "D": r.tokens,
               "tokens_per_param": r.tokens / r.n_params, "C": r.flops,
               "C_trained": r.flops_per_token * train_tokens(r), "steps": r.config.steps,
               "lr": r.config.optim.lr, "schedule": r.config.schedule.kind, "seed": r.config.run.seed,
               "data_seed": r.config.data.seed, "parent": r.parent, "branch_step": r.branch_step, "tags": r.tags}
        if rates is not None:
            parts = rates.parts(r)
            row["est_seconds"] = sum(parts.values())
            row["est_parts"] = parts
        rows.append(row)
    return rows


def totals(rows: list[dict], jobs: int = 1) -> dict:
    """Total compute the sweep trains (a WSD branch's shared prefix counted once, with its parent), and
    with estimates the serial time and the wall time of the local pool with `jobs` workers (runs started
    in order, each on the first free worker)."""
    from sweeps.estimate import schedule
    out = {"runs": len(rows), "C": sum(r.get("C_trained", r["C"]) for r in rows)}
    if rows and "est_seconds" in rows[0]:
        secs = [r["est_seconds"] for r in rows]
        out.update(est_seconds_serial=sum(secs), est_seconds_parallel=schedule(secs, jobs), jobs=jobs)
    return out
