"""The fitting engine: parameter recovery, robustness, input checks, bootstrap, FitResult, predictions."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from analysis import predict as P
from analysis.fitresult import FitResult
from analysis.fitting import fit, polish
from analysis.objective import prepare
from analysis.laws import get_law, kaplan_schedule_as_kaplan, kaplan_schedule_params
from analysis.schedule import schedule_features
from analysis.uncertainty import bootstrap_runs, resample_runs

CHIN = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.28}


def _noisy(loss, rng, noise=0.005, outliers=0, factor=1.3):
    """Multiplicative log-normal noise (sd `noise`), and `outliers` rows (the largest indices) times `factor`."""
    out = loss * np.exp(noise * rng.standard_normal(loss.shape))
    if outliers:
        out[-outliers:] *= factor
    return out


def chinchilla_table(seed=0, noise=0.005, outliers=0, params=CHIN):
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(1e7, 1e10, 8), 8)
    D = N * np.tile(np.geomspace(2, 200, 8), 8)            # 2 to 200 tokens per parameter
    loss = get_law("chinchilla").predict(params, N=N, D=D)
    return pd.DataFrame({"run": [f"r{i:02d}" for i in range(N.size)], "N": N, "D": D, "C": 6 * N * D,
                         "step": 100, "loss": _noisy(loss, rng, noise, outliers)})


def _rel(result, truth, names):
    return {k: abs(result.params[k] / truth[k] - 1) for k in names}


# ---------------------------------------------------------------------
# parameter recovery (0.5% multiplicative noise, a few outliers)


def test_chinchilla_recovery_and_huber_resists_outliers():
    table = chinchilla_table(seed=1, noise=0.005, outliers=4)     # 4 of 64 points 30% too high
    huber = fit(table, "chinchilla")
    ls = fit(table, "chinchilla", delta=10.0)      # delta above every residual: plain least squares
    assert huber.converged
    # stated tolerances (the noise alone moves alpha by up to ~0.03 across seeds):
    # exponents within 0.04 absolute, E within 5%
    assert abs(huber.params["alpha"] - CHIN["alpha"]) < 0.04
    assert abs(huber.params["beta"] - CHIN["beta"]) < 0.04
    assert _rel(huber, CHIN, ["E"])["E"] < 0.05
    # least squares is dragged by the 4 outliers: E up by a third, alpha by ~0.15
    assert _rel(ls, CHIN, ["E"])["E"] > 0.2 and ls.params["alpha"] - CHIN["alpha"] > 0.1
    err = lambda r: max(abs(r.params[k] - CHIN[k]) / CHIN[k] for k in ("E", "alpha", "beta"))  # noqa: E731
    assert err(ls) > 3 * err(huber), (err(ls), err(huber))
    assert huber.residuals["max_abs_rel_err"] > 0.2          # the outliers stay outliers under Huber
    assert huber.residuals["median_abs_rel_err"] < 0.01


def test_kaplan_recovery():
    truth = {"Nc": 8.8e13, "Dc": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}
    rng = np.random.default_rng(2)
    N = np.repeat(np.geomspace(1e6, 1e10, 9), 9)
    D = np.tile(np.geomspace(1e7, 1e11, 9), 9)
    t = pd.DataFrame({"N": N, "D": D, "C": 6 * N * D, "loss": _noisy(get_law("kaplan").predict(truth, N=N, D=D), rng, 0.005, 3)})
    r = fit(t, "kaplan")
    assert r.converged and r.convention["N"] == "non_embedding"
    # exponents within 0.01 absolute; the scales within a factor of 3 (they sit at the end of a long extrapolation)
    assert abs(r.params["alpha_N"] - truth["alpha_N"]) < 0.01
    assert abs(r.params["alpha_D"] - truth["alpha_D"]) < 0.01
    for k in ("Nc", "Dc"):
        assert abs(np.log(r.params[k] / truth[k])) < np.log(3), k


def test_compute_recovery():
    truth = {"E": 1.7, "A": 40.0, "gamma": 0.1}
    rng = np.random.default_rng(3)
    C = np.geomspace(1e15, 1e23, 40)
    t = pd.DataFrame({"C": C, "loss": _noisy(get_law("compute").predict(truth, C=C), rng, 0.005, 2)})
    r = fit(t, "compute")
    assert abs(r.params["gamma"] - truth["gamma"]) < 0.01
    assert _rel(r, truth, ["E"])["E"] < 0.03


def test_overtrain_recovery_from_n_and_d():
    truth = {"E": 1.9, "a": 300.0, "b": 600.0, "eta": 0.15}
    rng = np.random.default_rng(4)
    C = np.repeat(np.geomspace(1e17, 1e21, 8), 7)
    M = np.tile(np.geomspace(5, 640, 7), 8)                 # tokens per parameter, over-trained up to 32x
    N = np.sqrt(C / (6 * M))
    D = M * N
    t = pd.DataFrame({"N": N, "D": D, "C": C, "loss": _noisy(get_law("overtrain").predict(truth, C=C, M=M), rng, 0.005, 2)})
    r = fit(t, "overtrain")                 # M is derived as D / N
    assert abs(r.params["eta"] - truth["eta"]) < 0.01
    assert _rel(r, truth, ["E"])["E"] < 0.03


def schedule_table(seed=5, noise=0.005):
    truth = {"E": 1.7, "A_N": 300.0, "alpha_N": 0.35, "A": 500.0, "alpha": 0.3, "C": 2e-9}
    rng = np.random.default_rng(seed)
    law = get_law("schedule")
    rows = []
    T, tps = 2000, 50_000
    for N in (1e6, 4e6, 1.6e7, 6.4e7):
        for kind in ("constant", "cosine", "wsd"):
            t = np.arange(T)
            lr = {"constant": np.ones(T),
                  "cosine": 0.1 + 0.45 * (1 + np.cos(np.pi * t / T)),
                  "wsd": np.where(t < 0.8 * T, 1.0, 1.0 - 0.9 * (t - 0.8 * T) / (0.2 * T))}[kind] * 3e-3
            steps = np.unique(np.geomspace(20, T, 25).astype(int))
            S1, S2 = schedule_features(lr, steps, 0.999, tokens_per_step=tps)
            loss = law.predict(truth, N=np.full(steps.size, N), S1=S1, S2=S2)
            for s, a, b, l_ in zip(steps, S1, S2, _noisy(loss, rng, noise)):
                rows.append({"run": f"{kind}-{N:.0e}", "N": N, "D": s * tps, "C": 6 * N * s * tps, "step": s,
                             "S1": a, "S2": b, "loss": l_})
    return pd.DataFrame(rows), truth


def test_schedule_law_recovery_on_whole_curves():
    table, truth = schedule_table()
    r = fit(table, "schedule", select="all")
    assert r.inputs["n_runs"] == 12 and r.n_points == len(table)
    assert abs(r.params["alpha"] - truth["alpha"]) < 0.03
    assert abs(r.params["alpha_N"] - truth["alpha_N"]) < 0.05
    assert _rel(r, truth, ["C"])["C"] < 0.25
    # and it predicts a held-out schedule's curve: wsd at the largest size, from the planned lr
    T, tps = 2000, 50_000
    t = np.arange(T)
    lr = np.where(t < 0.8 * T, 1.0, 1.0 - 0.9 * (t - 0.8 * T) / (0.2 * T)) * 3e-3
    S1, S2 = schedule_features(lr, [1000, 1600, 2000], tokens_per_step=tps)
    pred = r.predict(N=np.full(3, 6.4e7), S1=S1, S2=S2)
    exact = get_law("schedule").predict(truth, N=np.full(3, 6.4e7), S1=S1, S2=S2)
    np.testing.assert_allclose(pred, exact, rtol=0.01)
    assert pred[2] < pred[1] - 0.05            # the cooldown's drop is predicted


KS_TRUTH = kaplan_schedule_params(Nc=2e12, Sc=3e11, alpha_N=0.08, alpha_S=0.11, C=1e-9)


def _cosine(T, peak=3e-3):
    t = np.arange(T)
    return peak * (0.1 + 0.45 * (1 + np.cos(np.pi * t / T)))


def kaplan_schedule_table(seed=3, noise=0.003):
    """A ladder of cosine runs (4 sizes x 3 lengths, each schedule as long as its run) on the kaplan-schedule law."""
    rng = np.random.default_rng(seed)
    law = get_law("kaplan-schedule")
    rows, tps = [], 100_000
    for N in (1e6, 3e6, 1e7, 3e7):
        for T in (1000, 2000, 4000):
            steps = np.unique(np.geomspace(50, T, 12).astype(int))
            S1, S2 = schedule_features(_cosine(T), steps, 0.999, tokens_per_step=tps)
            loss = law.predict(KS_TRUTH, N=np.full(steps.size, N), S1=S1, S2=S2)
            for s, a, b, l_ in zip(steps, S1, S2, _noisy(loss, rng, noise)):
                rows.append({"run": f"N{N:.0e}-T{T}", "N": N, "D": s * tps, "C": 6 * N * s * tps, "step": s,
                             "S1": a, "S2": b, "loss": l_, "final": s == T})
    return pd.DataFrame(rows)


def test_kaplan_schedule_recovers_constants_and_forecasts_a_longer_larger_run():
    table = kaplan_schedule_table()
    r = fit(table, "kaplan-schedule", select="all")
    assert r.converged and r.inputs["n_runs"] == 12
    assert abs(r.params["alpha_S"] - KS_TRUTH["alpha_S"]) < 0.02
    assert abs(r.params["a"] - KS_TRUTH["a"]) < 0.15 * KS_TRUTH["a"]
    assert abs(kaplan_schedule_as_kaplan(r.params)["alpha_N"] - 0.08) < 0.02
    assert _rel(r, KS_TRUTH, ["C"])["C"] < 0.3
    # the forecast the demo makes: 3x the largest size, 3x its longest schedule (about 10x its compute)
    T, tps = 12_000, 100_000
    steps = [4000, 8000, T]
    S1, S2 = schedule_features(_cosine(T), steps, tokens_per_step=tps)
    pred = r.predict(N=np.full(3, 1e8), S1=S1, S2=S2)
    exact = get_law("kaplan-schedule").predict(KS_TRUTH, N=np.full(3, 1e8), S1=S1, S2=S2)
    np.testing.assert_allclose(pred, exact, rtol=0.005)


# ---------------------------------------------------------------------
# input checks and warnings


def test_bad_input_is_named():
    t = chinchilla_table()
    with pytest.raises(ValueError, match="unknown law"):
        fit(t, "chinchila")
    with pytest.raises(ValueError, match="missing \\['D'\\]"):
        fit(t.drop(columns="D"))
    bad = t.copy()
    bad.loc[3, "loss"] = np.nan
    with pytest.raises(ValueError, match="'loss' has NaN"):
        fit(bad)
    bad = t.copy()
    bad.loc[3, "N"] = 0
    with pytest.raises(ValueError, match="'N' must be positive"):
        fit(bad)
    bad = t.copy()
    bad.loc[5, "D"] = np.inf
    with pytest.raises(ValueError, match="'D' has NaN, inf"):
        fit(bad)
    with pytest.raises(ValueError, match="single value"):
        fit(t.assign(N=1e8))
    with pytest.raises(ValueError, match="4 points cannot determine 5 free parameters"):
        fit(t.iloc[[0, 9, 18, 27]])
    with pytest.raises(ValueError, match="weights must have one entry per table row"):
        fit(t, weights=np.ones(3))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        fit(t, weights=-np.ones(len(t)))
    with pytest.raises(ValueError, match="select must be one of"):
        fit(t, select="last")
    with pytest.raises(ValueError, match="fixed parameter 'gamma'"):
        fit(t, fixed={"gamma": 1.0})
    with pytest.raises(ValueError, match="needs table columns .*missing \\['S1', 'S2'\\]"):
        fit(t, "schedule")


def test_warnings_and_fixed_parameters():
    t = chinchilla_table(seed=6)
    N = np.repeat(np.geomspace(1e7, 1e10, 6), 2)
    D = np.tile([1e9, 1e10], 6)                    # only two token counts
    two_d = pd.DataFrame({"N": N, "D": D, "loss": get_law("chinchilla").predict(CHIN, N=N, D=D)})
    assert any("fewer than 3 distinct token counts D (2)" in w for w in fit(two_d).warnings)
    high_E = fit(t, fixed={"E": 3.0})              # E above every observed loss
    assert high_E.params["E"] == 3.0
    assert any("irreducible loss E = 3 is above the lowest observed loss" in w for w in high_E.warnings)
    fixed = fit(t, fixed={"alpha": 0.34, "E": 1.8})
    assert fixed.params["alpha"] == 0.34 and fixed.params["E"] == 1.8
    assert abs(fixed.params["beta"] - 0.28) < 0.01


def test_select_final_uses_the_last_point_of_each_run():
    t = chinchilla_table(seed=7)
    early = t.assign(step=10, loss=t["loss"] + 1.0)      # an earlier, worse point of every run
    both = pd.concat([early, t], ignore_index=True)
    final = fit(both, select="final")
    assert final.n_points == len(t) and final.inputs["n_runs"] == len(t)
    assert final.params == fit(t).params
    assert fit(both, select="all").n_points == 2 * len(t)


# ---------------------------------------------------------------------
# bootstrap


def test_batched_bootstrap_reaches_the_lbfgsb_optimum_per_replicate():
    # curves of several points per run: the bootstrap resamples runs, keeping all their rows
    t = chinchilla_table(seed=8, noise=0.01)
    curves = pd.concat([t.assign(step=100), t.assign(step=50, D=t["D"] / 2, loss=t["loss"] * 1.02)], ignore_index=True)
    law = get_law("chinchilla")
    data = prepare(curves, law, select="all")
    theta_hat = law.to_theta(fit(curves, select="all").params)
    free = np.ones(5, dtype=bool)
    boot = bootstrap_runs(law, data, theta_hat, delta=1e-3, free=free, n_boot=12, seed=3)
    assert boot.counts_BxR.shape == (12, 64) and np.all(boot.counts_BxR.sum(axis=1) == 64)
    assert boot.n_not_converged == 0
    for k in range(12):
        weighted = dataclasses.replace(data, weights=boot.counts_BxR[k][data.run_codes])
        theta_ref, res = polish(law, weighted, 1e-3, theta_hat, free)
        assert boot.objective_B[k] <= res.fun * (1 + 1e-7), k
        np.testing.assert_allclose(boot.theta_BxP[k], theta_ref, atol=2e-3, err_msg=f"replicate {k}")


def test_batched_bootstrap_converges_with_a_parameter_held_at_its_bound():
    # the exponent beta is capped below its optimum, so every replicate's optimum lies on the bound:
    # the refit must hold beta there and converge in the other coordinates, as L-BFGS-B does
    t = chinchilla_table(seed=4, noise=0.005)
    law = dataclasses.replace(get_law("chinchilla"), bounds=((-5.0, 5.0), (-10.0, 60.0), (-10.0, 60.0),
                                                             (0.0, 3.0), (0.0, 0.2)))
    data = prepare(t, law)
    free = np.ones(5, dtype=bool)
    theta_hat, _ = polish(law, data, 1e-3, law.to_theta({**CHIN, "beta": 0.2}), free)
    assert theta_hat[4] == pytest.approx(0.2)
    boot = bootstrap_runs(law, data, theta_hat, delta=1e-3, free=free, n_boot=12, seed=5)
    assert boot.n_not_converged == 0
    assert np.allclose(boot.theta_BxP[:, 4], 0.2)
    for k in range(12):
        weighted = dataclasses.replace(data, weights=boot.counts_BxR[k][data.run_codes])
        _, res = polish(law, weighted, 1e-3, theta_hat, free)
        assert boot.objective_B[k] <= res.fun * (1 + 1e-7), k


def test_resample_runs_is_seeded_and_whole_runs():
    a, b = resample_runs(10, 50, seed=1), resample_runs(10, 50, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (50, 10) and np.all(a.sum(axis=1) == 10) and np.all(a == np.round(a))


def test_fit_result_json_round_trip_and_intervals(tmp_path):
    r = fit(chinchilla_table(seed=9), bootstrap=200, seed=1)
    path = r.to_json(tmp_path / "fit.json")
    back = FitResult.from_json(path)
    assert back == r
    np.testing.assert_array_equal(back.samples, r.samples)
    assert back.params == r.params and back.intervals == r.intervals
    assert r.samples.shape == (200, 5) and r.interval_level == 0.95
    for name, (lo, hi) in r.intervals.items():
        assert lo < r.params[name] < hi, name
    assert r.inputs["content_hash"].startswith("sha256:") and r.inputs["n_runs"] == 64
    assert r.settings["bootstrap"] == 200 and r.settings["delta"] == 1e-3
    point, lo, hi = r.predict_interval(level=0.9, N=[1e11], D=[2e12])
    assert lo[0] < point[0] < hi[0]
    # a different table hashes differently
    assert fit(chinchilla_table(seed=10)).inputs["content_hash"] != r.inputs["content_hash"]
    with pytest.raises(ValueError, match="no bootstrap samples"):
        fit(chinchilla_table(seed=9)).predict_interval(N=[1e11], D=[2e12])


# ---------------------------------------------------------------------
# predictions


def test_predictions_closed_forms_and_errors():
    r = fit(chinchilla_table(seed=11), bootstrap=100)
    law = get_law("chinchilla")
    C = np.array([1e21, 1e24])
    # the closed-form N_opt is the minimizer of L(N, C/6N)
    N_num = law.n_opt_search(r.params, C, 6.0)[0]
    np.testing.assert_allclose(P.n_opt(r, C).point, N_num, rtol=1e-4)
    alloc = P.compute_optimal(r, C)
    np.testing.assert_allclose(alloc.N_opt.point * alloc.D_opt.point * 6, C, rtol=1e-12)
    np.testing.assert_allclose(alloc.loss.point, r.predict(N=alloc.N_opt.point, D=alloc.D_opt.point), rtol=1e-12)
    assert np.all(alloc.loss.lower <= alloc.loss.point) and np.all(alloc.loss.point <= alloc.loss.upper)
    # tokens_to_reach inverts the law at fixed N
    D = P.tokens_to_reach(r, 2.3, 1e9)
    np.testing.assert_allclose(r.predict(N=1e9, D=D.point), 2.3, rtol=1e-10)
    floor = r.params["E"] + r.params["A"] / 1e9 ** r.params["alpha"]
    with pytest.raises(ValueError, match="unreachable"):
        P.tokens_to_reach(r, floor - 1e-3, 1e9)
    with pytest.raises(ValueError, match="no compute-optimal allocation"):
        P.n_opt(fit(pd.DataFrame({"C": np.geomspace(1e15, 1e20, 12), "loss": np.linspace(4, 3, 12)}), "compute"), 1e21)


def test_n_convention_follows_the_law_when_the_table_has_both_counts():
    t = chinchilla_table(seed=12)
    t["N_total"] = t["N"]
    t["N_non_embedding"] = t["N"] * 0.8          # a different count: the fitted A must change
    t.attrs["n_convention"] = "total"
    chin = fit(t, "chinchilla")
    assert chin.convention["N"] == "total"
    forced = fit(t, "chinchilla", n_convention="non_embedding")
    assert forced.convention["N"] == "non_embedding"
    # L = E + A N^-alpha: scaling N by 0.8 is absorbed by A -> A * 0.8^alpha
    assert forced.params["A"] == pytest.approx(chin.params["A"] * 0.8 ** chin.params["alpha"], rel=1e-3)
    only_total = t.drop(columns=["N_total", "N_non_embedding"])
    assert any("defined on non_embedding parameters" in w for w in fit(only_total, "kaplan").warnings)
    with pytest.raises(ValueError, match="table's N counts 'total'"):
        fit(only_total, "chinchilla", n_convention="non_embedding")


def _fixed_result(law_name, params, n_samples=0, seed=0):
    """A FitResult with given parameters (and jittered samples), to test predictions in isolation."""
    law = get_law(law_name)
    rng = np.random.default_rng(seed)
    samples = None
    if n_samples:
        theta = law.to_theta(params) + 0.01 * rng.standard_normal((n_samples, law.n_params))
        samples = law.to_natural(theta)
    return FitResult(law=law.name, law_version=law.version, params=dict(params), intervals={}, interval_level=None,
                     samples=samples, objective=0.0, converged=True, message="", residuals={}, warnings=[],
                     settings={}, convention={}, inputs={}, n_points=0, param_names=law.param_names)


def test_compute_optimal_for_kaplan_and_overtrain_minimizes_the_loss():
    C = 1e21
    kap = _fixed_result("kaplan", {"Nc": 8.8e13, "Dc": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}, n_samples=50)
    N = P.n_opt(kap, C).point[0]
    at = lambda n: kap.predict(N=n, D=C / (6 * n))[0]  # noqa: E731
    assert at(N) < at(N * 1.05) and at(N) < at(N / 1.05)
    band = P.loss_at_compute(kap, C)
    assert band.lower[0] <= band.point[0] <= band.upper[0]
    assert band.point[0] == pytest.approx(at(N), rel=1e-6)
    D = P.tokens_to_reach(kap, at(N), N).point[0]
    assert D == pytest.approx(C / (6 * N), rel=1e-6)

    over = _fixed_result("overtrain", {"E": 1.9, "a": 300.0, "b": 600.0, "eta": 0.15})
    N = P.n_opt(over, C).point[0]
    Ns = N * np.geomspace(0.5, 2.0, 401)
    losses = over.predict(C=np.full(Ns.size, C), M=C / (6 * Ns ** 2))
    assert Ns[np.argmin(losses)] == pytest.approx(N, rel=0.01)

    comp = _fixed_result("compute", {"E": 1.7, "A": 40.0, "gamma": 0.1})
    assert P.loss_at_compute(comp, C).point[0] == pytest.approx(1.7 + 40.0 * C ** -0.1)
    assert np.isnan(P.loss_at_compute(comp, C).lower[0])       # no samples, no band


def test_weights_zero_drop_rows_and_few_runs_are_flagged():
    t = chinchilla_table(seed=13, outliers=4)
    w = np.ones(len(t))
    w[-4:] = 0.0                                  # the four outliers weigh nothing
    weighted = fit(t, weights=w)
    dropped = fit(t.iloc[:-4])
    for k in CHIN:
        assert weighted.params[k] == pytest.approx(dropped.params[k], rel=1e-4), k
    assert weighted.settings["weighted"] and fit(t.assign(w=w), weights="w").params == weighted.params
    # three runs of three sizes: many bootstrap replicates draw a single size
    few = pd.DataFrame({"run": ["a", "b", "c"] * 2, "step": [1, 1, 1, 2, 2, 2], "N": [1e7, 1e8, 1e9] * 2,
                        "D": [1e9] * 3 + [2e9] * 3, "loss": [3.0, 2.6, 2.3, 2.9, 2.5, 2.2]})
    r = fit(few, "chinchilla", select="all", fixed={"E": 1.5, "B": 1e3, "beta": 0.3}, bootstrap=50)
    assert any("drew runs of a single model size" in w for w in r.warnings)


def test_forecast_of_a_run_config():
    from models.counting import param_counts
    from train.config import RunConfig
    from train.contract import eval_steps
    from train.schedules import lr_curve

    cfg = RunConfig().with_overrides({"model.width": 128, "model.depth": 4, "train.tokens": 2_000_000,
                                      "schedule.kind": "wsd", "eval.points": 12}).resolved()
    N = param_counts(cfg.model)["total"]
    steps = eval_steps(cfg.steps, 12)
    chin = _fixed_result("chinchilla", CHIN, n_samples=40)
    fc = P.forecast(chin, cfg)
    assert fc.steps.tolist() == steps and fc.derived["N"][0] == N and fc.interval == "bootstrap"
    assert fc.loss[-1] == pytest.approx(chin.predict(N=N, D=cfg.steps * cfg.train.batch_tokens)[0])
    assert "D = tokens seen" in fc.note and fc.loss[-1] < fc.loss[0]
    sched = _fixed_result("schedule", {"E": 1.7, "A_N": 300.0, "alpha_N": 0.35, "A": 500.0, "alpha": 0.3, "C": 2e-9},
                          n_samples=40)
    fc = P.forecast(sched, cfg)
    S1, S2 = schedule_features(lr_curve(cfg.steps, cfg.optim.lr, cfg.schedule), steps,
                               tokens_per_step=cfg.train.batch_tokens)
    np.testing.assert_allclose(fc.loss, sched.predict(N=np.full(len(steps), float(N)), S1=S1, S2=S2), rtol=1e-12)
    # no samples and no measured error: no interval, and the forecast says why instead of printing nulls
    with pytest.raises(ValueError, match="no bootstrap samples"):
        P.forecast(_fixed_result("schedule", sched.params), cfg)


def test_exponent_at_its_bound_is_reported():
    # a loss that rises with compute: the best decreasing power law is flat, gamma pinned at 0
    C = np.geomspace(1e15, 1e20, 10)
    r = fit(pd.DataFrame({"C": C, "loss": np.linspace(3.0, 3.5, 10)}), "compute")
    assert r.params["gamma"] == pytest.approx(0.0, abs=1e-6)
    assert any("exponent gamma" in w and "sits at its bound" in w for w in r.warnings)


def test_a_scale_parameter_at_its_bound_is_reported():
    from analysis.fitting import _diagnose
    law = get_law("kaplan")
    data = prepare(chinchilla_table(), "kaplan")
    theta = law.to_theta(KAPLAN_AT_BOUND)
    theta[0] = law.bounds[0][1]                       # log Nc at its upper bound
    msgs = _diagnose(law, theta, np.ones(law.n_params, bool), data)
    assert any("log Nc" in m and "sits at its bound" in m for m in msgs)
    theta[0] = 30.0                                   # inside: no such warning
    assert not any("log Nc" in m for m in _diagnose(law, theta, np.ones(law.n_params, bool), data))


KAPLAN_AT_BOUND = {"Nc": 1e13, "Dc": 1e13, "alpha_N": 0.07, "alpha_D": 0.09}
