"""The robust fitting engine: Huber loss on log residuals, a vectorized start grid, L-BFGS-B.

The procedure is the one Hoffmann et al. 2022 (Appendix D.2) describe and
Besiroglu et al. 2024 re-ran: minimize

    sum_i w_i * Huber_delta(log L̂(x_i; theta) - log L_i),   delta = 1e-3,

over theta (log-scale parameters, raw exponents), starting from a grid. The
objective is the SUM over points (not the mean): that is the value, 0.0010183 on
the 240 published Chinchilla points, that Besiroglu et al.'s procedure reaches. Here
the whole grid is evaluated in one numpy pass, and only the best few starts
are polished with `scipy.optimize.minimize(method="L-BFGS-B")` using the
exact gradient. Bootstrap intervals (over runs) come from
`analysis.uncertainty`.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from analysis.fitresult import FitResult, percentile_band
from analysis.laws import Law, get_law

SELECTIONS = ("final", "all")
DEFAULT_POLISH = 8            # L-BFGS-B refinements, from the best grid points
_GRID_CHUNK_ELEMENTS = 4_000_000   # starts x points evaluated per numpy pass (bounds memory)
_LBFGS_OPTIONS = {"maxiter": 20_000, "maxfun": 50_000, "ftol": 1e-15, "gtol": 1e-11}


# ---------------------------------------------------------------------
# data


@dataclass(frozen=True)
class FitData:
    """The rows a fit uses, as arrays: covariates, log loss, weights and the run of every row."""
    covariates: dict[str, np.ndarray]
    loss: np.ndarray
    weights: np.ndarray
    runs: np.ndarray              # run id of each row (str)
    run_codes: np.ndarray         # 0..R-1 index of each row's run
    n_convention: str
    flop_convention: str | None
    content_hash: str
    notes: tuple[str, ...] = ()   # caveats found while preparing (become FitResult warnings)
    ranges: dict = None           # [min, max] of N, D and C over the fitted rows, where the table has them

    @property
    def log_loss(self) -> np.ndarray:
        return np.log(self.loss)

    @property
    def n(self) -> int:
        return self.loss.size

    @property
    def n_runs(self) -> int:
        return int(self.run_codes.max()) + 1 if self.n else 0


def _source_columns(law: Law, table: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """For each covariate, the table columns it is computed from."""
    out = {}
    for c in law.covariates:
        if c == "M" and "M" not in table.columns:
            out[c] = ("N", "D")          # token multiplier M = D / N (Gadre et al. 2024)
        else:
            out[c] = (c,)
    return out


def select_rows(table: pd.DataFrame, select: str) -> pd.DataFrame:
    """The rows a fit with `select` uses: every row ("all") or each run's last eval point ("final")."""
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    if select == "all" or "run" not in table.columns:
        return table
    if "step" not in table.columns:
        if table["run"].duplicated().any():
            raise ValueError("select='final' needs a 'step' column when a run has several rows")
        return table
    last = table.groupby("run", sort=False)["step"].transform("max")
    return table[table["step"] == last]


