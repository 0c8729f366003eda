"""Law definitions: formulas, analytic gradients, the registry, schedule features, isoFLOP helpers."""
import numpy as np
import pandas as pd
import pytest

from analysis.isoflop import isoflop_approach1, isoflop_approach2
from analysis.laws import LAWS, get_law, kaplan_schedule_as_kaplan, kaplan_schedule_params
from analysis.schedule import schedule_features

COVARIATES = {
    "N": np.geomspace(1e6, 1e10, 7),
    "D": np.geomspace(1e8, 1e12, 7)[::-1],
    "C": np.geomspace(1e15, 1e22, 7),
    "M": np.geomspace(1.0, 300.0, 7),
    "S1": np.geomspace(1e7, 1e10, 7),
    "S2": np.linspace(0.0, 3e6, 7),
}

TRUE = {
    "chinchilla": {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.28},
    "kaplan": {"Nc": 8.8e13, "Dc": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095},
    "compute": {"E": 1.7, "A": 40.0, "gamma": 0.1},
    "overtrain": {"E": 1.9, "a": 300.0, "b": 600.0, "eta": 0.15},
    "schedule": {"E": 1.7, "A_N": 300.0, "alpha_N": 0.35, "A": 500.0, "alpha": 0.3, "C": 1e-8},
    "kaplan-schedule": kaplan_schedule_params(Nc=8.8e13, Sc=5.4e13, alpha_N=0.076, alpha_S=0.095, C=1e-9),
}


def test_registry_and_unknown_law():
    assert set(LAWS) == {"chinchilla", "kaplan", "compute", "overtrain", "schedule", "kaplan-schedule"}
    with pytest.raises(ValueError, match="unknown law 'chinchila'.*chinchilla"):
        get_law("chinchila")
    for law in LAWS.values():
        assert len(law.bounds) == len(law.param_names) == len(law.start_grid) == len(law.log_params)
        assert law.n_convention in ("total", "non_embedding")
        assert law.citation and law.version
        starts = law.default_starts()
        lo, hi = np.array(law.bounds).T
        assert np.all((starts >= lo) & (starts <= hi)), law.name


