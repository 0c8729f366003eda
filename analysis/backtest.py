"""Backtests: fit a law on the small runs, predict the large ones, score the forecast.

A scaling law is only as good as its extrapolation, so the test mirrors its use:
fit on runs whose compute is at most a cutoff, predict the held-out larger runs,
and compare with what they actually reached.

- `backtest(table, law)`: leave-largest-out at one compute cutoff.
- `rollout(table, law)`: the same at successive cutoffs, so the error can be
  read against the extrapolation factor (held-out compute / cutoff).
- `leaderboard(table, laws)`: several laws scored on the same split.

Per held-out run: relative error of the final loss, ARE over its curve
(mean |pred - actual| / actual over its eval points from the fewest tokens the
law was fitted on; the error measure of Tissue et al. 2024 for whole-curve
laws), and whether the actual final loss lies
inside the predicted interval (`level`, 90% by default). Two intervals are scored:

- the parameter interval (`lower`, `upper`): the bootstrap-over-runs band of the
  law's mean prediction. It shrinks with more runs, so it covers the *law*, not
  one run's seed-to-seed and measurement scatter;
- the predictive interval (`pred_lower`, `pred_upper`): each bootstrap
  prediction plus a log-residual drawn from the fitted points (a residual
  bootstrap prediction interval, Davison & Hinkley 1997, Sec. 6.3.3), which is
  what a forecast of a single new run should be judged by.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.fitting import fit as fit_law
from analysis.laws import get_law
from analysis.load import select_rows, use_n_convention

PER_RUN_COLUMNS = ("cutoff", "run", "N", "D", "C", "extrapolation", "actual", "predicted", "lower", "upper",
                   "rel_err", "are_curve", "covered", "pred_lower", "pred_upper", "covered_predictive")


@dataclass(frozen=True)
class BacktestResult:
    law: str
    level: float
    cutoffs: tuple[float, ...]           # compute cutoffs (FLOPs): train on runs with final C <= cutoff
    per_run: pd.DataFrame                # one row per (cutoff, held-out run): PER_RUN_COLUMNS
    summary: dict[str, Any]              # mean/max errors, coverage, counts
    fits: tuple[Any, ...] = field(default=(), repr=False)  # the FitResult of each cutoff

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: summary plus per-run rows (NaN as None)."""
        rows = self.per_run.astype(object).where(self.per_run.notna(), None).to_dict("records")
        return {"law": self.law, "level": self.level, "cutoffs": list(self.cutoffs),
                "summary": jsonable(self.summary), "per_run": jsonable(rows)}


def run_compute(table: pd.DataFrame) -> pd.Series:
    """Final compute of each run (its largest C), indexed by run."""
    _require(table, ("run", "C"))
    return table.groupby("run")["C"].max().sort_values()


def default_cutoff(table: pd.DataFrame, holdout_frac: float = 0.25) -> float:
    """The compute cutoff that holds out about `holdout_frac` of the runs (the largest; at least one budget)."""
    if not 0 < holdout_frac < 1:
        raise ValueError(f"holdout_frac must lie in (0, 1), got {holdout_frac}")
    budgets = np.unique(run_compute(table).to_numpy())
    if len(budgets) < 2:
        raise ValueError("a backtest needs runs of at least two different compute budgets")
    n_out = max(1, int(round(holdout_frac * len(budgets))))
    return float(budgets[len(budgets) - n_out - 1])


def backtest(table: pd.DataFrame, law: str = "chinchilla", *, cutoff: float | None = None,
             holdout_frac: float = 0.25, level: float = 0.9, bootstrap: int = 200, seed: int = 0,
             select: str | None = None, n_convention: str | None = None, **fit_kwargs) -> BacktestResult:
    """Leave-largest-out: fit on runs with final compute <= cutoff, predict the rest.

    `bootstrap` replicates give the prediction intervals; with 0 there are no
    intervals and coverage is NaN. `select` defaults to the rows the law describes
    (`Law.fitted_on`) and N counts what `analysis.load.n_convention` decides for this law,
    so a law scores the same alone or in a leaderboard. Extra keyword arguments go to
    `analysis.fitting.fit`.
    """
    table, select, fit_kwargs = _for_law(table, law, select, n_convention, fit_kwargs)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    cut = default_cutoff(table, holdout_frac) if cutoff is None else float(cutoff)
    per_run, result = _one_cutoff(table, law, cut, level, bootstrap, seed, select, fit_kwargs)
    return BacktestResult(law=law, level=level, cutoffs=(cut,), per_run=per_run,
                          summary=_summarize(per_run, [result], table, cut, select, fit_kwargs), fits=(result,))


