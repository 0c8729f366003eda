"""The calibrated interval's pieces computed by hand: run scatter s0, growth rate k (and its fallback to 0),
the extrapolation distance of a planned run counted in the fitted runs' own FLOP convention, and the Student-t
quantile with the ladder's sizes less one degrees of freedom."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.calibrate import attach, extrapolation_error, growth_rate, run_scatter
from analysis.fitresult import ExtrapolationError
from analysis.fitting import fit
from analysis.laws import get_law

KAP = {"Nc": 3e9, "Dc": 2e7, "alpha_N": 0.09, "alpha_D": 0.12}
SIZES = np.array([6e3, 1.4e4, 2.5e4, 5.5e4])
BUDGETS = np.array([4.1e5, 8.2e5, 1.64e6])
NORMAL_MAD = 1.482602218505602      # 1 / Phi^-1(3/4): the MAD of a normal sample is 0.6745 sigma


def ladder(noise=0.004, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(SIZES, BUDGETS, indexing="ij"))
    loss = get_law("kaplan").predict(KAP, N=N, D=D) * np.exp(noise * rng.standard_normal(N.size))
    return pd.DataFrame({"run": [f"r{i}" for i in range(N.size)], "N": N, "D": D, "C": 6 * N * D, "step": 1,
                         "final": True, "loss": loss})


def t3_nll(k, x, e, s0):
    """The Student-t (3 degrees of freedom) negative log likelihood of errors e at log distances x, written out."""
    total = 0.0
    for xi, ei in zip(x, e):
        v = s0 ** 2 + (k * xi) ** 2
        total += 0.5 * math.log(v) + 2.0 * math.log(1 + ei ** 2 / (3 * v))
    return total


def test_run_scatter_is_the_normal_consistent_median_absolute_deviation():
    """Mutation calibrate_s0_not_normal_consistent: s0 = 1.4826 * median |r - median r|, by hand."""
    r = np.array([-0.02, -0.01, 0.0, 0.01, 0.5, np.nan])     # one misfit run (0.5) and a missing one
    # median 0; |r| = 0.02, 0.01, 0, 0.01, 0.5 -> median 0.01
    assert run_scatter(r) == pytest.approx(0.01 * NORMAL_MAD, rel=1e-12)
    assert run_scatter(np.array([np.nan])) == 0.0


def test_s0_of_a_fitted_ladder_is_the_mad_of_its_log_residuals_by_hand():
    """Mutation calibrate_s0_not_normal_consistent, through `extrapolation_error` on a fitted ladder."""
    table = ladder()
    r = fit(table, "kaplan", bootstrap=0, n_starts=1)
    err = extrapolation_error(table, r, n_starts=1)
    res = np.log(table["loss"].to_numpy()) - np.log(r.predict(N=table["N"].to_numpy(), D=table["D"].to_numpy()))
    assert err.s0 == pytest.approx(NORMAL_MAD * np.median(np.abs(res - np.median(res))), rel=1e-9)
    # 12 runs, 4 backtest cutoffs that keep at least 6 runs: every later run forecast from each cutoff
    assert err.n_forecasts == len(err.per_run) > 0 and (err.per_run["x"] > 0).all()


def test_growth_rate_maximizes_the_student_t_likelihood_by_hand():
    """Mutation calibrate_k_normal_likelihood: k is the argmax over a fine grid of the t(3) likelihood written out
    here; one wild backtest (0.6 at x = 3) does not set it, as it would under a normal likelihood."""
    x = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0])
    e = np.array([0.01, -0.02, 0.03, -0.04, 0.05, -0.06, 0.6])
    s0 = 0.005
    k = growth_rate(x, e, s0)
    grid = np.geomspace(1e-4, 1.0, 4001)      # steps of 0.23%
    best = grid[int(np.argmin([t3_nll(g, x, e, s0) for g in grid]))]
    assert k == pytest.approx(best, rel=5e-3)
    # under a normal likelihood the wild point would set k: sqrt(mean(e^2 / x^2)) - s0 terms, about 0.08
    normal_k = math.sqrt(max(np.mean((e ** 2 - s0 ** 2) / x ** 2), 0.0))
    assert normal_k > 0.07 and k < 0.6 * normal_k


def test_growth_rate_falls_back_to_zero_when_backtests_are_no_worse_than_the_scatter():
    """Mutation calibrate_no_k_zero_fallback: errors within the run scatter give k = 0 exactly (the likelihood is
    flat toward 0: the bounded search would stop at its lower end, 1e-8, instead)."""
    x = np.array([0.5, 1.0, 1.5, 2.0, 2.5])
    e = np.array([0.001, -0.002, 0.0015, -0.001, 0.002])
    s0 = 0.01
    assert all(t3_nll(0.0, x, e, s0) <= t3_nll(k, x, e, s0) for k in np.geomspace(1e-8, 1.0, 50))
    assert growth_rate(x, e, s0) == 0.0
    assert growth_rate(np.array([]), np.array([]), s0) == 0.0


def test_a_planned_runs_distance_counts_flops_as_the_fitted_runs_did():
    """Mutation calibrate_distance_ignores_flop_convention: the fitted runs counted FLOPs by `exact`; a planned
    run's extrapolation C / C_fit counts its FLOPs the same way (not 6N), and the interval at each eval point
    is point * exp(-/+ z sigma) with sigma^2 = boot^2 + s0^2 + (k ln(C / C_fit))^2, all by hand."""
    from analysis.predict import forecast
    from models.counting import flops_per_token, param_counts
    from train.config import RunConfig

    table = ladder()
    r = fit(table, "kaplan", bootstrap=50, n_starts=1, seed=0)
    planned = RunConfig().with_overrides({"model.width": 96, "model.depth": 2, "model.context": 64,
                                          "train.batch_tokens": 4096, "train.tokens": 4096 * 400,
                                          "eval.points": 8}).resolved()
    exact, six_n = (flops_per_token(planned.model, c) for c in ("exact", "6N"))
    assert abs(exact / six_n - 1) > 0.1            # the two conventions disagree enough to tell apart
    tokens = planned.train.tokens
    c_fit_runs = exact * tokens / 40.0             # the planned run ends 40x beyond the fitted runs, counted exactly
    error = ExtrapolationError(law="kaplan", s0=0.01, k=0.03, n_forecasts=9, max_extrapolation=3.0,
                               C_fit=float((6 * table["N"] * table["D"]).max()), C_convention="6ND",
                               C_fit_runs=c_fit_runs, runs_flop_convention="exact")
    result = dataclasses.replace(r, convention={**r.convention, "flops": "exact"}, extrapolation=error)
    fc = forecast(result, planned)
    assert fc.interval == "calibrated"
    assert fc.extrapolation[-1] == pytest.approx(40.0, rel=1e-12)
    np.testing.assert_allclose(fc.extrapolation, np.maximum(exact * fc.tokens / c_fit_runs, 1.0), rtol=1e-12)
    # sigma and the interval by hand at the final point
    N = float(param_counts(planned.model)["non_embedding"])
    logs = np.log(r.predict_samples(N=np.array([N]), D=np.array([float(tokens)]))[:, 0])
    boot = (np.percentile(logs, 84.135) - np.percentile(logs, 15.865)) / 2
    sigma = math.sqrt(boot ** 2 + 0.01 ** 2 + (0.03 * math.log(40.0)) ** 2)
    assert fc.sigma[-1] == pytest.approx(sigma, rel=1e-9)
    z = 1.6448536269514722
    assert fc.lower[-1] == pytest.approx(fc.loss[-1] * math.exp(-z * sigma), rel=1e-9)
    assert fc.upper[-1] == pytest.approx(fc.loss[-1] * math.exp(z * sigma), rel=1e-9)


def test_attach_stores_the_fitted_runs_compute_in_their_own_flop_convention():
    """Mutation calibrate_distance_ignores_flop_convention (the stored side): C_fit_runs is the largest C the runs
    recorded and runs_flop_convention the fit's FLOP convention; C_fit is the largest 6ND."""
    table = ladder()
    table["C"] = 7.5 * table["N"] * table["D"]     # the runs' own FLOP count, not 6ND
    r = fit(table, "kaplan", bootstrap=0, n_starts=1)
    r = dataclasses.replace(r, convention={**r.convention, "flops": "exact"})
    stored = attach(r, ExtrapolationError(law="kaplan", s0=0.01, k=0.0, n_forecasts=1, max_extrapolation=2.0),
                    table).extrapolation
    assert stored.C_fit == pytest.approx(6 * SIZES[-1] * BUDGETS[-1])
    assert stored.C_fit_runs == pytest.approx(7.5 * SIZES[-1] * BUDGETS[-1])
    assert (stored.C_convention, stored.runs_flop_convention) == ("6ND", "exact")