def test_formulas_by_hand():
    N, D, C, M = 1e9, 2e10, 1.2e20, 20.0
    p = TRUE["chinchilla"]
    assert get_law("chinchilla").predict(p, N=N, D=D)[0] == pytest.approx(
        p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"], rel=1e-12)
    p = TRUE["kaplan"]
    assert get_law("kaplan").predict(p, N=N, D=D)[0] == pytest.approx(
        ((p["Nc"] / N) ** (p["alpha_N"] / p["alpha_D"]) + p["Dc"] / D) ** p["alpha_D"], rel=1e-12)
    p = TRUE["compute"]
    assert get_law("compute").predict(p, C=C)[0] == pytest.approx(p["E"] + p["A"] * C ** -p["gamma"], rel=1e-12)
    p = TRUE["overtrain"]
    assert get_law("overtrain").predict(p, C=C, M=M)[0] == pytest.approx(
        p["E"] + (p["a"] * M ** p["eta"] + p["b"] * M ** -p["eta"]) * C ** -p["eta"], rel=1e-12)
    p = TRUE["schedule"]
    assert get_law("schedule").predict(p, N=N, S1=1e9, S2=2e6)[0] == pytest.approx(
        p["E"] + p["A_N"] * N ** -p["alpha_N"] + p["A"] * 1e9 ** -p["alpha"] - p["C"] * 2e6, rel=1e-12)
    p = TRUE["kaplan-schedule"]
    assert get_law("kaplan-schedule").predict(p, N=N, S1=1e9, S2=2e6)[0] == pytest.approx(
        p["K"] * (1 / 1e9 + p["B"] * N ** -p["a"]) ** p["alpha_S"] - p["C"] * 2e6, rel=1e-12)
    # in Kaplan's constants it is Kaplan's bracket, and under a constant lr (S1 = D, S2 = 0) Kaplan's law
    k = TRUE["kaplan"]
    assert get_law("kaplan-schedule").predict(p, N=N, S1=1e9, S2=2e6)[0] == pytest.approx(
        ((8.8e13 / N) ** (0.076 / 0.095) + 5.4e13 / 1e9) ** 0.095 - 1e-9 * 2e6, rel=1e-12)
    as_kaplan = kaplan_schedule_params(Nc=k["Nc"], Sc=k["Dc"], alpha_N=k["alpha_N"], alpha_S=k["alpha_D"], C=1.0)
    assert get_law("kaplan-schedule").predict(as_kaplan, N=N, S1=D, S2=0.0)[0] == \
        pytest.approx(get_law("kaplan").predict(k, N=N, D=D)[0], rel=1e-12)
    back = kaplan_schedule_as_kaplan(as_kaplan)
    assert back["log_Nc"] == pytest.approx(np.log(k["Nc"]), rel=1e-12)
    assert back["log_Sc"] == pytest.approx(np.log(k["Dc"]), rel=1e-12)
    assert back["alpha_N"] == pytest.approx(k["alpha_N"], rel=1e-12)


def test_overtrain_is_chinchilla_with_equal_exponents():
    # Gadre et al. 2024 Sec. 2.1: with alpha = beta = 2 eta, C = 6ND and M = D/N,
    # E + A N^-2eta + B D^-2eta = E + (a M^eta + b M^-eta) C^-eta, a = A 6^eta, b = B 6^eta
    E, A, B, eta = 1.9, 300.0, 700.0, 0.16
    N, D = COVARIATES["N"], COVARIATES["D"]
    chin = get_law("chinchilla").predict({"E": E, "A": A, "B": B, "alpha": 2 * eta, "beta": 2 * eta}, N=N, D=D)
    over = get_law("overtrain").predict({"E": E, "a": A * 6 ** eta, "b": B * 6 ** eta, "eta": eta}, C=6 * N * D, M=D / N)
    np.testing.assert_allclose(over, chin, rtol=1e-12)
    # M may be given as N and D
    np.testing.assert_allclose(get_law("overtrain").predict({"E": E, "a": A * 6 ** eta, "b": B * 6 ** eta, "eta": eta},
                                                            C=6 * N * D, N=N, D=D), chin, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(TRUE))
def test_analytic_gradient_matches_finite_differences(name):
    law = get_law(name)
    cov = law.covariate_arrays({c: COVARIATES[c] for c in law.covariates})
    rng = np.random.default_rng(0)
    theta0 = law.to_theta(TRUE[name])
    theta_SxP = theta0 + 0.05 * rng.standard_normal((3, law.n_params))
    f, J = law.log_predict_grad(theta_SxP, cov)
    assert f.shape == (3, 7) and J.shape == (3, 7, law.n_params)
    h = 1e-6
    for p in range(law.n_params):
        e = np.zeros(law.n_params)
        e[p] = h
        fd = (law.log_predict_grad(theta_SxP + e, cov, False)[0] - law.log_predict_grad(theta_SxP - e, cov, False)[0]) / (2 * h)
        np.testing.assert_allclose(J[..., p], fd, rtol=1e-5, atol=1e-8, err_msg=f"{name} d/d{law.theta_names[p]}")


def test_vectorized_predict_and_conversions():
    law = get_law("chinchilla")
    P = np.array([law.as_natural(TRUE["chinchilla"]), law.as_natural({**TRUE["chinchilla"], "E": 2.0})])
    out = law.predict(P, N=COVARIATES["N"], D=COVARIATES["D"])
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out[1] - out[0], 0.2, rtol=1e-12)
    np.testing.assert_allclose(law.to_natural(law.to_theta(P)), P, rtol=1e-14)
    with pytest.raises(ValueError, match="missing parameters"):
        law.predict({"E": 1.0}, N=1e9, D=1e10)
    with pytest.raises(ValueError, match="missing \\['D'\\]"):
        law.predict(TRUE["chinchilla"], N=1e9)


def _naive_schedule_features(eta, decay):
    """Tissue et al. 2024 Eqs. 1-3 as literal double sums (peak-normalized, no credit before the peak)."""
    eta = np.asarray(eta, float) / max(eta)
    peak = int(np.argmax(eta))
    S1, S2 = [], []
    for s in range(1, len(eta) + 1):
        S1.append(eta[:s].sum())
        total = 0.0
        for i in range(1, s + 1):
            for k in range(1, i + 1):
                if k - 1 > peak:       # step k's drop eta_{k-1} - eta_k counts only after the peak step
                    total += (eta[k - 2] - eta[k - 1]) * decay ** (i - k)
        S2.append(total)
    return np.array(S1), np.array(S2)


def test_schedule_features():
    steps = np.arange(1, 61)
    # constant lr: S1 counts tokens, no annealing area
    S1, S2 = schedule_features(np.full(60, 3e-3), steps, tokens_per_step=100.0)
    np.testing.assert_allclose(S1, steps * 100.0)
    np.testing.assert_allclose(S2, 0.0)
    # warmup, plateau, cosine decay: equals the literal double sum of the paper's definition
    eta = np.concatenate([np.linspace(0.1, 1.0, 10), np.ones(20), 0.1 + 0.45 * (1 + np.cos(np.linspace(0, np.pi, 30)))]) * 2e-3
    S1, S2 = schedule_features(eta, steps, decay=0.9)
    n1, n2 = _naive_schedule_features(eta, 0.9)
    np.testing.assert_allclose(S1, n1, rtol=1e-12)
    np.testing.assert_allclose(S2, n2, rtol=1e-10, atol=1e-12)
    assert np.all(S2[:30] == 0) and np.all(np.diff(S2[30:]) > 0)
    # a single drop of 0.5 at step 6 with decay 0.5: momentum m = 0.5, 0.25, 0.125, ...; S2 its running sum
    eta = np.r_[np.ones(5), 0.5 * np.ones(5)]
    _, S2 = schedule_features(eta, np.arange(1, 11), decay=0.5)
    np.testing.assert_allclose(S2, [0, 0, 0, 0, 0, 0.5, 0.75, 0.875, 0.9375, 0.96875])
    with pytest.raises(ValueError, match="steps must be integers"):
        schedule_features(eta, [0, 3])
    with pytest.raises(ValueError, match="decay"):
        schedule_features(eta, [3], decay=1.0)
    with pytest.raises(ValueError, match="finite and non-negative"):
        schedule_features(np.r_[eta, np.nan], [3])