def rollout_cutoffs(table: pd.DataFrame, n_cutoffs: int, min_train_runs: int) -> tuple[float, ...]:
    """Up to `n_cutoffs` compute cutoffs, log-spaced over those that keep >= `min_train_runs` runs and hold one out."""
    compute = run_compute(table)
    budgets = np.unique(compute.to_numpy())
    n_train = np.array([(compute <= b).sum() for b in budgets])
    feasible = budgets[(n_train >= min_train_runs) & (budgets < budgets[-1])]
    if len(feasible) == 0:
        raise ValueError(f"no compute cutoff leaves >= {min_train_runs} training runs and a larger held-out run "
                         f"({len(compute)} runs, {len(budgets)} budgets)")
    picks = np.unique(np.round(np.geomspace(1, len(feasible), min(n_cutoffs, len(feasible)))).astype(int) - 1)
    return tuple(float(feasible[i]) for i in picks)


def rollout(table: pd.DataFrame, law: str = "chinchilla", *, n_cutoffs: int = 4, min_train_runs: int | None = None,
            level: float = 0.9, bootstrap: int = 200, seed: int = 0, select: str | None = None,
            n_convention: str | None = None, cutoffs=None, **fit_kwargs) -> BacktestResult:
    """Backtests at successive compute cutoffs (log-spaced over the feasible budgets, or `cutoffs`).

    At each cutoff every larger run is held out; `extrapolation` in `per_run`
    says how far beyond the fitted compute each forecast reaches. The smallest
    cutoff keeps `min_train_runs` runs (default: one more than the law's parameters).
    """
    table, select, fit_kwargs = _for_law(table, law, select, n_convention, fit_kwargs)
    if min_train_runs is None:
        min_train_runs = get_law(law).params_per_fit + 1
    cutoffs = rollout_cutoffs(table, n_cutoffs, min_train_runs) if cutoffs is None else tuple(map(float, cutoffs))
    frames, fits = [], []
    for cut in cutoffs:
        per_run, result = _one_cutoff(table, law, cut, level, bootstrap, seed, select, fit_kwargs)
        frames.append(per_run)
        fits.append(result)
    per_run = pd.concat(frames, ignore_index=True)
    summary = _summarize(per_run, fits, table, cutoffs[-1], select, fit_kwargs)
    summary["n_cutoffs"] = len(cutoffs)
    return BacktestResult(law=law, level=level, cutoffs=cutoffs, per_run=per_run, summary=summary,
                          fits=tuple(fits))


RANKING = "far-weighted |rel err|: rollout forecasts weighted by ln(C / cutoff), so the farthest count most"
DEFAULT_ROLLOUT_CUTOFFS = 4


def leaderboard(table: pd.DataFrame, laws: Sequence[str] = ("chinchilla", "kaplan"), **kwargs) -> pd.DataFrame:
    """Every law backtested on the same splits, best first (`RANKING`).

    A law that cannot be fitted on this data (say, a whole-curve law on a table
    of final losses) gets a row with its error message instead of stopping the others.
    """
    return leaderboard_results(table, laws, **kwargs)[0]


def leaderboard_results(table: pd.DataFrame, laws: Sequence[str], *, n_cutoffs: int = DEFAULT_ROLLOUT_CUTOFFS,
                        rollouts: dict | None = None, **kwargs) -> tuple[pd.DataFrame, dict[str, BacktestResult]]:
    """`leaderboard` plus each law's BacktestResult at the main cutoff (for plots and per-run tables).

    Each law is scored twice on splits shared by every law: at one compute cutoff (`cutoff`,
    default: the top `holdout_frac` of budgets held out; errors and interval coverage), and by
    a rollout over up to `n_cutoffs` cutoffs, from the smallest that leaves every law one more
    run than it has parameters (`far_err`, what the board is ranked by: the mean |relative
    error| of the rollout's forecasts weighted by ln(held-out C / cutoff), so a law that is
    right nearby but drifts at the far end ranks below one that holds). Without an explicit
    `select`, each law is fitted on the rows it describes (`Law.fitted_on`), and each law
    counts N its own way (`analysis.load.n_convention`). A dict given as `rollouts` receives each
    law's rollout forecasts (`BacktestResult.per_run`), to compare laws forecast by forecast.
    """
    law_objs = [get_law(name) for name in laws]
    select = kwargs.pop("select", None)
    cutoff = kwargs.pop("cutoff", None)
    if cutoff is None:
        cutoff = default_cutoff(table, kwargs.pop("holdout_frac", 0.25))
    kwargs.pop("holdout_frac", None)
    try:
        cuts = rollout_cutoffs(table, n_cutoffs, max(law.params_per_fit for law in law_objs) + 1)
    except ValueError:
        cuts = (float(cutoff),)     # too few runs for a rollout: rank on the one split
    rows, results = [], {}
    for name in laws:
        t0 = time.perf_counter()
        try:
            res = backtest(table, name, cutoff=cutoff, select=select, **kwargs)
            results[name] = res
            roll = rollout(table, name, cutoffs=cuts, select=select, **{**kwargs, "bootstrap": 0})
            if rollouts is not None:
                rollouts[name] = roll.per_run
            rows.append({"law": name, **far_weighted(roll.per_run), **res.summary,
                         "seconds": time.perf_counter() - t0, "error": ""})
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
            rows.append({"law": name, "seconds": time.perf_counter() - t0, "error": str(e).splitlines()[0]})
    board = pd.DataFrame(rows)
    if "far_err" in board:
        board = board.sort_values(["far_err", "mean_abs_rel_err"], na_position="last", kind="stable")
    return board.reset_index(drop=True), results


