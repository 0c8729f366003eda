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


def ladder(law: str, params: dict, noise: float, rng, sizes=SIZES) -> pd.DataFrame:
    N, D = (a.ravel() for a in np.meshgrid(sizes, BUDGETS, indexing="ij"))
    loss = get_law(law).predict(params, N=N, D=D) * np.exp(noise * rng.standard_normal(N.size))
    return pd.DataFrame({"run": [f"r{i}" for i in range(N.size)], "N": N, "D": D, "C": 6 * N * D, "step": 1,
                         "final": True, "loss": loss})


SIMS = 48


def _coverage(truth_law, truth, noise, sims=SIMS, seed=0, levels=(0.5, 0.9), sizes=SIZES):
    """Over `sims` simulated ladders, the fraction whose interval for the target covers a fresh noisy target
    run: {level: calibrated coverage}, the 90% bootstrap band's coverage, and the median 90% calibrated
    width relative to the loss. Cheap fits (one start, 40 bootstrap refits) keep a simulation near 0.3 s."""
    rng = np.random.default_rng(seed)
    actual0 = float(get_law(truth_law).predict(truth, **TARGET)[0])
    inside = {lv: [] for lv in levels}
    inside_boot, widths = [], []
    for _ in range(sims):
        table = ladder(truth_law, truth, noise, rng, sizes)
        r = fit(table, "kaplan", bootstrap=40, n_starts=1)
        err = extrapolation_error(table, r, n_starts=1)
        ext = 6 * TARGET["N"] * TARGET["D"] / table["C"].max()
        actual = actual0 * np.exp(noise * rng.standard_normal())
        for lv in levels:
            _, lo, hi, _ = calibrated_interval(r, err, extrapolation=ext, level=lv, **TARGET)
            inside[lv].append(lo[0] <= actual <= hi[0])
            if lv == 0.9:
                widths.append((hi[0] - lo[0]) / actual)
        _, blo, bhi = r.predict_interval(0.9, **TARGET)
        inside_boot.append(blo[0] <= actual <= bhi[0])
    return {lv: float(np.mean(v)) for lv, v in inside.items()}, float(np.mean(inside_boot)), float(np.median(widths))


def binomial_band(level: float, n: int = SIMS, alpha: float = 0.001) -> tuple[float, float]:
    """The coverages a calibrated interval of `level` shows over n independent simulations, but for a
    chance of `alpha`: the central 1 - alpha range of Binomial(n, level) / n."""
    from scipy.stats import binom
    return float(binom.ppf(alpha / 2, n, level)) / n, float(binom.isf(alpha / 2, n, level)) / n


def test_the_binomial_band_is_not_trivially_wide():
    lo, hi = binomial_band(0.5)
    assert 0.2 < lo < 0.3 and 0.7 < hi < 0.8
    lo, hi = binomial_band(0.9)
    assert 0.7 < lo < 0.75 and hi == 1.0      # 48 of 48 is a plausible outcome at 90%: the lower end does the work


@pytest.mark.slow
def test_misspecified_law_bootstrap_undercovers_calibrated_interval_covers():
    """Kaplan's form fitted to ladders drawn from a law with an irreducible loss, forecast 12x out: the
    bootstrap band (parameter uncertainty only) misses far more often than 10% of the time; the calibrated
    90% interval covers as often as a calibrated interval would. (24 simulations: a misspecified fit is
    slow to converge, and the bootstrap's miss is far outside even this wider band.)"""
    cal, boot, width = _coverage("chinchilla", CHIN, noise=0.002, sims=24, levels=(0.9,))
    lo, hi = binomial_band(0.9, n=24)
    assert boot < lo
    assert lo <= cal[0.9] <= hi
    # and it is not uselessly wide: about 0.23 of the loss with the normal quantile, 0.33 with the t(3)
    # quantile a four-size ladder now takes (analysis.calibrate.interval_dof), which here over-covers
    assert width < 0.36


@pytest.mark.slow
def test_well_specified_law_keeps_the_interval_near_nominal():
    """The right law, forecast 12x out from a ladder of eight sizes: 50% and 90% calibrated intervals cover at
    their nominal rates, within the binomial band of 48 simulations (at 50% the band is two-sided: an interval
    far too wide fails). Eight sizes, not the demo's four: the interval takes Student-t with the sizes less one
    degrees of freedom (`analysis.calibrate.interval_dof`), and with four sizes and the right law its 50%
    interval covers about 75% of the time (69% with the normal quantile); that price buys coverage on real
    four-size ladders, whose errors beyond the ladder the normal quantile understated
    (benchmarks/recipe/README.md, section (11))."""
    cal, _, width = _coverage("kaplan", KAP, noise=0.004, seed=2, sizes=np.geomspace(SIZES[0], SIZES[-1], 8))
    for level in (0.5, 0.9):
        lo, hi = binomial_band(level)
        assert lo <= cal[level] <= hi, (level, cal[level], (lo, hi))
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
    lo, hi, _, ext, _ = stored_interval(r, N=far["N"].to_numpy(), D=far["D"].to_numpy())
    actual = far["loss"].to_numpy()
    assert ext.min() >= 32
    assert np.mean((lo <= actual) & (actual <= hi)) >= 0.9
    assert np.median((hi - lo) / 2 / actual) < 0.15
