"""How the calibrated interval measures its two terms: the run scatter s0 and the growth rate k.

For each case (data, compute cutoff, law) the law is fitted on the runs up to the cutoff
(with a bootstrap), the rollout backtests inside those runs give errors e at log distances x
(`analysis.calibrate.extrapolation_error`), and every held-out run is forecast. Each choice of
(s0, k) then gives each held-out run a 90% interval, sigma^2 = boot^2 + s0^2 + (k ln f)^2,
scored by distance f = C / C_fit: coverage (mean over cases of the fraction covered) and the
median half-width, beside the median |error|.

- s0: "rms" (the RMS of the fit's log residuals, the earlier choice) or "mad" (their
  normal-consistent median absolute deviation, `analysis.calibrate.run_scatter`).
- k: "normal" (maximum likelihood under normal errors, the earlier choice), "t" (under
  Student-t errors with 3 degrees of freedom, `analysis.calibrate.growth_rate`), "t-upper"
  (the upper end of that likelihood's one-standard-error interval).

Data: the 245 published Chinchilla points (cutoffs 1e19 to 1e21) and synthetic ladders
(12 sizes x 5 tokens-per-parameter ratios, 0.5% noise, 3 seeds, 2 cutoffs each) drawn from
Besiroglu et al.'s Chinchilla constants ("synthetic") and from a law whose size exponent
drifts with scale, which no law in the catalogue matches ("drift").

    python benchmarks/calibration_choice.py [--csv PATH]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from analysis.backtest import backtest, covariates_for, log_residuals, run_compute
from analysis.calibrate import extrapolation_error, growth_rate, run_scatter
from analysis.load import load, select_rows, use_n_convention

DEFAULT_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chinchilla_epoch" / "svg_extracted_data.csv"
Z = float(norm.ppf(0.95))
BINS = ((1, 4), (4, 16), (16, 64), (64, np.inf))


def case(table: pd.DataFrame, law: str, cut: float) -> dict:
    """What every choice needs: held-out errors and distances, bootstrap spread, residuals, backtests."""
    res = backtest(table, law, cutoff=cut, bootstrap=200)
    fit = res.fits[0]
    t = use_n_convention(table, fit.law_obj, fit.convention.get("N"))[0]
    compute = run_compute(t)
    train = t[t["run"].isin(compute.index[compute <= cut])]
    rows = select_rows(train, fit.settings["select"])
    bt = extrapolation_error(train, fit).per_run
    pr = res.per_run
    held = t[t["run"].isin(pr["run"])]
    finals = held.loc[held.groupby("run")["C"].idxmax()].set_index("run").loc[pr["run"]]
    logs = np.log(np.asarray(fit.predict_samples(**covariates_for(finals, law)), float))
    q16, q84 = np.percentile(logs, [15.865, 84.135], axis=0)
    c = (lambda r: r["C"]) if "C" in fit.law_obj.covariates else (lambda r: 6 * r["N"] * r["D"])
    return {"e": np.log(pr["actual"] / pr["predicted"]).to_numpy(), "boot": (q84 - q16) / 2,
            "f": np.maximum(c(finals).to_numpy(float) / float(c(rows).max()), 1.0),
            "resid": log_residuals(fit, train), "x": bt["x"].to_numpy(), "e_bt": bt["e"].to_numpy()}


def k_normal(x, e, s0):
    s0 = max(s0, 1e-6)

    def nll(k):
        v = s0 ** 2 + k ** 2 * x ** 2
        return 0.5 * float(np.sum(np.log(v) + e ** 2 / v))
    best = minimize_scalar(lambda lk: nll(np.exp(lk)), bounds=(np.log(1e-8), np.log(10.0)), method="bounded")
    return float(np.exp(best.x)) if best.fun < nll(0.0) - 1e-9 else 0.0


def k_t_upper(x, e, s0):
    s0 = max(s0, 1e-6)

    def nll(k):
        v = s0 ** 2 + k ** 2 * x ** 2
        return float(np.sum(0.5 * np.log(v) + 2.0 * np.log1p(e ** 2 / (3.0 * v))))
    grid = np.r_[0.0, np.geomspace(1e-5, 10.0, 1500)]
    f = np.array([nll(k) for k in grid])
    return float(grid[f - f.min() <= 0.5].max())


CHOICES = {"rms + normal (before)": ("rms", k_normal), "rms + t": ("rms", growth_rate),
           "mad + normal": ("mad", k_normal), "mad + t (chosen)": ("mad", growth_rate), "mad + t-upper": ("mad", k_t_upper)}


def score(cases: list[dict], s0_kind: str, k_fn) -> list[str]:
    per_bin = {b: ([], [], []) for b in BINS}
    for m in cases:
        r = m["resid"]
        s0 = float(np.sqrt(np.mean(r ** 2))) if s0_kind == "rms" else run_scatter(r)
        ok = np.isfinite(m["e_bt"]) & (m["x"] > 0)
        k = k_fn(m["x"][ok], m["e_bt"][ok], s0) if ok.any() else 0.0
        sigma = np.sqrt(m["boot"] ** 2 + s0 ** 2 + (k * np.log(m["f"])) ** 2)
        for b in BINS:
            sel = (m["f"] > b[0] if b[0] > 1 else m["f"] >= 1) & (m["f"] <= b[1])
            if sel.any():
                per_bin[b][0].append(np.mean(np.abs(m["e"][sel]) <= Z * sigma[sel]))
                per_bin[b][1].extend(Z * sigma[sel])
                per_bin[b][2].extend(np.abs(m["e"][sel]))
    return [f"{np.mean(c):.0%} / ±{np.median(w):.1%} ({np.median(e):.1%})" if c else "-"
            for c, w, e in per_bin.values()]


def synthetic(kind: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(1e7, 3e9, 12), 5)
    D = N * np.tile([4, 8, 16, 32, 64], 12)
    if kind == "synthetic":   # Besiroglu et al. 2024's Chinchilla refit
        loss = 1.817 + 482.0 * N ** -0.348 + 2085.4 * D ** -0.366
    else:                     # a size exponent that drifts from 0.30 to 0.36 over the sizes
        loss = 1.7 + 300.0 * N ** -(0.30 + 0.06 * np.log(N / 1e7) / np.log(300)) + 2085.4 * D ** -0.36
    return pd.DataFrame({"run": [f"r{i}" for i in range(N.size)], "N": N, "D": D, "C": 6 * N * D, "step": 1,
                         "final": True, "loss": loss * np.exp(0.005 * rng.standard_normal(N.size))})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(DEFAULT_CSV))
    args = ap.parse_args()
    laws = ("chinchilla", "kaplan", "compute")
    families = {"published": [case(load(args.csv, columns='N="Model Size",C="Training FLOP",loss=loss'), law, cut)
                              for cut in (1e19, 3e19, 1e20, 3e20, 1e21) for law in laws]}
    for kind in ("synthetic", "drift"):
        families[kind] = []
        for seed in (0, 1, 2):
            t = synthetic(kind, seed)
            budgets = np.sort(t["C"].unique())
            families[kind] += [case(t, law, float(cut)) for cut in (budgets[len(budgets) // 4], budgets[len(budgets) // 2])
                               for law in laws]
    head = ["data", "s0 + k"] + [f"f {lo}-{hi:g}x" if np.isfinite(hi) else f"f > {lo}x" for lo, hi in BINS]
    print("coverage / median half-width (median |error|) of the 90% calibrated interval, by distance f = C / C_fit\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, cases in families.items():
        for label, (s0_kind, k_fn) in CHOICES.items():
            print(f"| {name} ({len(cases)} cases) | {label} | " + " | ".join(score(cases, s0_kind, k_fn)) + " |")


if __name__ == "__main__":
    main()
