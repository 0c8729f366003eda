"""IsoFLOP analyses of Hoffmann et al. 2022 (Sec. 3.1 and 3.2): N_opt(C) and D_opt(C) without a loss law.

- Approach 1 (`isoflop_approach1`): the envelope. For each FLOP budget C, the
  lowest loss any run reaches at C, and that run's N and D there. Loss at C is
  read off each run's curve at intermediate checkpoints (log-log interpolation
  between eval points), as Hoffmann et al. and Porian et al. 2024 do, so one
  run contributes to many budgets.
- Approach 2 (`isoflop_approach2`): per budget, a parabola of loss in log N
  through the runs at that budget; its vertex is N_opt(C), and D_opt = C/(kN_opt).

Both then fit power laws N_opt = G_N C^a and D_opt = G_D C^b by least squares
in log-log space.

Caveat on intermediate checkpoints: a run with a cosine (or any decaying)
schedule has not annealed at an intermediate checkpoint, so its loss there is
higher than a run of that length would reach — reading budgets off curves
biases N_opt toward small models (Porian et al. 2024; Hägele et al. 2024).
With constant or WSD-with-cooldown runs this matters less. `final_only=True`
uses only each run's final point (the isoFLOP-sweep way) and avoids the bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

_REQUIRED = ("run", "N", "D", "C", "loss")


@dataclass(frozen=True)
class IsoflopResult:
    approach: int
    budgets: np.ndarray          # FLOP budgets asked for
    N_opt: np.ndarray            # per budget (NaN where the budget had no usable runs)
    D_opt: np.ndarray
    loss_opt: np.ndarray
    n_runs: np.ndarray           # runs that informed each budget
    a: float                     # N_opt = G_N * C^a
    b: float                     # D_opt = G_D * C^b
    G_N: float
    G_D: float
    final_only: bool
    best_run: tuple[str, ...] = ()   # approach 1: the run on the envelope at each budget

    def n_opt(self, C) -> np.ndarray:
        return self.G_N * np.asarray(C, dtype=float) ** self.a

    def d_opt(self, C) -> np.ndarray:
        return self.G_D * np.asarray(C, dtype=float) ** self.b

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({"C": self.budgets, "N_opt": self.N_opt, "D_opt": self.D_opt,
                           "loss_opt": self.loss_opt, "n_runs": self.n_runs})
        if self.best_run:
            df["run"] = list(self.best_run)
        return df


def _check(table: pd.DataFrame, budgets) -> np.ndarray:
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"isoFLOP analysis needs columns {list(_REQUIRED)}; missing {missing}")
    for c in ("N", "D", "C", "loss"):
        v = table[c].to_numpy(dtype=float)
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"column {c!r} must be finite and positive")
    b = np.atleast_1d(np.asarray(budgets, dtype=float))
    if b.size < 2 or not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError("budgets must be at least two positive FLOP counts")
    return np.sort(b)


def _final_rows(table: pd.DataFrame) -> pd.DataFrame:
    if "step" in table.columns:
        return table.loc[table.groupby("run")["step"].idxmax()]
    return table.loc[table.groupby("run")["C"].idxmax()]


def _power_fit(C: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(y)
    if ok.sum() < 2:
        raise ValueError(f"only {int(ok.sum())} budget(s) had usable runs; need at least 2 for the power-law fit")
    slope, icpt = np.polyfit(np.log(C[ok]), np.log(y[ok]), 1)
    return float(slope), float(np.exp(icpt))


def _result(approach, budgets, N, D, L, counts, final_only, best=()) -> IsoflopResult:
    a, GN = _power_fit(budgets, N)
    b, GD = _power_fit(budgets, D)
    return IsoflopResult(approach, budgets, N, D, L, counts, a, b, GN, GD, final_only, tuple(best))


def _at_budget(run_rows: pd.DataFrame, c: float):
    """(loss, D) of one run at compute c by log-log interpolation; None outside its C range."""
    C = run_rows["C"].to_numpy(float)
    if c < C.min() or c > C.max():
        return None
    lnC = np.log(C)
    loss = float(np.exp(np.interp(np.log(c), lnC, np.log(run_rows["loss"].to_numpy(float)))))
    D = float(np.exp(np.interp(np.log(c), lnC, np.log(run_rows["D"].to_numpy(float)))))
    return loss, D


def isoflop_approach1(table: pd.DataFrame, budgets, *, final_only: bool = False, rtol: float = 0.1) -> IsoflopResult:
    """Envelope of the loss-vs-compute curves (Hoffmann et al. 2022 Approach 1).

    final_only=False reads each run's curve at every budget it spans (see the module
    caveat on decaying schedules); final_only=True uses final points only, a run
    counting for a budget when |ln C_final - ln budget| <= rtol.
    """
    budgets = _check(table, budgets)
    N_opt, D_opt, L_opt = (np.full(budgets.size, np.nan) for _ in range(3))
    counts = np.zeros(budgets.size, dtype=int)
    best: list[str] = [""] * budgets.size
    finals = _final_rows(table)
    groups = {run: g.sort_values("C") for run, g in table.groupby("run")}
    for j, c in enumerate(budgets):
        cands = []
        if final_only:
            near = finals[np.abs(np.log(finals["C"].to_numpy(float) / c)) <= rtol]
            cands = [(float(r.loss), float(r.N), c / (float(r.C) / float(r.D)), str(r.run)) for r in near.itertuples()]
        else:
            for run, g in groups.items():
                hit = _at_budget(g, c)
                if hit is not None:
                    cands.append((hit[0], float(g["N"].iloc[0]), hit[1], str(run)))
        if cands:
            loss, N, D, run = min(cands)
            N_opt[j], D_opt[j], L_opt[j], counts[j], best[j] = N, D, loss, len(cands), run
    return _result(1, budgets, N_opt, D_opt, L_opt, counts, final_only, best)


def isoflop_approach2(table: pd.DataFrame, budgets, *, final_only: bool = True, rtol: float = 0.1,
                      flops_per_param_token: float = 6.0) -> IsoflopResult:
    """Parabola in log N per budget (Hoffmann et al. 2022 Approach 2).

    final_only=True: the runs whose final compute is within rtol (in ln C) of the budget
    (an isoFLOP sweep); final_only=False: every run's curve read at the budget. A budget
    needs runs of at least 3 distinct sizes and an upward parabola; otherwise it is NaN.
    D_opt = budget / (k N_opt) with k = flops_per_param_token.
    """
    budgets = _check(table, budgets)
    N_opt, D_opt, L_opt = (np.full(budgets.size, np.nan) for _ in range(3))
    counts = np.zeros(budgets.size, dtype=int)
    finals = _final_rows(table)
    groups = {run: g.sort_values("C") for run, g in table.groupby("run")}
    for j, c in enumerate(budgets):
        if final_only:
            near = finals[np.abs(np.log(finals["C"].to_numpy(float) / c)) <= rtol]
            pts = list(zip(near["N"].to_numpy(float), near["loss"].to_numpy(float)))
        else:
            pts = []
            for g in groups.values():
                hit = _at_budget(g, c)
                if hit is not None:
                    pts.append((float(g["N"].iloc[0]), hit[0]))
        if len({p[0] for p in pts}) < 3:
            continue
        x = np.log(np.array([p[0] for p in pts]))
        y = np.array([p[1] for p in pts])
        q2, q1, q0 = np.polyfit(x, y, 2)
        if q2 <= 0:
            continue          # no minimum: the budget's runs do not bracket the optimum
        x_star = -q1 / (2 * q2)
        N_opt[j] = np.exp(x_star)
        D_opt[j] = c / (flops_per_param_token * N_opt[j])
        L_opt[j] = q0 + q1 * x_star + q2 * x_star ** 2
        counts[j] = len(pts)
    return _result(2, budgets, N_opt, D_opt, L_opt, counts, final_only)