def prepare(table: pd.DataFrame, law: str | Law, *, select: str = "final", weights=None,
            n_convention: str | None = None) -> FitData:
    """Validate the tidy table for `law` and turn the selected rows into arrays.

    Raises ValueError naming the problem: missing columns, NaN/inf, non-positive values,
    too few points, a single model size.
    """
    law = get_law(law)
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    table = table.copy()
    n_conv, notes = _resolve_n_convention(table, law, n_convention)
    if weights is not None and not isinstance(weights, str):
        w_all = np.asarray(weights, dtype=np.float64)
        if w_all.shape != (len(table),):
            raise ValueError(f"weights must have one entry per table row ({len(table)}), got shape {w_all.shape}")
        table["__weight"] = w_all
        weights = "__weight"
    sources = _source_columns(law, table)
    needed = sorted({c for cols in sources.values() for c in cols} | {"loss"} | ({weights} if weights else set()))
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"law {law.name!r} needs table columns {needed}; missing {missing}")
    rows = select_rows(table, select)
    if len(rows) == 0:
        raise ValueError("the table has no rows")
    for c in needed:
        v = pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(v)):
            name = "weights" if c == "__weight" else f"column {c!r}"
            raise ValueError(f"{name} has NaN, inf or non-numeric values in {int((~np.isfinite(v)).sum())} rows")
        if c == "S2" or c == weights:
            label = "weights" if c == "__weight" else f"weights column {c!r}"
            if c == weights and (np.any(v < 0) or not v.sum() > 0):
                raise ValueError(f"{label} must be non-negative with a positive sum")
        elif np.any(v <= 0):
            raise ValueError(f"column {c!r} must be positive; {int((v <= 0).sum())} rows are zero or negative")
    cov = {}
    for c, cols in sources.items():
        if cols == ("N", "D"):
            cov[c] = rows["D"].to_numpy(np.float64) / rows["N"].to_numpy(np.float64)
        else:
            cov[c] = rows[c].to_numpy(np.float64)
    loss = rows["loss"].to_numpy(np.float64)
    w = rows[weights].to_numpy(np.float64) if weights else np.ones(len(rows))
    runs = rows["run"].astype(str).to_numpy() if "run" in rows.columns else np.array([f"row{i}" for i in rows.index])
    _, run_codes = np.unique(runs, return_inverse=True)
    if "N" in rows.columns and ("N" in law.covariates or "M" in law.covariates):
        if rows["N"].nunique() < 2:
            raise ValueError(f"law {law.name!r} needs several model sizes; column 'N' has a single value {rows['N'].iloc[0]:g}")
    flop_conv = table.attrs.get("flop_convention")
    if flop_conv is None and "flop_convention" in rows.columns:
        kinds = sorted(set(rows["flop_convention"].astype(str)) - {""})
        flop_conv = kinds[0] if len(kinds) == 1 else ("mixed: " + ", ".join(kinds) if kinds else None)
        if len(kinds) > 1 and "C" in law.covariates:
            notes.append(f"the runs count FLOPs under different conventions ({', '.join(kinds)}); C is not comparable across them")
    ranges = {c: [float(rows[c].min()), float(rows[c].max())] for c in ("N", "D", "C")
              if c in rows.columns and pd.api.types.is_numeric_dtype(rows[c])}
    return FitData(covariates=cov, loss=loss, weights=w, runs=runs, run_codes=run_codes,
                   n_convention=n_conv, flop_convention=flop_conv,
                   content_hash=_content_hash(runs, cov, loss, w), notes=tuple(notes), ranges=ranges)


def _resolve_n_convention(table: pd.DataFrame, law: Law, requested: str | None) -> tuple[str, list[str]]:
    """Which parameter count N means, setting table["N"] from `N_<convention>` when the table carries it.

    Precedence: the requested convention, else the law's own (Kaplan: non-embedding,
    Chinchilla: total) when the table has that count, else whatever the table says its N is.
    """
    conv = requested or law.n_convention
    col = f"N_{conv}"
    table_conv = table.attrs.get("n_convention")
    if col in table.columns:
        table["N"] = table[col]
        return conv, []
    if requested and table_conv and table_conv != requested:
        raise ValueError(f"n_convention={requested!r} requested, but the table's N counts {table_conv!r} "
                         f"parameters and it has no column {col!r}")
    if requested or not table_conv:
        return conv, []           # published tables: N is taken to be what was asked for
    note = ([] if table_conv == law.n_convention else
            [f"law {law.name!r} is defined on {law.n_convention} parameters, but the table's N counts {table_conv} parameters"])
    return table_conv, note