def test_the_interval_takes_student_t_with_the_ladders_sizes_less_one_degrees_of_freedom(tmp_path):
    """A four-size ladder's measured error carries dof 3; its 90% interval is point * exp(-/+ q sigma) with q the
    t(3) quantile 2.3534 (1.43x the normal 1.6449); a ladder of 40 sizes is near normal; the dof travels in the
    fit JSON, and a fit file calibrated before the dof existed reads back with the normal quantile."""
    from analysis.calibrate import calibrated_interval
    from analysis.fitresult import FitResult

    table = ladder()
    r = fit(table, "kaplan", bootstrap=50, n_starts=1, seed=0)
    err = extrapolation_error(table, r, n_starts=1)
    assert err.dof == 3.0                                   # SIZES has four sizes
    at = {"N": np.array([2.2e5]), "D": np.array([5.1e6])}
    point, lo, hi, sigma = calibrated_interval(r, err, extrapolation=12.0, level=0.9, **at)
    assert math.log(hi[0] / point[0]) == pytest.approx(2.353363434801823 * sigma[0], rel=1e-9)
    assert math.log(point[0] / lo[0]) == pytest.approx(2.353363434801823 * sigma[0], rel=1e-9)
    normal = dataclasses.replace(err, dof=None)
    _, lo_n, hi_n, sigma_n = calibrated_interval(r, normal, extrapolation=12.0, level=0.9, **at)
    assert sigma_n[0] == pytest.approx(sigma[0], rel=1e-12)  # the same scale, another quantile
    assert math.log(hi_n[0] / point[0]) == pytest.approx(1.6448536269514722 * sigma[0], rel=1e-9)

    many = pd.concat([ladder(seed=s).assign(N=lambda d, s=s: d["N"] * (1 + 0.01 * s), run=lambda d, s=s: d["run"] + f"s{s}")
                      for s in range(10)], ignore_index=True)
    err_many = extrapolation_error(many, fit(many, "kaplan", bootstrap=0, n_starts=1), n_starts=1)
    assert err_many.dof == 39.0
    assert err_many.quantile(0.9) < 1.05 * 1.6448536269514722

    path = tmp_path / "fit.json"
    dataclasses.replace(r, extrapolation=err).to_json(path)
    assert FitResult.from_json(path).extrapolation.dof == 3.0
    raw = json.loads(path.read_text())
    del raw["extrapolation"]["dof"]
    path.write_text(json.dumps(raw))
    assert FitResult.from_json(path).extrapolation.quantile(0.9) == pytest.approx(1.6448536269514722)


