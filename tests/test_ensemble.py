"""Ensembles of laws (analysis.laws, "Ensembles of laws"; analysis.fitting.fit_mixture): named like a law, fitted member by member, forecast as their weighted
mean, with the members' spread in the calibrated interval; `select_law` builds one from the laws of whole curves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.calibrate import interval_parts, calibrated_interval, with_extrapolation_error
from analysis.fitresult import FitResult
from analysis.fitting import fit
from analysis.laws import get_law, kaplan_schedule_params, member_spread, mixture_name, parse_mixture
from analysis.select import select_law

KS_TRUTH = kaplan_schedule_params(Nc=8.8e13, Sc=5.4e13, alpha_N=0.076, alpha_S=0.095, C=1e-10)
SCHEDULE_TRUTH = {"E": 2.0, "A_N": 30.0, "alpha_N": 0.3, "A": 40.0, "alpha": 0.25, "C": 1e-10}
MIX = "mix:kaplan-schedule=0.7,schedule=0.3"


def _annealed_curves(seed: int = 0, noise: float = 0.002) -> pd.DataFrame:
    """Four sizes x three budgets, eight eval points each; the lr anneals over each run's last quarter, so S2
    grows at the end (both laws of whole curves can identify their annealing term). Losses: a quarter
    kaplan-schedule, three quarters schedule, so that neither law is exact and each fit stays inside its bounds."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in np.geomspace(1e6, 1e8, 4):
        for ratio in (10, 40, 160):
            D = np.geomspace(N * ratio / 10, N * ratio, 8)
            tail = np.clip((D / D[-1] - 0.75) / 0.25, 0, 1)    # 0 until 3/4 of the run, then up to 1
            S1 = D * (1 - 0.25 * tail ** 2)                    # the forward area grows slower while annealing
            S2 = 0.02 * D[-1] * tail ** 2
            cov = {"N": np.full(8, N), "S1": S1, "S2": S2}
            loss = (0.25 * get_law("kaplan-schedule").predict(KS_TRUTH, **cov)
                    + 0.75 * get_law("schedule").predict(SCHEDULE_TRUTH, **cov))
            for i, value in enumerate(loss * np.exp(noise * rng.standard_normal(8))):
                rows.append({"run": f"N{N:.0e}-r{ratio}", "N": N, "D": D[i], "C": 6 * N * D[i], "S1": S1[i],
                             "S2": S2[i], "loss": value, "step": i + 1, "final": i == 7})
    table = pd.DataFrame(rows)
    table.attrs["n_convention"] = "non_embedding"   # as a ladder's sweep declares it: one N for every law
    return table


@pytest.fixture(scope="module")
def curves():
    return _annealed_curves()


@pytest.fixture(scope="module")
def members(curves):
    a = fit(curves, "kaplan-schedule", bootstrap=16, seed=3, n_starts=2)
    b = fit(curves, "schedule", bootstrap=16, seed=3, n_starts=2, n_convention=a.convention["N"])
    return a, b


def test_an_ensemble_name_is_parsed_normalized_and_bad_ones_are_refused():
    assert parse_mixture("mix:kaplan-schedule=3,schedule=1") == {"kaplan-schedule": 0.75, "schedule": 0.25}
    assert mixture_name({"kaplan-schedule": 3, "schedule": 1}) == "mix:kaplan-schedule=0.750,schedule=0.250"
    law = get_law(MIX)
    assert law.members == ("kaplan-schedule", "schedule") and law.weights == (0.7, 0.3)
    assert law.version == "kaplan-schedule@2+schedule@1" and law.params_per_fit == 6
    assert law.param_names[:2] == ("kaplan-schedule.K", "kaplan-schedule.B") and law.n_params == 11
    for bad, why in [("mix:kaplan-schedule=1", "at least two laws"),
                     ("mix:kaplan-schedule=1,schedule=-1", "positive weights"),
                     ("mix:kaplan-schedule=1,schedule", "positive weights"),
                     ("mix:kaplan-schedule=1,kaplan-schedule=2", "listed twice"),
                     ("mix:kaplan-schedule=1,schedul=1", "unknown law 'schedul'"),
                     ("mix:kaplan-schedule=1,chinchilla=1", "read different covariates")]:
        with pytest.raises(ValueError, match=why):
            get_law(bad)