def far_weighted(per_run: pd.DataFrame) -> dict[str, float]:
    """far_err: mean |rel err| weighted by ln(extrapolation) (forecasts at the cutoff itself weigh nothing);
    with it the number of forecasts and the largest distance they reach."""
    x = np.log(np.maximum(per_run["extrapolation"].to_numpy(float), 1.0))
    err = per_run["rel_err"].abs().to_numpy(float)
    ok = np.isfinite(err)
    w = np.where(ok, x, 0.0)
    far = float((w * np.where(ok, err, 0.0)).sum() / w.sum()) if w.sum() > 0 else float(np.nanmean(err))
    return {"far_err": far, "rollout_forecasts": int(ok.sum()), "rollout_max_extrapolation": float(np.exp(x.max()))}


def far_gap(best: pd.DataFrame, other: pd.DataFrame) -> tuple[float, float]:
    """How much worse `other`'s rollout forecasts are than `best`'s, forecast by forecast: the far-weighted
    mean of |rel err|(other) - |rel err|(best) over the forecasts both made (same cutoff, same held-out
    run), and that mean over its standard error (z; inf when every forecast differs by the same amount).

    The forecasts of one ladder share runs, so they are not independent and z overstates the evidence:
    a gap with a small z is one the backtests cannot tell from noise, not the reverse."""
    keys = ["cutoff", "run"]
    m = best[keys + ["rel_err", "extrapolation"]].merge(other[keys + ["rel_err"]], on=keys, suffixes=("_a", "_b"))
    m = m[np.isfinite(m["rel_err_a"]) & np.isfinite(m["rel_err_b"])]
    w = np.log(np.maximum(m["extrapolation"].to_numpy(float), 1.0))
    if len(m) == 0 or w.sum() <= 0:
        return float("nan"), float("nan")
    d = m["rel_err_b"].abs().to_numpy(float) - m["rel_err_a"].abs().to_numpy(float)
    gap = float((w * d).sum() / w.sum())
    se = float(np.sqrt((w ** 2 * (d - gap) ** 2).sum()) / w.sum())
    return gap, (gap / se if se > 0 else (0.0 if gap == 0 else float("inf")))


# ---------------------------------------------------------------------------

def _for_law(table, law, select, n_convention, fit_kwargs):
    """The table with N counted as this law's fit counts it, the law's row selection, the fit settings."""
    law = get_law(law)   # unknown law -> ValueError listing the known ones, before any work
    table, conv, _, _ = use_n_convention(table, law, n_convention)
    return table, select or law.fitted_on, {**fit_kwargs, "n_convention": conv}


def log_residuals(result, table: pd.DataFrame, select: str | None = None) -> np.ndarray:
    """log(actual) - log(fit) on the rows the fit used (`select`, default the fit's own), N as the fit counted it."""
    rows = select_rows(use_n_convention(table, result.law_obj, result.convention.get("N"))[0],
                       select or result.settings.get("select") or result.law_obj.fitted_on)
    return np.log(rows["loss"].to_numpy(float)) - np.log(np.asarray(result.predict(**covariates_for(rows, result.law)),
                                                                    float))


def covariates_for(rows: pd.DataFrame, law_name: str) -> dict[str, np.ndarray]:
    """The covariate arrays a law predicts from, taken from tidy-table rows (N as the rows count it)."""
    law = get_law(law_name)
    cols = law.source_columns(rows.columns)
    missing = [c for c in cols if c not in rows.columns]
    if missing:
        hint = (" (S1/S2 come from each run's lr schedule: load run directories, not a table of final losses)"
                if {"S1", "S2"} & set(missing) else "")
        raise ValueError(f"law {law_name!r} needs column(s) {missing}, which the table lacks{hint}")
    return law.covariate_arrays({c: rows[c].to_numpy(dtype=float) for c in cols})


