"""The robust fitting engine: Huber loss on log residuals, a vectorized start grid, L-BFGS-B.

The procedure is the one Hoffmann et al. 2022 (Appendix D.2) describe and
Besiroglu et al. 2024 re-ran: minimize the sum of weighted Huber losses of log
residuals (`analysis.objective`) over theta (log-scale parameters, raw exponents),
starting from a grid. Here the whole grid is evaluated in one numpy pass, and
only the best few starts are polished with `scipy.optimize.minimize(method="L-BFGS-B")`
using the exact gradient. Bootstrap intervals (over runs) come from
`analysis.uncertainty`.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from analysis.fitresult import FitResult, percentile_band
from analysis.laws import SEP, Law, get_law
from analysis.objective import FitData, objective, prepare, single_threaded_blas
from analysis.uncertainty import bootstrap_runs

DEFAULT_POLISH = 8            # L-BFGS-B refinements, from the best grid points
_GRID_CHUNK_ELEMENTS = 4_000_000   # starts x points evaluated per numpy pass (bounds memory)
_LBFGS_OPTIONS = {"maxiter": 20_000, "maxfun": 50_000, "ftol": 1e-15, "gtol": 1e-11}


def grid_search(law: Law, data: FitData, delta: float, starts_GxP: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the objective at every start in chunks; return the `keep` best (theta, objective), best first."""
    chunk = max(1, _GRID_CHUNK_ELEMENTS // max(1, data.n * 3))
    objs = np.concatenate([objective(law, starts_GxP[i:i + chunk], data, delta, need_grad=False)[0]
                           for i in range(0, len(starts_GxP), chunk)])
    objs = np.where(np.isfinite(objs), objs, np.inf)
    order = np.argsort(objs, kind="stable")[:keep]
    return starts_GxP[order], objs[order]


def polish(law: Law, data: FitData, delta: float, theta0: np.ndarray, free: np.ndarray):
    """L-BFGS-B from theta0 over the free coordinates (exact gradient); returns (theta, scipy result)."""
    lo_hi = [b for b, f in zip(law.bounds, free) if f]

    def fun(x):
        theta = theta0.copy()
        theta[free] = x
        obj, grad = objective(law, theta[None], data, delta)
        return float(obj[0]), grad[0, free]

    x0 = np.clip(theta0[free], [b[0] for b in lo_hi], [b[1] for b in lo_hi])
    with single_threaded_blas():
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=lo_hi, options=_LBFGS_OPTIONS)
    theta = theta0.copy()
    theta[free] = res.x
    return theta, res


# ---------------------------------------------------------------------
# fit