def _isoflop_table(budgets, sizes_per_budget=9, p=TRUE["chinchilla"]):
    """Final points of isoFLOP sweeps around the true optimum of a chinchilla law (no noise)."""
    law = get_law("chinchilla")
    rows = []
    a, b = p["alpha"], p["beta"]
    G = (a * p["A"] / (b * p["B"])) ** (1 / (a + b))
    for C in budgets:
        n_star = G * (C / 6) ** (b / (a + b))
        for N in n_star * np.geomspace(0.25, 4.0, sizes_per_budget):
            D = C / (6 * N)
            rows.append({"run": f"C{C:.0e}-N{N:.3e}", "N": N, "D": D, "C": C, "step": 1,
                         "loss": law.predict(p, N=N, D=D)[0]})
    return pd.DataFrame(rows), G, b / (a + b)


def test_isoflop_approach2_recovers_the_allocation_exponent():
    budgets = np.geomspace(1e18, 1e21, 5)
    table, G, a_true = _isoflop_table(budgets)
    res = isoflop_approach2(table, budgets)
    assert res.a == pytest.approx(a_true, abs=0.01)
    assert res.b == pytest.approx(1 - a_true, abs=0.01)
    np.testing.assert_allclose(res.N_opt, G * (budgets / 6) ** a_true, rtol=0.1)
    assert np.all(res.n_runs == 9)


def test_isoflop_approach1_envelope_of_curves():
    # constant-lr runs whose loss along the curve is the law at D = tokens so far
    law = get_law("chinchilla")
    p = TRUE["chinchilla"]
    rows = []
    for N in np.geomspace(1e7, 1e10, 13):
        D = np.geomspace(1e8, 1e12, 60)
        for step, (d, loss) in enumerate(zip(D, law.predict(p, N=np.full_like(D, N), D=D)), start=1):
            rows.append({"run": f"N{N:.2e}", "N": N, "D": d, "C": 6 * N * d, "step": step, "loss": loss})
    table = pd.DataFrame(rows)
    budgets = np.geomspace(1e18, 1e21, 6)
    res = isoflop_approach1(table, budgets)
    a_true = p["beta"] / (p["alpha"] + p["beta"])
    assert res.a == pytest.approx(a_true, abs=0.06)      # coarse: the envelope picks one of 13 sizes
    assert len(res.best_run) == 6 and all(res.best_run)
    # the envelope is the lowest loss any of the 13 runs reaches at that compute (up to interpolation)
    sizes = np.geomspace(1e7, 1e10, 13)
    exact = np.array([min(law.predict(p, N=N, D=C / (6 * N))[0] for N in sizes if 1e8 <= C / (6 * N) <= 1e12)
                      for C in budgets])
    np.testing.assert_allclose(res.loss_opt, exact, rtol=2e-3)
    with pytest.raises(ValueError, match="missing \\['run'\\]"):
        isoflop_approach1(table.drop(columns="run"), budgets)
    # Approach 2 reading the same curves at each budget (constant lr: no annealing bias here)
    res2 = isoflop_approach2(table, budgets, final_only=False)
    assert res2.a == pytest.approx(a_true, abs=0.03) and np.all(res2.n_runs >= 3)
    # final points only: each run ends at its own compute (6 N 1e12), so a budget sees just that run
    ends = 6 * np.geomspace(1e7, 1e10, 13)[:4] * 1e12
    res1f = isoflop_approach1(table, ends, final_only=True, rtol=0.05)
    assert np.all(res1f.n_runs == 1)
    assert list(res1f.best_run) == [f"N{N:.2e}" for N in np.geomspace(1e7, 1e10, 13)[:4]]


def test_analysis_fitting_modules_import_without_torch():
    import subprocess
    import sys

    code = ("import sys; import analysis.laws, analysis.fitting, analysis.uncertainty, analysis.predict, "
            "analysis.isoflop, analysis.fitresult, analysis.objective, analysis.schedule, analysis.kernels, "
            "analysis.plateau, analysis.checked, analysis.select, analysis.rundirs, analysis.calibrate, analysis.cli, "
            "analysis.report, analysis.backtest, analysis.load, analysis.plots, analysis.console, analysis.tables; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