def _one_cutoff(table, law, cut, level, bootstrap, seed, select, fit_kwargs):
    compute = run_compute(table)
    train_runs = compute.index[compute <= cut]
    held_runs = compute.index[compute > cut]
    if len(held_runs) == 0:
        raise ValueError(f"compute cutoff {cut:.3g} holds out no run (largest run compute {compute.max():.3g})")
    if len(train_runs) == 0:
        raise ValueError(f"compute cutoff {cut:.3g} leaves no training run (smallest run compute {compute.min():.3g})")
    train = table[table["run"].isin(train_runs)]
    result = fit_law(train, law, bootstrap=bootstrap, seed=seed, select=select, **fit_kwargs)

    held = table[table["run"].isin(held_runs)].sort_values(["run", "step"])
    finals = held.loc[held.groupby("run")["C"].idxmax()]
    cov = covariates_for(finals, law)
    if bootstrap > 0:
        point, lower, upper = (np.asarray(a, float) for a in result.predict_interval(level=level, **cov))
    else:
        point = np.asarray(result.predict(**cov), float)
        lower = upper = np.full_like(point, np.nan)
    pred_lower, pred_upper = _predictive_band(result, train, law, select, cov, level, seed, bootstrap)
    actual = finals["loss"].to_numpy(dtype=float)
    # the curve's eval points from the fewest tokens the law was fitted on (it says nothing before)
    d_min = (result.inputs.get("ranges") or {}).get("D", [0.0])[0]
    curve = held[held["D"] >= d_min] if "D" in held.columns else held
    curve_pred = np.asarray(result.predict(**covariates_for(curve, law)), float)
    are = (pd.Series(np.abs(curve_pred - curve["loss"].to_numpy(float)) / curve["loss"].to_numpy(float),
                     index=curve.index).groupby(curve["run"]).mean())
    per_run = pd.DataFrame({
        "cutoff": cut, "run": finals["run"].to_numpy(), "N": finals["N"].to_numpy(float),
        "D": finals["D"].to_numpy(float), "C": finals["C"].to_numpy(float),
        "extrapolation": finals["C"].to_numpy(float) / cut,
        "actual": actual, "predicted": point, "lower": lower, "upper": upper,
        "rel_err": (point - actual) / actual,
        "are_curve": are.reindex(finals["run"]).to_numpy(),
        "covered": _inside(actual, lower, upper),
        "pred_lower": pred_lower, "pred_upper": pred_upper,
        "covered_predictive": _inside(actual, pred_lower, pred_upper),
    })
    return per_run.sort_values("C", ignore_index=True), result


def _inside(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """1.0 where lower <= actual <= upper, 0.0 where not, NaN where there is no interval."""
    return np.where(np.isnan(lower), np.nan, ((lower <= actual) & (actual <= upper)).astype(float))


def _predictive_band(result, train: pd.DataFrame, law: str, select: str, cov: dict, level: float, seed: int,
                     bootstrap: int) -> tuple[np.ndarray, np.ndarray]:
    """Residual-bootstrap prediction interval: log L_b + r_j with r_j drawn from the fit's log residuals."""
    n = len(next(iter(cov.values())))
    if bootstrap <= 0:
        return np.full(n, np.nan), np.full(n, np.nan)
    resid = log_residuals(result, train, select)
    log_samples_BxN = np.log(np.asarray(result.predict_samples(**cov), float))
    rng = np.random.default_rng(seed)
    noisy = log_samples_BxN + rng.choice(resid, size=log_samples_BxN.shape, replace=True)
    q = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(np.exp(noisy), [q, 100.0 - q], axis=0)
    return lo, hi


def _summarize(per_run: pd.DataFrame, fits: list, table: pd.DataFrame, last_cut: float, select: str,
               fit_kwargs: dict) -> dict[str, Any]:
    abs_err = per_run["rel_err"].abs()
    covered = per_run["covered"].dropna()
    covered_pred = per_run["covered_predictive"].dropna()
    compute = run_compute(table)
    return {
        "n_train_runs": int((compute <= last_cut).sum()),
        "n_holdout_runs": int(per_run["run"].nunique()),
        "mean_abs_rel_err": float(abs_err.mean()),
        "max_abs_rel_err": float(abs_err.max()),
        "mean_are_curve": float(per_run["are_curve"].mean()),
        "coverage": float(covered.mean()) if len(covered) else float("nan"),
        "coverage_predictive": float(covered_pred.mean()) if len(covered_pred) else float("nan"),
        "max_extrapolation": float(per_run["extrapolation"].max()),
        "converged": bool(all(getattr(f, "converged", True) for f in fits)),
        "select": select, "n_convention": fit_kwargs.get("n_convention"),
    }


def _require(table: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks column(s) {missing}; it has {list(table.columns)}")


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