def test_a_ladder_of_two_inits_per_size_takes_the_normal_quantile(tmp_path):
    """Every run trained from two seeds (sweep key `replicates: 2`): dof None, the normal quantile 1.6449 at 90%,
    and the message says why; one run with a single init keeps t(3), as do runs of one size at other budgets
    and other seeds, and a table without a seed column;
    `inits` travels in the fit JSON and an older file reads back as one init."""
    from analysis.calibrate import calibrated_interval, fewest_inits, interval_dof
    from analysis.fitresult import FitResult

    two = pd.concat([ladder(seed=s).assign(seed=s, run=lambda d, s=s: d["run"] + f"s{s}") for s in (0, 1)],
                    ignore_index=True)
    assert fewest_inits(two) == 2 and interval_dof(two) is None
    r = fit(two, "kaplan", bootstrap=50, n_starts=1, seed=0)
    err = extrapolation_error(two, r, n_starts=1)
    assert (err.dof, err.inits) == (None, 2)
    assert err.quantile_name() == "normal (every fitted run has 2 or more inits)"
    at = {"N": np.array([2.2e5]), "D": np.array([5.1e6])}
    point, lo, hi, sigma = calibrated_interval(r, err, extrapolation=12.0, level=0.9, **at)
    assert math.log(hi[0] / point[0]) == pytest.approx(1.6448536269514722 * sigma[0], rel=1e-9)

    # the largest size's second init is missing at one budget: that run rests on one init, so the ladder keeps t(3)
    short = two[~((two["N"] == SIZES[-1]) & (two["D"] == BUDGETS[-1]) & (two["seed"] == 1))]
    assert fewest_inits(short) == 1 and interval_dof(short) == 3.0
    # one init, but each budget of a size run from its own seed: those are not inits of one run
    own = ladder().assign(seed=lambda d: np.arange(len(d)))
    assert fewest_inits(own) == 1 and interval_dof(own) == 3.0
    assert extrapolation_error(short, fit(short, "kaplan", bootstrap=0, n_starts=1), n_starts=1).quantile(0.9) == \
        pytest.approx(2.353363434801823)
    assert interval_dof(two.drop(columns="seed")) == 3.0     # a published table has no seeds: t(sizes - 1)

    path = tmp_path / "fit.json"
    dataclasses.replace(r, extrapolation=err).to_json(path)
    back = FitResult.from_json(path).extrapolation
    assert (back.dof, back.inits, back.quantile(0.9)) == (None, 2, pytest.approx(1.6448536269514722))
    raw = json.loads(path.read_text())
    del raw["extrapolation"]["inits"]
    path.write_text(json.dumps(raw))
    assert FitResult.from_json(path).extrapolation.inits == 1
