"""Calibrated forecast intervals: the ladder's own backtests widen the interval where the law is wrong."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.calibrate import calibrated_interval, extrapolation_error
from analysis.fitting import fit
from analysis.laws import get_law

SIZES = np.array([6e3, 1.4e4, 2.5e4, 5.5e4])       # the demo's ladder: 4 sizes x 3 token budgets
BUDGETS = np.array([4.1e5, 8.2e5, 1.64e6])
TARGET = {"N": 2.2e5, "D": 5.1e6}                  # 4x the largest size, about 12x its compute
# a law with an irreducible loss, which Kaplan's form (no irreducible term) can only approximate
CHIN = {"E": 2.6, "A": 60.0, "B": 900.0, "alpha": 0.45, "beta": 0.5}
KAP = {"Nc": 3e9, "Dc": 2e7, "alpha_N": 0.09, "alpha_D": 0.12}


def ladder(law: str, params: dict, noise: float, rng) -> pd.DataFrame:
    N, D = (a.ravel() for a in np.meshgrid(SIZES, BUDGETS, indexing="ij"))
    loss = get_law(law).predict(params, N=N, D=D) * np.exp(noise * rng.standard_normal(N.size))
    return pd.DataFrame({"run": [f"r{i}" for i in range(N.size)], "N": N, "D": D, "C": 6 * N * D, "step": 1,
                         "final": True, "loss": loss})


def _coverage(truth_law, truth, noise, sims, seed=0):
    """Fraction of simulated ladders whose 90% interval for the target covers a fresh noisy target run."""
    rng = np.random.default_rng(seed)
    actual0 = float(get_law(truth_law).predict(truth, **TARGET)[0])
    inside_cal, inside_boot, widths = [], [], []
    for _ in range(sims):
        table = ladder(truth_law, truth, noise, rng)
        r = fit(table, "kaplan", bootstrap=100, n_starts=2)
        err = extrapolation_error(table, r, n_starts=2)
        ext = 6 * TARGET["N"] * TARGET["D"] / table["C"].max()
        _, lo, hi, _ = calibrated_interval(r, err, extrapolation=ext, **TARGET)
        _, blo, bhi = r.predict_interval(**TARGET)
        actual = actual0 * np.exp(noise * rng.standard_normal())
        inside_cal.append(lo[0] <= actual <= hi[0])
        inside_boot.append(blo[0] <= actual <= bhi[0])
        widths.append((hi[0] - lo[0]) / actual)
    return np.mean(inside_cal), np.mean(inside_boot), np.median(widths)


def test_interval_is_wider_than_the_bootstrap_and_grows_with_extrapolation():
    rng = np.random.default_rng(1)
    table = ladder("chinchilla", CHIN, 0.004, rng)
    r = fit(table, "kaplan", bootstrap=100, n_starts=2)
    err = extrapolation_error(table, r, n_starts=2)
    assert err.n_forecasts >= 5 and err.k > 0 and err.s0 > 0
    p, blo, bhi = r.predict_interval(**TARGET)
    widths = []
    for ext in (1.0, 10.0, 100.0):
        point, lo, hi, sigma = calibrated_interval(r, err, extrapolation=ext, **TARGET)
        assert point[0] == pytest.approx(p[0]) and lo[0] < point[0] < hi[0]
        widths.append(hi[0] - lo[0])
    assert widths[0] < widths[1] < widths[2]
    assert widths[1] > bhi[0] - blo[0]


def test_misspecified_law_bootstrap_undercovers_calibrated_interval_covers():
    # Kaplan's form fitted to ladders drawn from a law with an irreducible loss, forecast 12x out:
    # the bootstrap band (parameter uncertainty only) misses; the calibrated interval should not
    cal, boot, width = _coverage("chinchilla", CHIN, noise=0.002, sims=16)
    assert boot <= 0.5
    assert cal >= 0.8
    assert width < 0.25      # and it is not uselessly wide


def test_well_specified_law_keeps_the_interval_near_nominal():
    cal, boot, width = _coverage("kaplan", KAP, noise=0.004, sims=16, seed=2)
    assert 0.75 <= cal <= 1.0
    assert width < 0.1


def test_refuses_a_mismatched_law_and_a_bad_level():
    rng = np.random.default_rng(0)
    table = ladder("kaplan", KAP, 0.003, rng)
    r = fit(table, "kaplan", bootstrap=50, n_starts=2)
    err = extrapolation_error(table, r, n_starts=2)
    other = fit(table, "chinchilla", bootstrap=0, n_starts=2)
    with pytest.raises(ValueError, match="measured for law 'kaplan'"):
        calibrated_interval(other, err, extrapolation=10.0, **TARGET)
    with pytest.raises(ValueError, match="level"):
        calibrated_interval(r, err, extrapolation=10.0, level=1.5, **TARGET)
    with pytest.raises(ValueError, match="no compute cutoff"):
        extrapolation_error(table.iloc[:4], fit(table.iloc[:4], "kaplan", n_starts=2), n_starts=2)


def test_run_scatter_is_not_set_by_the_few_runs_a_law_misfits():
    # a ladder with 0.3% run-to-run noise, plus four runs at 1 token per parameter that sit 6% above
    # the law (the lowest-ratio points of published grids behave like this)
    rng = np.random.default_rng(3)
    table = ladder("kaplan", KAP, 0.003, rng)
    N = SIZES
    low = pd.DataFrame({"run": [f"low{i}" for i in range(4)], "N": N, "D": N, "C": 6 * N * N, "step": 1,
                        "final": True, "loss": get_law("kaplan").predict(KAP, N=N, D=N) * 1.06})
    table = pd.concat([table, low], ignore_index=True)
    r = fit(table, "kaplan", bootstrap=0, n_starts=2)
    err = extrapolation_error(table, r, n_starts=2)
    rms = float(np.sqrt(np.mean((np.log(table["loss"]) - np.log(r.predict(N=table["N"], D=table["D"]))) ** 2)))
    assert err.s0 < 0.5 * rms          # the misfit runs would have set the RMS
    assert err.s0 < 0.01


PUBLISHED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chinchilla_epoch" / "svg_extracted_data.csv"


@pytest.mark.slow
@pytest.mark.skipif(not PUBLISHED.is_file(), reason="../shared/data not present")
@pytest.mark.parametrize("law", ["chinchilla", "kaplan"])
def test_the_calibrated_interval_covers_published_forecasts_32x_beyond_the_fit(law):
    """Fit the 87 published points up to 3e19 FLOPs (their backtests reach about 3x), forecast the
    points 32x to 430x beyond: the calibrated 90% interval covers them, and stays far narrower than
    the loss itself."""
    from analysis.calibrate import stored_interval, with_extrapolation_error
    from analysis.load import load

    table = load(PUBLISHED, columns='N="Model Size",C="Training FLOP",loss=loss')
    train = table[table["C"] <= 3e19]
    r = with_extrapolation_error(fit(train, law, bootstrap=100, n_starts=4), train)
    far = table[table["C"] >= 32 * (6 * train["N"] * train["D"]).max()]
    assert len(far) >= 30
    lo, hi, _, ext = stored_interval(r, N=far["N"].to_numpy(), D=far["D"].to_numpy())
    actual = far["loss"].to_numpy()
    assert ext.min() >= 32
    assert np.mean((lo <= actual) & (actual <= hi)) >= 0.9
    assert np.median((hi - lo) / 2 / actual) < 0.15