def _content_hash(runs: np.ndarray, cov: Mapping[str, np.ndarray], loss: np.ndarray, w: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update("\x1f".join(runs.tolist()).encode())
    for name in sorted(cov):
        h.update(name.encode())
        h.update(np.ascontiguousarray(cov[name], dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(loss, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(w, dtype="<f8").tobytes())
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------
# objective


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: r²/2 inside |r| <= delta, delta (|r| - delta/2) outside (as scipy.special.huber)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def objective(law: Law, theta_SxP: np.ndarray, data: FitData, delta: float,
              weights_Sxn: np.ndarray | None = None, need_grad: bool = True):
    """Sum of weighted Huber losses of log residuals for S parameter sets: (S,), and its gradient (S, P)."""
    logL_Sxn, J_SxnxP = law.log_predict_grad(theta_SxP, data.covariates, need_grad)
    r_Sxn = logL_Sxn - data.log_loss
    w = data.weights if weights_Sxn is None else weights_Sxn
    obj_S = (w * huber(r_Sxn, delta)).sum(axis=-1)
    if not need_grad:
        return obj_S, None
    psi_Sxn = w * np.clip(r_Sxn, -delta, delta)       # Huber'(r)
    return obj_S, (psi_Sxn[:, None, :] @ J_SxnxP)[:, 0, :]


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
    with _single_threaded_blas():
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=lo_hi, options=_LBFGS_OPTIONS)
    theta = theta0.copy()
    theta[free] = res.x
    return theta, res


def _single_threaded_blas():
    """Limit BLAS to one thread while L-BFGS-B runs.

    L-BFGS-B calls BLAS on vectors of a handful of entries; multithreaded OpenBLAS
    spin-waits its threads on every call, which on a busy machine made one polish 10-20x
    slower. threadpoolctl is the maintained way to set that limit at run time; without it
    the fit is still correct, only slower on oversubscribed machines.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


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
        seed: int = 0, select: str = "final", n_convention: str | None = None, level: float = 0.95,
        starts: np.ndarray | None = None) -> FitResult:
    """Fit `law` to the tidy table; return a FitResult with provenance (and bootstrap intervals if asked).

    table: tidy curve table (columns named by the law's covariates plus `loss`; `run` and `step`
        decide which rows are one run and which row is a run's final point).
    delta: Huber threshold on log residuals. weights: per-row weights (array or column name).
    fixed: natural-unit values of parameters held fixed (e.g. {"E": 1.7}).
    n_starts: how many of the best grid starts are polished with L-BFGS-B (default 8).
    bootstrap: number of bootstrap replicates over runs (0: none). level: interval level.
    select: "final" (each run's last eval point) or "all" (every eval point).
    n_convention: which parameter count N is ("total", "non_embedding"); default: the table's, else the law's.
    starts: custom start grid in theta space (G, P); default the law's grid.
    """
    law = get_law(law)
    if not (delta > 0 and np.isfinite(delta)):
        raise ValueError(f"delta must be a positive number, got {delta}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    data = prepare(table, law, select=select, weights=weights, n_convention=n_convention)
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

    warnings = list(data.notes) + _diagnose(law, theta_hat, free, data)
    if "S1" in law.covariates and select == "final":
        warnings.append(f"the {law.name} law describes whole loss curves; select='all' fits every eval point, "
                        "select='final' only each run's last one")
    if not res.success:
        warnings.append(f"optimizer did not converge: {res.message}")
    samples = None
    intervals: dict[str, tuple[float, float]] = {}
    boot_info: dict[str, Any] = {}
    if bootstrap:
        from analysis.uncertainty import bootstrap_runs
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
        objective=float(res.fun), converged=bool(res.success), message=str(res.message),
        residuals=residual_stats(law, theta_hat, data), warnings=warnings,
        settings={"loss": "huber", "delta": delta, "objective": "sum of weighted Huber(log L_hat - log L)",
                  "grid_starts": int(len(grid)), "polished_starts": int(len(best_starts)),
                  "optimizer": "scipy L-BFGS-B, exact gradient", "optimizer_options": dict(_LBFGS_OPTIONS),
                  "bootstrap": int(bootstrap), "bootstrap_unit": "run", **({"bootstrap_" + k: v for k, v in boot_info.items()}),
                  "seed": int(seed), "select": select, "fixed": dict(fixed or {}),
                  "weighted": weights is not None},
        convention={"N": data.n_convention, "flops": data.flop_convention},
        inputs={"runs": sorted(set(data.runs.tolist())), "n_runs": data.n_runs, "n_rows": data.n,
                "content_hash": data.content_hash, "ranges": dict(data.ranges or {})},
        n_points=data.n, param_names=law.param_names,
    )


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


def _diagnose(law: Law, theta: np.ndarray, free: np.ndarray, data: FitData) -> list[str]:
    warnings = []
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
    for c in ("N", "D"):
        if c in data.covariates and np.unique(data.covariates[c]).size < 3:
            warnings.append(f"fewer than 3 distinct {c} values ({np.unique(data.covariates[c]).size}); its exponent is poorly determined")
    return warnings


def fit_many(table: pd.DataFrame, laws: Sequence[str], **kwargs) -> dict[str, FitResult]:
    """Fit several laws to the same table (same settings)."""
    return {name: fit(table, name, **kwargs) for name in laws}