def _fixed_theta(law: Law, fixed: Mapping[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(free mask, theta values of fixed coordinates) from natural-unit `fixed` values."""
    free = np.ones(law.n_params, dtype=bool)
    values = np.zeros(law.n_params)
    for name, v in (fixed or {}).items():
        if name not in law.param_names:
            raise ValueError(f"fixed parameter {name!r} is not a parameter of law {law.name!r} {list(law.param_names)}")
        i = law.param_names.index(name)
        if law.log_params[i] and not v > 0:
            raise ValueError(f"fixed parameter {name!r} must be positive, got {v}")
        free[i] = False
        values[i] = np.log(v) if law.log_params[i] else float(v)
    if not free.any():
        raise ValueError("every parameter is fixed; nothing to fit")
    return free, values


def fit(table: pd.DataFrame, law: str = "chinchilla", *, delta: float = 1e-3, weights=None,
        fixed: Mapping[str, float] | None = None, n_starts: int | None = None, bootstrap: int = 0,
        seed: int = 0, select: str | None = None, n_convention: str | None = None, level: float = 0.95,
        starts: np.ndarray | None = None, plateau_steps: float | None = None) -> FitResult:
    """Fit `law` to the tidy table; return a FitResult with provenance (and bootstrap intervals if asked).

    table: tidy curve table (columns named by the law's covariates plus `loss`; `run` and `step`
        decide which rows are one run and which row is a run's final point).
    delta: Huber threshold on log residuals. weights: per-row weights (array or column name).
    fixed: natural-unit values of parameters held fixed (e.g. {"E": 1.7}).
    n_starts: how many of the best grid starts are polished with L-BFGS-B (default 8).
    bootstrap: number of bootstrap replicates over runs (0: none). level: interval level.
    select: "final" (each run's last eval point) or "all" (every eval point); default: the rows the
        law describes (`Law.fitted_on`).
    n_convention: which parameter count N is ("total", "non_embedding"); default: what the data
        declare, else the law's (`analysis.load.n_convention`).
    starts: custom start grid in theta space (G, P); default the law's grid.
    plateau_steps: the early plateau measured for these runs, in optimizer steps (default
        `analysis.plateau.PLATEAU_STEPS`); fitted points within 3x it get a warning.
    """
    law = get_law(law)
    if law.members:   # an ensemble: each member fitted on the same rows, weights held fixed
        return fit_mixture(table, law, delta=delta, weights=weights, fixed=fixed, n_starts=n_starts,
                           bootstrap=bootstrap, seed=seed, select=select, n_convention=n_convention, level=level,
                           starts=starts, plateau_steps=plateau_steps)
    if not (delta > 0 and np.isfinite(delta)):
        raise ValueError(f"delta must be a positive number, got {delta}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    if plateau_steps is not None and not (plateau_steps > 0 and np.isfinite(plateau_steps)):
        raise ValueError(f"plateau_steps must be a positive number, got {plateau_steps}")
    select = select or law.fitted_on
    data = prepare(table, law, select=select, weights=weights, n_convention=n_convention, plateau_steps=plateau_steps)
    free, fixed_values = _fixed_theta(law, fixed)
    if data.n < int(free.sum()):
        raise ValueError(f"{data.n} points cannot determine {int(free.sum())} free parameters of law {law.name!r}")

    grid = law.default_starts() if starts is None else np.atleast_2d(np.asarray(starts, dtype=np.float64))
    if grid.shape[1] != law.n_params:
        raise ValueError(f"starts must have {law.n_params} columns {list(law.theta_names)}, got {grid.shape[1]}")
    grid = grid.copy()
    grid[:, ~free] = fixed_values[~free]
    n_polish = DEFAULT_POLISH if n_starts is None else int(n_starts)
    if n_polish < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    best_starts, _ = grid_search(law, data, delta, grid, n_polish)

    best = None
    for theta0 in best_starts:
        theta, res = polish(law, data, delta, theta0, free)
        if best is None or res.fun < best[1].fun:
            best = (theta, res)
    theta_hat, res = best

    theta_hat, res, converged, message, stop_warning = _confirm_optimum(law, data, delta, theta_hat, res, free)
    warnings = list(data.notes) + design_warnings(law, data, free, bootstrap) + _diagnose(law, theta_hat, free, data)
    if "S1" in law.covariates and select == "final":
        warnings.append(f"the {law.name} law describes whole loss curves; select='all' fits every eval point, "
                        "select='final' only each run's last one")
    warnings += stop_warning
    samples = None
    intervals: dict[str, tuple[float, float]] = {}
    boot_info: dict[str, Any] = {}
    if bootstrap:
        boot = bootstrap_runs(law, data, theta_hat, delta=delta, free=free, n_boot=bootstrap, seed=seed)
        samples = law.to_natural(boot.theta_BxP)
        lo, hi = percentile_band(samples, level)
        intervals = {p: (float(a), float(b)) for p, a, b in zip(law.param_names, lo, hi)}
        boot_info = {"solver": boot.solver, "iterations": boot.iterations, "not_converged": boot.n_not_converged}
        if boot.n_not_converged:
            warnings.append(f"{boot.n_not_converged} of {bootstrap} bootstrap refits did not reach the convergence tolerance")
        degenerate = _degenerate_replicates(data, boot.counts_BxR)
        if degenerate:
            warnings.append(f"{degenerate} of {bootstrap} bootstrap replicates drew runs of a single model size; "
                            f"with only {data.n_runs} runs the intervals are unreliable")

    params = law.params_dict(theta_hat)
    params.update({k: float(v) for k, v in (fixed or {}).items()})   # exactly as given, not exp(log(v))
    return FitResult(
        law=law.name, law_version=law.version, params=params,
        intervals=intervals, interval_level=level if bootstrap else None, samples=samples,
        objective=float(res.fun), converged=converged, message=message,
        residuals=residual_stats(law, theta_hat, data), warnings=warnings,
        settings={"loss": "huber", "delta": delta, "objective": "sum of weighted Huber(log L_hat - log L)",
                  "grid_starts": int(len(grid)), "polished_starts": int(len(best_starts)),
                  "optimizer": "scipy L-BFGS-B, exact gradient", "optimizer_options": dict(_LBFGS_OPTIONS),
                  "bootstrap": int(bootstrap), "bootstrap_unit": "run", **({"bootstrap_" + k: v for k, v in boot_info.items()}),
                  "seed": int(seed), "select": select, "fixed": dict(fixed or {}),
                  "weighted": weights is not None},
        convention={"N": data.n_convention, "N_source": data.n_source, "flops": data.flop_convention},
        inputs={"runs": sorted(set(data.runs.tolist())), "n_runs": data.n_runs, "n_rows": data.n,
                "content_hash": data.content_hash, "ranges": dict(data.ranges or {})},
        n_points=data.n, param_names=law.param_names,
    )


def _confirm_optimum(law: Law, data: FitData, delta: float, theta: np.ndarray, res, free: np.ndarray):
    """(theta, result, converged, message, warnings): what an L-BFGS-B stop short of its tolerance means.

    L-BFGS-B also stops when its line search finds no lower point along its last direction
    (scipy's message "ABNORMAL"), which near an optimum is rounding in the objective, not a
    failure. A restart from where it stopped tells the two apart: if it cannot lower the
    objective by more than 1e-9 of itself, the fit is at its optimum up to rounding and its
    forecasts are unaffected; otherwise the better point is kept and the fit is flagged.
    """
    said = str(res.message).strip().rstrip(":").strip() or "no reason given"
    if res.success:
        return theta, res, True, said, []
    theta2, res2 = polish(law, data, delta, theta, free)
    gain = float(res.fun - res2.fun)
    if res2.fun < res.fun:
        theta, res = theta2, res2
    if res.success:
        return theta, res, True, str(res.message).strip(), []
    if gain <= 1e-9 * max(abs(float(res.fun)), 1e-300):
        return theta, res, True, (f"at the optimum up to rounding (L-BFGS-B stopped with {said!r}: its line search "
                                  "found no lower point, and a restart from there does not lower the objective)"), []
    return theta, res, False, said, [
        f"the optimizer did not converge (L-BFGS-B stopped with {said!r}) and a restart still lowered the objective "
        f"by {gain / max(abs(float(res.fun)), 1e-300):.1e} of itself: the fit may not be at its optimum, so its "
        "forecasts may be off; try more starts (--starts) or check the data"]


def design_warnings(law: Law, data: FitData, free: np.ndarray, bootstrap: int) -> list[str]:
    """Designs that give a fit false confidence: too few rows or runs for the parameters, duplicated rows,
    a bootstrap over a handful of runs. (Too few distinct sizes or budgets: `_diagnose`.)"""
    k = int(free.sum())
    out = []
    if data.n <= k:
        out.append(f"only {data.n} rows for {k} free parameters: the law passes through every point, so the "
                   "residuals are zero and nothing (bootstrap included) can say how uncertain the fit is")
    elif data.n_runs <= k:
        out.append(f"only {data.n_runs} runs for {k} free parameters: a law fitted to that few runs can pass through "
                   "them all, and the bootstrap band over runs comes out too narrow")
    rows = pd.DataFrame({**{c: v for c, v in data.covariates.items()}, "loss": data.loss})
    dup = int(rows.duplicated().sum())
    if dup:
        out.append(f"{dup} of {data.n} rows repeat another row exactly (same covariates and loss): repeated rows "
                   "weigh twice in the fit and narrow the bootstrap band as if they were independent runs; drop them")
    if bootstrap and data.n_runs < 5:
        out.append(f"the bootstrap resamples only {data.n_runs} runs: with fewer than about 5 its band is unreliable "
                   "(often too narrow)")
    return out


def _degenerate_replicates(data: FitData, counts_BxR: np.ndarray) -> int:
    """Replicates whose drawn runs all share one N (the N term is then unidentified)."""
    if "N" not in data.covariates:
        return 0
    run_N = np.zeros(data.n_runs)
    run_N[data.run_codes] = data.covariates["N"]
    drawn = counts_BxR > 0
    N_max = np.where(drawn, run_N, -np.inf).max(axis=1)
    N_min = np.where(drawn, run_N, np.inf).min(axis=1)
    return int((N_max == N_min).sum())


def residual_stats(law: Law, theta: np.ndarray, data: FitData) -> dict[str, float]:
    """RMSE of log residuals, max |relative error| of the loss, R² in log space."""
    logL = law.log_predict_grad(theta[None], data.covariates, False)[0][0]
    r = logL - data.log_loss
    y = data.log_loss
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {
        "rmse_log": float(np.sqrt(np.mean(r * r))),
        "max_abs_rel_err": float(np.max(np.abs(np.expm1(r)))),
        "median_abs_rel_err": float(np.median(np.abs(np.expm1(r)))),
        "r2_log": float(1.0 - (r * r).sum() / ss_tot) if ss_tot > 0 else float("nan"),
    }


COLLINEAR_CORR = 0.95


def nd_collinearity(N, D) -> str | None:
    """A warning when log N and log D move together (|corr| > COLLINEAR_CORR): a law in both cannot
    separate their exponents. One rule for the fit and for `sweep plan`'s design check."""
    log_n, log_d = np.log(np.asarray(N, dtype=np.float64)), np.log(np.asarray(D, dtype=np.float64))
    if log_n.size < 3 or not (log_n.std() > 0 and log_d.std() > 0):
        return None
    corr = float(np.corrcoef(log_n, log_d)[0, 1])
    if abs(corr) <= COLLINEAR_CORR:
        return None
    return (f"N and D are nearly collinear across runs (corr(log N, log D) = {corr:+.3f}, |corr| > {COLLINEAR_CORR}): "
            "their exponents cannot be separated; vary tokens per parameter at fixed size")


def _diagnose(law: Law, theta: np.ndarray, free: np.ndarray, data: FitData) -> list[str]:
    warnings = []
    if "N" in data.covariates and "D" in data.covariates:
        collinear = nd_collinearity(data.covariates["N"], data.covariates["D"])
        if collinear:
            warnings.append(collinear)
    for i, name in enumerate(law.param_names):
        lo, hi = law.bounds[i]
        tol = 1e-6 * (hi - lo)
        at_bound = free[i] and (theta[i] - lo < tol or hi - theta[i] < tol)
        if name in law.exponents and at_bound:
            warnings.append(f"exponent {name} = {theta[i]:.4g} sits at its bound [{lo}, {hi}]; the data do not determine it")
        elif at_bound:
            shown = f"log {name} = {theta[i]:.4g}" if law.log_params[i] else f"{name} = {theta[i]:.4g}"
            warnings.append(f"{shown} sits at its bound [{lo}, {hi}]: the data do not determine it, and forecasts "
                            "far from the data depend on where the bound is")
    if law.irreducible:
        E = law.params_dict(theta)[law.irreducible]
        if E > data.loss.min():
            warnings.append(f"irreducible loss {law.irreducible} = {E:.4g} is above the lowest observed loss {data.loss.min():.4g}")
    if "S2" in data.covariates and free[law.param_names.index("C")] and not np.any(data.covariates["S2"] > 0):
        warnings.append("S2 (annealing area) is zero in every row: no run decayed its learning rate, so C is not determined")
    for c, what in (("N", "model sizes N"), ("D", "token counts D"), ("C", "compute budgets C"),
                    ("M", "tokens-per-parameter ratios M")):
        if c in data.covariates and np.unique(data.covariates[c]).size < 3:
            warnings.append(f"fewer than 3 distinct {what} ({np.unique(data.covariates[c]).size}); "
                            "the exponent on it is poorly determined")
    return warnings


# ---------------------------------------------------------------------------
# ensembles of laws (`analysis.laws`, "Ensembles of laws")

def fit_mixture(table, law, *, fixed=None, n_convention=None, select=None, **fit_kwargs):
    """Fit an ensemble law: each member by `fit` on the same rows under one N convention
    (the first member's, unless `n_convention` says), then `combine_fits` with the law's fixed weights."""
    if fixed:
        raise ValueError(f"fixed parameters are not supported for an ensemble ({law.name}); fix them in a single law")
    select = select or law.fitted_on
    first = fit(table, law.members[0], n_convention=n_convention, select=select, **fit_kwargs)
    conv = first.convention["N"]
    rest = [fit(table, m, n_convention=conv, select=select, **fit_kwargs) for m in law.members[1:]]
    return combine_fits(law, [first, *rest], table, select=select)


def combine_fits(law, results, table, *, select: str | None = None):
    """One FitResult of ensemble `law` from its members' fits on the same rows (`results`, in the law's member
    order). Bootstrap sets are paired by index: each member's b-th set was fitted on the same resampled runs
    (`analysis.uncertainty.resample_runs` with one seed), so the ensemble's b-th forecast is theirs averaged."""
    if [r.law for r in results] != list(law.members):
        raise ValueError(f"ensemble {law.name}: fits of {[r.law for r in results]} given, its laws are {list(law.members)}")
    convs = {r.convention["N"] for r in results}
    if len(convs) != 1:
        raise ValueError(f"ensemble {law.name}: its members' fits count N differently ({sorted(convs)}); "
                         "fit them under one convention")
    hashes = {r.inputs.get("content_hash") for r in results}
    if len(hashes) != 1:
        raise ValueError(f"ensemble {law.name}: its members were fitted on different rows")
    select = select or results[0].settings.get("select") or law.fitted_on
    params = {m.law + SEP + k: v for m in results for k, v in m.params.items()}
    intervals = {m.law + SEP + k: v for m in results for k, v in m.intervals.items()}
    samples = None
    if all(r.samples is not None and len(r.samples) for r in results):
        n = min(len(r.samples) for r in results)
        samples = np.hstack([np.asarray(r.samples, float)[:n] for r in results])
    data = prepare(table, law, select=select, n_convention=results[0].convention["N"])
    first = results[0]
    return FitResult(
        law=law.name, law_version=law.version, params=params, intervals=intervals,
        interval_level=first.interval_level if samples is not None else None, samples=samples,
        objective=float(sum(r.objective for r in results)), converged=all(r.converged for r in results),
        message="; ".join(f"{r.law}: {r.message}" for r in results),
        residuals=residual_stats(law, law.to_theta(params), data),
        warnings=[f"{r.law}: {w}" for r in results for w in r.warnings],
        settings={**{k: v for k, v in first.settings.items() if k not in ("grid_starts", "polished_starts")},
                  "select": select, "ensemble": {"weights": dict(zip(law.members, law.weights)),
                                                 "note": "members fitted separately on these rows; the forecast "
                                                         "is their weighted mean",
                                                 "members": {r.law: r.settings for r in results}}},
        convention=dict(first.convention), inputs=dict(first.inputs), n_points=first.n_points,
        param_names=law.param_names,
    )