def test_the_ensemble_is_the_weighted_mean_of_its_laws_and_its_gradient_is_exact(members):
    a, b = members
    law = get_law(MIX)
    params = {**{f"kaplan-schedule.{k}": v for k, v in a.params.items()}, **{f"schedule.{k}": v for k, v in b.params.items()}}
    cov = {"N": np.array([2e6, 5e7, 4e8]), "S1": np.array([1e8, 3e9, 8e10]), "S2": np.array([0.0, 1e7, 5e7])}
    want = 0.7 * a.predict(**cov) + 0.3 * b.predict(**cov)
    np.testing.assert_allclose(law.predict(params, **cov), want, rtol=1e-12)
    np.testing.assert_allclose(law.loss(params, **cov)[0], want, rtol=1e-12)   # the plain form agrees
    theta = law.to_theta(params)
    arrays = law.covariate_arrays(cov)
    _, grad = law.log_predict_grad(theta, arrays)
    eps = 1e-6
    for j in range(law.n_params):
        up, dn = theta.copy(), theta.copy()
        up[j] += eps
        dn[j] -= eps
        fd = (law.log_predict_grad(up, arrays, False)[0] - law.log_predict_grad(dn, arrays, False)[0]) / (2 * eps)
        np.testing.assert_allclose(grad[0, :, j], fd[0], rtol=1e-4, atol=1e-9)


def test_fitting_an_ensemble_fits_each_law_on_the_same_rows_and_pairs_their_bootstrap_sets(curves, members, tmp_path):
    a, b = members
    r = fit(curves, MIX, bootstrap=16, seed=3, n_starts=2)
    assert r.law == MIX and r.n_points == a.n_points == len(curves)
    assert r.params == pytest.approx({**{f"kaplan-schedule.{k}": v for k, v in a.params.items()},
                                      **{f"schedule.{k}": v for k, v in b.params.items()}})
    # the b-th ensemble forecast is the weighted mean of the members' b-th forecasts (same resampled runs)
    cov = {"N": np.array([4e8]), "S1": np.array([8e10]), "S2": np.array([5e7])}
    np.testing.assert_allclose(r.predict_samples(**cov),
                               0.7 * a.predict_samples(**cov) + 0.3 * b.predict_samples(**cov), rtol=1e-10)
    assert r.settings["ensemble"]["weights"] == {"kaplan-schedule": 0.7, "schedule": 0.3}
    assert r.convention["N"] == a.convention["N"]
    back = FitResult.from_json(r.to_json(tmp_path / "mix.json"))
    assert back == r and back.predict(**cov) == pytest.approx(r.predict(**cov))
    # the summary names the ensemble with its laws' versions, and a single law with its own
    assert r.summary().splitlines()[0].startswith(f"{MIX} (kaplan-schedule@{a.law_version}+schedule@{b.law_version}):")
    assert a.summary().startswith(f"kaplan-schedule v{a.law_version}:")
    with pytest.raises(ValueError, match="not supported for an ensemble"):
        fit(curves, MIX, fixed={"kaplan-schedule.C": 1e-9})


