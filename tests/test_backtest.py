"""Backtests on synthetic sweeps drawn from a known Chinchilla law."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.backtest import backtest, covariates_for, default_cutoff, leaderboard, rollout, run_compute
from analysis.load import load_runs
from tests.fake_runs import TRUE, chinchilla_loss, write_run, write_sweep

FAST = {"n_starts": 1}  # one polished start: the synthetic data are smooth


@pytest.fixture(scope="module")
def sweep_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("bt") / "sweep"
    write_sweep(root, sizes=(1e5, 3e5, 1e6, 3e6, 1e7), token_mults=(5, 20, 80), noise=0.003)
    return load_runs(root)


def test_leave_largest_out_predicts_held_out_runs(sweep_table):
    res = backtest(sweep_table, "chinchilla", bootstrap=64, level=0.9, **FAST)
    compute = run_compute(sweep_table)
    cut = res.cutoffs[0]
    # the held-out runs are exactly those above the cutoff, and there are some of them
    assert set(res.per_run["run"]) == set(compute.index[compute > cut]) and len(res.per_run) >= 3
    assert res.summary["n_train_runs"] == int((compute <= cut).sum())
    assert (res.per_run["extrapolation"] > 1).all()
    # data from the law itself with 0.3% noise: forecasts far beyond the fitted compute stay within 3%
    assert res.summary["max_abs_rel_err"] < 0.03
    assert res.summary["mean_are_curve"] < 0.03
    # the true loss of the held-out runs is what `actual` holds (final eval, noise aside)
    truth = chinchilla_loss(res.per_run["N"], res.per_run["D"])
    assert np.allclose(res.per_run["actual"], truth, rtol=0.015)


def test_coverage_is_the_hand_count_of_actual_inside_the_interval(sweep_table):
    res = backtest(sweep_table, "chinchilla", bootstrap=64, level=0.8, **FAST)
    fit = res.fits[0]
    held = sweep_table[sweep_table["run"].isin(res.per_run["run"]) & sweep_table["final"]]
    held = held.set_index("run").loc[res.per_run["run"]]
    point, lo, hi = fit.predict_interval(level=0.8, N=held["N"].to_numpy(), D=held["D"].to_numpy())
    inside = [int(a >= l and a <= h) for a, l, h in zip(held["loss"], lo, hi)]
    assert res.per_run["covered"].tolist() == inside
    assert res.summary["coverage"] == pytest.approx(sum(inside) / len(inside))
    assert np.allclose(res.per_run["predicted"], point)
    assert (res.per_run["lower"] <= res.per_run["predicted"]).all()
    assert (res.per_run["predicted"] <= res.per_run["upper"]).all()
    hand = [int(lo <= a <= hi) for a, lo, hi in zip(res.per_run["actual"], res.per_run["pred_lower"],
                                                      res.per_run["pred_upper"])]
    assert res.summary["coverage_predictive"] == pytest.approx(np.mean(hand))


def test_curve_are_is_mean_relative_error_over_eval_points(sweep_table):
    res = backtest(sweep_table, "chinchilla", bootstrap=0, **FAST)
    run = res.per_run["run"].iloc[-1]
    rows = sweep_table[sweep_table["run"] == run]
    # only the eval points from the fewest tokens fitted on (a final-loss law says nothing before)
    d_min = sweep_table[sweep_table["final"] & (sweep_table["C"] <= res.cutoffs[0])]["D"].min()
    assert res.fits[0].inputs["ranges"]["D"][0] == d_min
    assert (rows["D"] < d_min).any() and (rows["D"] >= d_min).any()
    rows = rows[rows["D"] >= d_min]
    pred = res.fits[0].predict(N=rows["N"].to_numpy(), D=rows["D"].to_numpy())
    assert res.per_run["are_curve"].iloc[-1] == pytest.approx(np.mean(np.abs(pred - rows["loss"]) / rows["loss"]))
    # without bootstrap there is no interval, so no coverage
    assert res.per_run["lower"].isna().all() and np.isnan(res.summary["coverage"])


def test_rollout_cutoffs_grow_and_each_holds_out_everything_larger(sweep_table):
    res = rollout(sweep_table, "chinchilla", n_cutoffs=2, bootstrap=0, **FAST)
    assert len(res.cutoffs) == 2 and res.cutoffs[0] < res.cutoffs[1]
    compute = run_compute(sweep_table)
    for cut in res.cutoffs:
        held = res.per_run.loc[res.per_run["cutoff"] == cut, "run"]
        assert set(held) == set(compute.index[compute > cut])
        assert (compute <= cut).sum() >= 6  # chinchilla has 5 parameters
    last = res.per_run[res.per_run["cutoff"] == res.cutoffs[-1]]
    assert last["rel_err"].abs().max() < 0.03
    assert res.summary["max_extrapolation"] == pytest.approx(compute.max() / res.cutoffs[0])


def test_leaderboard_ranks_the_true_law_above_a_misspecified_one(sweep_table):
    board = leaderboard(sweep_table, ["compute", "chinchilla"], bootstrap=0, **FAST)
    assert list(board["law"]) == ["chinchilla", "compute"]
    assert (board["error"] == "").all()
    assert board["mean_abs_rel_err"].iloc[0] < board["mean_abs_rel_err"].iloc[1]


def test_leaderboard_reports_a_law_that_cannot_fit_this_data():
    # a table of final losses has no lr schedule, so the whole-curve law cannot run on it
    rng = np.random.default_rng(0)
    n = np.repeat([1e6, 3e6, 1e7, 3e7], 3)
    d = n * np.tile([5.0, 20.0, 80.0], 4)
    table = pd.DataFrame({"run": [f"r{i}" for i in range(12)], "N": n, "D": d, "C": 6 * n * d,
                          "loss": chinchilla_loss(n, d) * (1 + 0.002 * rng.standard_normal(12)),
                          "step": 0, "final": True})
    board = leaderboard(table, ["chinchilla", "schedule"], bootstrap=0, **FAST)
    bad = board.set_index("law").loc["schedule"]
    assert "S1" in bad["error"] and np.isnan(bad["mean_abs_rel_err"])
    assert board["law"].iloc[0] == "chinchilla"


def test_bad_arguments_are_refused_before_fitting(sweep_table):
    with pytest.raises(ValueError, match="unknown law 'nope'"):
        backtest(sweep_table, "nope")
    with pytest.raises(ValueError, match="holds out no run"):
        backtest(sweep_table, cutoff=1e30)
    with pytest.raises(ValueError, match="holdout_frac"):
        default_cutoff(sweep_table, holdout_frac=1.5)
    one_budget = sweep_table[sweep_table["run"] == sweep_table["run"].iloc[0]]
    with pytest.raises(ValueError, match="at least two different compute budgets"):
        backtest(one_budget)
    with pytest.raises(ValueError, match=r"needs column\(s\) \['S1', 'S2'\]"):
        covariates_for(sweep_table.drop(columns=["S1", "S2"]), "schedule")


def test_the_fake_sweep_follows_its_stated_constants(tmp_path):
    # guards the meaning of the other tests: a noiseless fake run's final loss is the recorded value of
    # 1.8 + 20 / N^0.32 + 50 / D^0.28 at N = 1e6, D = 409600 (1.8 + 0.24045 + 1.34115 by hand)
    assert TRUE == {"E": 1.8, "A": 20.0, "B": 50.0, "alpha": 0.32, "beta": 0.28}
    run = write_run(tmp_path, "r", n_params=1e6, tokens=4096 * 100, batch_tokens=4096)
    table = load_runs(run)
    final = table[table["final"]].iloc[0]
    assert (final["D"], final["N"]) == (409600, 1e6)
    assert final["loss"] == pytest.approx(3.3817012931268358, rel=1e-12)


def _overtraining_grid(seed: int, noise: float = 0.005) -> pd.DataFrame:
    """Six sizes, each trained at 10 to 320 tokens per parameter (an over-training grid, as in Gadre et
    al. 2024), from a law with equal exponents: the overtrain law is exactly right, chinchilla has a
    spare exponent."""
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(1e7, 1e9, 6), 6)
    D = N * np.tile([10, 20, 40, 80, 160, 320], 6)
    loss = (1.8 + 400.0 * N ** -0.3 + 1500.0 * D ** -0.3) * np.exp(noise * rng.standard_normal(N.size))
    return pd.DataFrame({"run": [f"r{i}" for i in range(N.size)], "N": N, "D": D, "C": 6 * N * D, "loss": loss,
                         "step": 1, "final": True})


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 5, 7])
def test_leaderboard_ranks_by_the_far_end_where_the_right_law_wins(seed):
    # on these grids the mean error over the held-out runs favours chinchilla, whose spare exponent
    # fits the noise of the nearer runs; the farthest forecasts favour the right law
    board = leaderboard(_overtraining_grid(seed), ["chinchilla", "overtrain"], bootstrap=0, n_starts=4)
    rows = board.set_index("law")
    assert rows.loc["chinchilla", "mean_abs_rel_err"] < rows.loc["overtrain", "mean_abs_rel_err"]
    assert board["law"].iloc[0] == "overtrain"
    assert rows.loc["overtrain", "far_err"] < rows.loc["chinchilla", "far_err"]
    assert rows.loc["overtrain", "rollout_max_extrapolation"] > rows.loc["overtrain", "max_extrapolation"] / 2
