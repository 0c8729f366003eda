"""Forecast intervals that account for the law being wrong, calibrated on the ladder itself.

A bootstrap over runs (`analysis.uncertainty`) says how much the fitted
parameters move when the runs are resampled. It says nothing about how far the
law's *form* is from the truth, and that error grows with the distance of the
extrapolation: a ladder of twelve runs gives a tight parameter band around a
forecast that is off by more than the band (benchmarks/README.md).

The ladder can measure that error on itself. `extrapolation_error` runs the
rollout backtest of `analysis.backtest` (fit on the runs up to a compute
cutoff, forecast every larger run) and models the log error of those forecasts
as a variable whose spread grows with the log extrapolation factor
x = ln(C_forecast / C_cutoff):

    ln(actual / predicted) ~ s(x) t,   s(x)^2 = s0^2 + (k x)^2

s0 is the scatter of single runs about the full-ladder fit (`run_scatter`: a robust
scale of its log residuals, so the few runs a law misfits, such as the lowest
tokens-per-parameter points of a published grid, do not set it), and k is the
growth rate the backtests support (`growth_rate`: maximum likelihood under
Student-t errors, so one wild backtest does not set it).
Each backtest keeps at least half the ladder, so a fit on barely more runs than
the law has parameters does not set the width. Both choices were measured on the
published Chinchilla points and on synthetic ladders (benchmarks/README.md,
"Calibrated intervals"). With the RMS of the residuals as the scatter, a few
misfit runs made the scatter look large, the backtests looked like scatter, k came
out 0, and forecasts 32x and more beyond the fitted runs were covered 43-74% of
the time (published points, cutoff 3e19); with a robust scatter those backtests
set k, and the same forecasts are covered 97-100%, while intervals near the data
narrow (median half-width 4.7% -> 2.9%, published points).
`calibrated_interval` then widens the forecast of a new run at extrapolation
x_t = ln(C_t / C_ladder_max):

    sigma^2 = sigma_boot^2 + s0^2 + (k x_t)^2 [+ sigma_laws^2],   interval = point * exp(-/+ q sigma)

with sigma_boot the spread of the log forecast over the bootstrap parameter sets
(half its central 68% range) and q the level's quantile of Student-t with the fitted runs'
model sizes less one degrees of freedom (`interval_dof`): with the normal quantile, 10x forecasts
from ladders of four sizes, one init each, were covered 71% of the time at 90%. A ladder whose every
size was trained from two or more inits takes the normal quantile: its sigma alone was measured to
cover about 90%. For an ensemble of laws
(`analysis.laws`, "Ensembles of laws") s0 and k are measured on the ensemble's own fit and
backtests, and sigma_laws is the weighted spread of its laws' forecasts about their mean, so the
interval widens where the laws part ways. The backtest fits use
fewer runs than the full fit and extrapolate from a smaller base, so k can
overstate the full fit's error (on the published points the interval errs wide);
on ladders of few sizes the backtests extrapolate in tokens more than in size
and understate it, which the t quantile answers.
This is the "extrapolation error grows with distance" model that
benchmarks/forecast.py checks for coverage; it assumes the error keeps the
rate measured inside the ladder, which nothing guarantees beyond it.
Over 22 two-init CPU ladders of two corpora (benchmarks/recipe/README.md, section (29)) sigma's
average matched the misses', so about 90% were covered, but within one corpus neither sigma nor a
backtest that holds out the largest size (or its longest runs as well) ranked one ladder's misses
against another's: read the interval as a bound that holds about 90% of the time, wide where the
ladder's corpus is hard to forecast (real text against the synthetic language), not as a measure of
one ladder's own accuracy.

`attach` stores the measured error in a fit (`FitResult.extrapolation`, which travels
in the fit JSON with the compute scale of the fitted runs; `with_extrapolation_error`
measures and stores it), and `stored_interval` turns it into the calibrated interval
of a later forecast (`analysis.predict.forecast`).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.stats import median_abs_deviation

from analysis.backtest import log_residuals, rollout
from analysis.fitresult import ExtrapolationError
from analysis.laws import member_spread, with_derived
from analysis.load import select_rows, use_n_convention


def attach(result, error: ExtrapolationError, table: pd.DataFrame, *, select: str | None = None):
    """The fit with `error` stored in it (`FitResult.extrapolation`, so it travels in the fit JSON), with
    the compute scale of the fitted rows: `C_fit`, the largest C of the fitted rows for a law of C,
    else the largest 6ND, so a later forecast knows how far it extrapolates."""
    rows = select_rows(use_n_convention(table, result.law_obj, result.convention.get("N"))[0],
                       select or result.settings.get("select") or result.law_obj.fitted_on)
    if "C" in result.law_obj.covariates:
        c_fit, conv = float(rows["C"].max()), "C"
    else:
        c_fit, conv = float((6.0 * rows["N"] * rows["D"]).max()), "6ND"
    runs_fit = {}
    flops = result.convention.get("flops")
    if "C" in rows.columns and flops and not str(flops).startswith("mixed"):
        # the runs' own FLOP count, in which the backtests measured their distances: a planned
        # run's config gives its C in the same convention (`testbed predict --run`)
        runs_fit = dict(C_fit_runs=float(rows["C"].max()), runs_flop_convention=str(flops))
    stored = dataclasses.replace(error, C_fit=c_fit, C_convention=conv, **runs_fit)
    return dataclasses.replace(result, extrapolation=stored)


def with_extrapolation_error(result, table: pd.DataFrame, *, select: str | None = None, **fit_kwargs):
    """`result` with its extrapolation error measured on `table` (`extrapolation_error`, the same
    rows and `select` as the fit) and stored in it (`attach`): what `testbed fit --calibrate`, the
    demo and the report use. Raises ValueError when the table is too small for a backtest."""
    return attach(result, extrapolation_error(table, result, select=select, **fit_kwargs), table, select=select)


def calibrated(result, table: pd.DataFrame, **fit_kwargs):
    """`with_extrapolation_error`, or, when the runs are too few for a backtest, `result` with a warning
    saying so: its forecasts then carry the bootstrap band only. What `testbed fit --calibrate`, the
    report and the demo call."""
    try:
        return with_extrapolation_error(result, table, **fit_kwargs)
    except ValueError as e:
        why = str(e).splitlines()[0]
        return dataclasses.replace(result, warnings=[*result.warnings, (
            f"the extrapolation error could not be measured ({why}); forecasts give the bootstrap band, which "
            "ignores the law's own error")])


def extrapolation_error(table: pd.DataFrame, result, *, n_cutoffs: int = 4, min_train_runs: int | None = None,
                        select: str | None = None, **fit_kwargs) -> ExtrapolationError:
    """Measure s0 (on `result`, the full-ladder fit) and k (on rollout backtests of the same law).

    Each backtest cutoff keeps at least `min_train_runs` runs (default: half the ladder, and
    one more than the law's parameters); extra keyword arguments go to `analysis.fitting.fit`.

    An ensemble of laws is measured as one law: its own fit and backtests (its weights stay fixed
    at every cutoff). The weights are 1 / each law's backtest error, not fitted to the ensemble's,
    so its backtests flatter it little. Its laws' own errors averaged in variance were the
    alternative: on the dev ladders they covered every target at 3.8x the median miss, this
    interval 19 of 24 at 2.9x (benchmarks/recipe/README.md, section (10)); both err, one wide and
    this one narrow (34 of 48 held-out 10x targets covered).

    Raises ValueError when the ladder is too small for a single backtest (the
    message says how many runs and budgets it has).
    """
    law = result.law
    select = select or result.settings.get("select") or result.law_obj.fitted_on
    fit_kwargs = {"n_convention": result.convention.get("N"), **fit_kwargs}
    s0 = run_scatter(log_residuals(result, table, select))
    if min_train_runs is None:
        # a backtest fitted on barely more runs than the law has parameters measures that fit's
        # instability, not the law's error: every cutoff keeps at least half the ladder
        n_runs = int(table["run"].nunique()) if "run" in table.columns else len(table)
        min_train_runs = max(result.law_obj.params_per_fit + 1, -(-n_runs // 2))
    bt = rollout(table, law, n_cutoffs=n_cutoffs, min_train_runs=min_train_runs, bootstrap=0, select=select,
                 **fit_kwargs)
    pr = bt.per_run
    x = np.log(pr["extrapolation"].to_numpy(float))
    e = np.log(pr["actual"].to_numpy(float) / pr["predicted"].to_numpy(float))
    ok = np.isfinite(e) & (x > 0)
    x, e = x[ok], e[ok]
    k = growth_rate(x, e, s0)
    per_run = pd.DataFrame({"run": pr["run"].to_numpy()[ok], "cutoff": pr["cutoff"].to_numpy()[ok], "x": x, "e": e})
    fitted = select_rows(table, select)
    return ExtrapolationError(law=law, s0=s0, k=k, n_forecasts=int(len(x)),
                              max_extrapolation=float(np.exp(x.max())) if len(x) else 1.0, per_run=per_run,
                              dof=interval_dof(fitted), inits=fewest_inits(fitted))


def fewest_inits(rows: pd.DataFrame) -> int:
    """The fewest inits any fitted run has: the distinct `seed` values among the runs of its model size
    and final tokens (the same run but for its seed, as sweep key `replicates` trains them). 1 for a
    table without run, N or seed columns (published points)."""
    if not {"seed", "N", "run", "D"} <= set(rows.columns) or rows.empty:
        return 1
    runs = rows.groupby("run").agg(N=("N", "first"), D=("D", "max"), seed=("seed", "first"))
    return int(max(1, runs.groupby(["N", "D"])["seed"].nunique().min()))


def interval_dof(rows: pd.DataFrame) -> float | None:
    """Degrees of freedom of the calibrated interval's Student-t quantile: the fitted rows' model sizes
    less one (their runs, for a table without N), at least one; None (the normal quantile) when every
    fitted run was trained from two or more inits (`fewest_inits`; sweep key `replicates`).

    What the interval most depends on, the law's error beyond the largest model, rests on how many
    sizes the ladder has, not on its rows or backtest forecasts (the runs of one size share its
    error, and so do the forecasts of one backtest fit), and a ladder of few sizes cannot probe it:
    its backtests extrapolate in tokens more than in size. Measured (benchmarks/recipe/README.md,
    section (11)): on CPU ladders of four sizes, one init each, the normal quantile covered 34 of 48
    held-out targets 10x out at 90%; t with three degrees of freedom (1.43x the normal quantile at 90%)
    covered 22 of 24 on the seeds it was chosen on and 20 of 24 on the others. The cost: where the law
    is exactly right, a four-size ladder's 90% interval covers about 98% (tests/test_calibrate.py).
    A ladder of many sizes, such as the published Chinchilla grid, keeps an interval near the normal one.

    A one-init ladder's forecasts share one draw of init noise that none of sigma's parts measures;
    the t quantile stood for it. Trained from two inits per run, the same ladders' forecasts miss
    by about sigma: over 62 refits of held-out targets (section (27)) the rms of ln(actual /
    predicted) / sigma was 1.01 and the 90th percentile of its size 1.60, against the normal's 1.645,
    while t(3) covered 60 of 62 at 3.7x the median miss. Those ladders take the normal quantile;
    section (28) scores the rule on seeds trained after it was fixed.
    """
    if fewest_inits(rows) >= 2:
        return None
    col = "N" if "N" in rows.columns else ("run" if "run" in rows.columns else None)
    n = int(rows[col].nunique()) if col else len(rows)
    return float(max(1, n - 1))


def run_scatter(residuals: np.ndarray) -> float:
    """s0: the scatter of single runs about the fit, a robust scale of its log residuals.

    The normal-consistent median absolute deviation (`scipy.stats.median_abs_deviation`): the
    residuals of a law fitted over a wide range of tokens per parameter are a core of run-to-run
    scatter plus a minority of runs the law misfits (the lowest ratios, most of all), and their RMS
    measures the misfits, widening every interval by them (benchmarks/README.md, "Calibrated
    intervals"). The misfits still enter the interval through k when they recur at a distance.
    """
    r = np.asarray(residuals, float)
    return float(median_abs_deviation(r[np.isfinite(r)], scale="normal")) if np.isfinite(r).any() else 0.0


def growth_rate(x: np.ndarray, e: np.ndarray, s0: float) -> float:
    """k: how fast the log error's std grows with x = ln(extrapolation), from backtest errors e at x.

    Model: e_j = s_j t_j with s_j^2 = s0^2 + k^2 x_j^2 and t_j Student-t with 3 degrees of freedom;
    k maximizes that likelihood. Under a normal likelihood one wild backtest (a fit on few runs
    that went astray) sets k alone; the t's heavier tails let it count as an outlier. A forecast at
    a tiny extrapolation (x near 0) that misses by the run scatter says little about k and gets
    little weight. k = 0 when the backtests are no worse than the scatter.
    """
    ok = np.isfinite(e) & (x > 0)
    x, e = x[ok], e[ok]
    if len(x) == 0:
        return 0.0
    s0 = max(s0, 1e-6)
    nu = 3.0

    def nll(k):
        v = s0 ** 2 + k ** 2 * x ** 2
        return float(np.sum(0.5 * np.log(v) + (nu + 1) / 2 * np.log1p(e ** 2 / (nu * v))))

    best = minimize_scalar(lambda lk: nll(np.exp(lk)), bounds=(np.log(1e-8), np.log(10.0)), method="bounded")
    # the likelihood is flat as k -> 0 when the backtests are no worse than the scatter
    return float(np.exp(best.x)) if best.fun < nll(0.0) - 1e-9 else 0.0


PARTS = ("bootstrap", "scatter", "extrapolation", "between_laws")


def interval_parts(result, error: ExtrapolationError, *, extrapolation, **covariates) -> dict[str, np.ndarray]:
    """The calibrated interval's sigma in its parts, each a std of the log forecast (`PARTS`):

    bootstrap     the spread over the bootstrap parameter sets (half their central 68% range; 0 without samples)
    scatter       s0, the run scatter about the full-ladder fit
    extrapolation k * ln(C / C_fit), the error growth the ladder's backtests measured
    between_laws  an ensemble's laws apart (`analysis.laws.member_spread`; 0 for one law)

    sigma is their root sum of squares. What dominates says why an interval is wide: parameters the
    runs pin down loosely, noisy runs, a law that drifts with distance, or laws that disagree.
    """
    return _parts(result, error, extrapolation, covariates,
                  np.atleast_1d(np.asarray(result.predict(**covariates), float)))


def _parts(result, error, extrapolation, covariates, point):
    """`interval_parts` at covariates whose point forecast is `point` (computed by the caller)."""
    if result.samples is not None and len(result.samples):
        logs = np.log(np.maximum(np.asarray(result.predict_samples(**covariates), float), 1e-300))
        # half the central 68% range: the std for a normal spread, not inflated by a few refits that went wild
        q16, q84 = np.percentile(logs, [15.865, 84.135], axis=0)
        boot = (q84 - q16) / 2
    else:
        boot = np.zeros_like(point)
    x = np.log(np.maximum(np.asarray(extrapolation, dtype=float), 1.0))
    shape = np.broadcast(point, x).shape
    return {"bootstrap": np.broadcast_to(boot, shape), "scatter": np.full(shape, float(error.s0)),
            "extrapolation": np.broadcast_to(error.k * x, shape),
            "between_laws": np.broadcast_to(member_spread(result.law_obj, result.params, **covariates), shape)}


def calibrated_interval(result, error: ExtrapolationError, *, extrapolation, level: float = 0.9,
                        **covariates) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(point, lower, upper, sigma) of the loss at `covariates`, `extrapolation` = C / C_ladder_max.

    sigma is the total std of the log forecast: bootstrap parameter spread (zero
    when the fit has no samples), run scatter and extrapolation error combined, and
    for an ensemble the spread of its laws' forecasts about their mean
    (`interval_parts` gives each).
    """
    return _calibrated(result, error, extrapolation, level, covariates)[:4]


def _calibrated(result, error, extrapolation, level, covariates):
    """(point, lower, upper, sigma, parts): `calibrated_interval` with sigma's parts."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if error.law != result.law:
        raise ValueError(f"the extrapolation error was measured for law {error.law!r}, the fit is {result.law!r}")
    point = np.atleast_1d(np.asarray(result.predict(**covariates), float))
    parts = _parts(result, error, extrapolation, covariates, point)
    sigma = np.sqrt(sum(v ** 2 for v in parts.values()))
    q = error.quantile(level)      # Student-t with `error.dof` degrees of freedom, or normal (`interval_dof`)
    return point, point * np.exp(-q * sigma), point * np.exp(q * sigma), sigma, parts


class StoredInterval(NamedTuple):
    lower: np.ndarray
    upper: np.ndarray
    sigma: np.ndarray
    extrapolation: np.ndarray           # C / C_fit of each point
    parts: dict[str, np.ndarray]        # sigma's parts (`interval_parts`)


def stored_interval(result, *, level: float = 0.9, model=None, tokens=None, **covariates):
    """The calibrated interval from the error stored in the fit (`attach`), or None without one.

    The distance of each point is C / C_fit: for a planned run (`model`, a ModelConfig, and the
    `tokens` seen at each point) C counts FLOPs as the fitted runs did; else C from the
    covariates for a law of C (a law of C asked at N and D gets C = 6ND), or C = 6ND.
    Returns a StoredInterval (lower, upper, sigma, extrapolation, parts).
    """
    from models.counting import CONVENTIONS, flops_per_token   # torch-free

    error = result.extrapolation
    if error is None:
        return None
    cov = with_derived(covariates, ("C",), 6.0) if error.C_convention == "C" else covariates
    if model is not None and error.runs_flop_convention in CONVENTIONS:
        c, c_fit = flops_per_token(model, error.runs_flop_convention) * np.asarray(tokens, float), error.C_fit_runs
    elif error.C_convention == "C" and "C" in cov:
        c, c_fit = np.asarray(cov["C"], float), error.C_fit
    elif error.C_convention == "6ND" and "N" in covariates:
        d = covariates["D"] if "D" in covariates else tokens
        c, c_fit = 6.0 * np.asarray(covariates["N"], float) * np.asarray(d, float), error.C_fit
    else:
        return None
    ext = np.maximum(np.atleast_1d(c) / c_fit, 1.0)
    _, lo, hi, sigma, parts = _calibrated(result, error, ext, level, cov)
    return StoredInterval(lo, hi, sigma, ext, parts)


def calibrated_backtest(table: pd.DataFrame, law: str, *, cutoff: float | None = None, level: float = 0.9,
                        bootstrap: int = 200, seed: int = 0, select: str | None = None,
                        n_convention: str | None = None, **fit_kwargs):
    """`analysis.backtest.backtest` with the calibrated interval scored beside the bootstrap band.

    The fit on the runs up to the cutoff measures its own extrapolation error on those runs
    (`calibrated`, as `testbed fit --calibrate` does), and each held-out run's calibrated
    interval is scored: per_run gains `cal_lower`, `cal_upper`, `covered_calibrated`; the
    summary gains `coverage_calibrated` and the mean relative half-widths `width_calibrated`,
    `width_bootstrap` and `width_predictive` ((upper - lower) / 2 / predicted), plus the
    measured `s0` and `k` (NaN where the training runs were too few to measure them).
    """
    from analysis.backtest import backtest, covariates_for, run_compute

    res = backtest(table, law, cutoff=cutoff, level=level, bootstrap=bootstrap, seed=seed, select=select,
                   n_convention=n_convention, **fit_kwargs)
    fitted = res.fits[0]
    table = use_n_convention(table, fitted.law_obj, fitted.convention.get("N"))[0]
    compute = run_compute(table)
    train = table[table["run"].isin(compute.index[compute <= res.cutoffs[0]])]
    cal = calibrated(fitted, train, n_convention=fitted.convention.get("N"), **fit_kwargs)
    pr = res.per_run.copy()
    held = table[table["run"].isin(pr["run"])]
    finals = held.loc[held.groupby("run")["C"].idxmax()].set_index("run").loc[pr["run"]]
    cov = {**covariates_for(finals, law), "N": finals["N"].to_numpy(float)}
    got = stored_interval(cal, level=level, tokens=finals["D"].to_numpy(float), **cov)
    nan = np.full(len(pr), np.nan)
    pr["cal_lower"], pr["cal_upper"] = (got[0], got[1]) if got is not None else (nan, nan)
    inside = (pr["cal_lower"] <= pr["actual"]) & (pr["actual"] <= pr["cal_upper"])
    pr["covered_calibrated"] = np.where(pr["cal_lower"].isna(), np.nan, inside.astype(float))

    def width(lo, hi):
        return float(((pr[hi] - pr[lo]) / 2 / pr["predicted"]).mean())

    err = cal.extrapolation
    summary = {**res.summary, "coverage_calibrated": float(pr["covered_calibrated"].mean()),
               "width_calibrated": width("cal_lower", "cal_upper"), "width_bootstrap": width("lower", "upper"),
               "width_predictive": width("pred_lower", "pred_upper"),
               "s0": err.s0 if err else float("nan"), "k": err.k if err else float("nan")}
    return dataclasses.replace(res, per_run=pr, summary=summary, fits=(cal,))