def test_the_calibrated_interval_of_an_ensemble_adds_the_spread_of_its_laws(curves, members):
    """sigma^2 = bootstrap^2 + s0^2 + (k x)^2 + spread^2, the spread sqrt(sum w_i (ln L_i - ln L)^2) by hand."""
    a, b = members
    r = with_extrapolation_error(fit(curves, MIX, bootstrap=16, seed=3, n_starts=2), curves, n_starts=2)
    assert r.extrapolation.law == MIX and r.extrapolation.n_forecasts > 0
    cov = {"N": np.array([4e8, 1e9]), "S1": np.array([8e10, 3e11]), "S2": np.array([5e7, 1e8])}
    la, lb = a.predict(**cov), b.predict(**cov)
    mean = 0.7 * la + 0.3 * lb
    spread = np.sqrt(0.7 * np.log(la / mean) ** 2 + 0.3 * np.log(lb / mean) ** 2)
    np.testing.assert_allclose(member_spread(r.law_obj, r.params, **cov), spread, rtol=1e-9)
    assert spread.min() > 0
    ext = np.array([3.0, 10.0])
    point, lo, hi, sigma = calibrated_interval(r, r.extrapolation, extrapolation=ext, **cov)
    logs = np.log(r.predict_samples(**cov))
    q16, q84 = np.percentile(logs, [15.865, 84.135], axis=0)
    want = np.sqrt(((q84 - q16) / 2) ** 2 + r.extrapolation.sigma(ext) ** 2 + spread ** 2)
    np.testing.assert_allclose(sigma, want, rtol=1e-9)
    np.testing.assert_allclose(point, mean, rtol=1e-10)
    # each part, as a forecast reports it (what makes the interval wide), by hand
    parts = interval_parts(r, r.extrapolation, extrapolation=ext, **cov)
    np.testing.assert_allclose(parts["bootstrap"], (q84 - q16) / 2, rtol=1e-9)
    np.testing.assert_allclose(parts["scatter"], [r.extrapolation.s0] * 2, rtol=1e-12)
    np.testing.assert_allclose(parts["extrapolation"], r.extrapolation.k * np.log(ext), rtol=1e-12)
    np.testing.assert_allclose(parts["between_laws"], spread, rtol=1e-9)
    # a single law has no spread term
    assert member_spread(get_law("schedule"), b.params, **cov).tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_auto_averages_the_laws_of_whole_curves_weighted_by_their_backtests(curves):
    """Both laws of whole curves are free of bounds: the chosen forecast is their ensemble, each weighted by
    1 / its far-weighted backtest error (from the board), and the reasons say so; ensemble=False keeps one law."""
    s = select_law(curves, ["kaplan", "kaplan-schedule", "schedule"], bootstrap=0, n_starts=2)
    far = s.board.set_index("law")["far_err"]
    assert not s.at_bound["kaplan-schedule"] and not s.at_bound["schedule"]
    law = get_law(s.law)
    assert law.members == tuple(n for n in s.board["law"] if n != "kaplan")
    inv = {n: 1 / far[n] for n in law.members}
    assert dict(zip(law.members, law.weights)) == pytest.approx({n: v / sum(inv.values()) for n, v in inv.items()},
                                                               abs=1e-3)
    assert s.result.law == s.law and s.reasons[-1] == f"chosen: {s.law}"
    assert any(r.startswith("ensemble of the laws fitted on whole curves") for r in s.reasons)
    single = select_law(curves, ["kaplan", "kaplan-schedule", "schedule"], bootstrap=0, n_starts=2, ensemble=False)
    assert single.law in ("kaplan-schedule", "schedule", "kaplan") and not get_law(single.law).members


def test_the_fit_command_takes_an_ensemble_and_refuses_a_bad_one(curves, tmp_path, capsys):
    from testbed.cli import main as run_testbed

    csv = tmp_path / "curves.csv"
    curves.to_csv(csv, index=False)
    out = tmp_path / "mix.json"
    assert run_testbed(["fit", str(csv), "--law", MIX, "--bootstrap", "0", "--starts", "2",
                        "--n-convention", "non_embedding", "--out", str(out)]) == 0
    r = FitResult.from_json(out)
    assert r.law == MIX and set(r.params) == set(get_law(MIX).param_names)
    capsys.readouterr()
    assert run_testbed(["fit", str(csv), "--law", "mix:kaplan-schedule=1,schedule=0", "--out", str(out)]) == 2
    assert "positive weights" in capsys.readouterr().err
