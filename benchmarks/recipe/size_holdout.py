"""Size-holdout backtests: a ladder's law fitted without its largest model size, forecasting that size's runs.

The calibrated interval's growth rate k comes from rollout backtests at compute cutoffs
(`analysis.calibrate`). On a WSD-branch ladder every such cutoff keeps the short runs of every size
and forecasts their long runs, so those backtests extrapolate in tokens only, while a target
forecast extrapolates in size as well (`benchmarks/recipe/README.md` section (28)). This script
measures the other kind: the law the preset fits (auto's choice on the whole ladder, refitted on the
smaller sizes with the same rows selected) forecasts the final loss of each run of the largest size.
It prints, per ladder, the rollout k and the size-holdout errors, to set beside that ladder's target
misses, and with `--cutoffs` the rollout backtests k was measured on, per cutoff (the model sizes
its training runs have, its forecasts' distances x = ln(C / C_cutoff) and errors):

    python benchmarks/recipe/size_holdout.py OUT/wiki15/seed15/ladder text-cpu OUT/synth38/seed38/ladder cpu --cutoffs

A measurement for choosing an interval rule, not a rule: a ladder of four sizes gives one such fit.
`corner_holdout` is the backtest most like a target forecast, extrapolating in size and tokens at once:
the runs of the smaller sizes at the shorter budgets forecast the largest size's longest runs.
`benchmarks/recipe/ladder_ranks.py` sets both beside many ladders' target misses (section (29)).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def size_holdout(rows: pd.DataFrame, law: str, select: str | None = None) -> pd.DataFrame:
    """Fit `law` on the rows of every model size but the largest and forecast each largest-size run's final
    point: one row per such run with N, D, C, actual, predicted, e = ln(actual / predicted) and x = ln(C / the
    largest C fitted)."""
    n_max = rows["N"].max()
    train, held = rows[rows["N"] < n_max], rows[rows["N"] == n_max]
    if train["N"].nunique() < 2 or held.empty:
        raise ValueError(f"a size-holdout backtest needs at least three model sizes, got {rows['N'].nunique()}")
    return _forecast_finals(train, held, law, select)


def _forecast_finals(train: pd.DataFrame, held: pd.DataFrame, law: str, select: str | None) -> pd.DataFrame:
    """`law` fitted on `train`, forecasting the final point of each run in `held`: run, N, D, C, actual,
    predicted, e = ln(actual / predicted) and x = ln(C / the largest C fitted)."""
    from analysis.backtest import covariates_for
    from analysis.fitting import fit

    result = fit(train, law, select=select)
    finals = held.loc[held.groupby("run")["C"].idxmax()]
    predicted = np.asarray(result.predict(**covariates_for(finals, law)), float)
    actual = finals["loss"].to_numpy(float)
    return pd.DataFrame({"run": finals["run"].to_numpy(), "N": finals["N"].to_numpy(float),
                         "D": finals["D"].to_numpy(float), "C": finals["C"].to_numpy(float),
                         "actual": actual, "predicted": predicted, "e": np.log(actual / predicted),
                         "x": np.log(finals["C"].to_numpy(float) / float(train["C"].max()))})


def corner_holdout(rows: pd.DataFrame, law: str, select: str | None = None) -> pd.DataFrame:
    """Fit `law` on the runs below the largest model size and below the longest final tokens, and forecast the
    final point of each run at both the largest size and the longest tokens: one row per such run with N, D, C,
    actual, predicted, e = ln(actual / predicted) and x = ln(C / the largest C fitted), the forecast's distance
    in the units of the calibrated interval's (`analysis.calibrate`)."""
    runs = rows.groupby("run").agg(N=("N", "first"), D=("D", "max"))
    n_max, d_max = runs["N"].max(), runs["D"].max()
    inner = runs[(runs["N"] < n_max) & (runs["D"] < d_max)]
    if inner["N"].nunique() < 2 or inner["D"].nunique() < 2:
        raise ValueError("a corner backtest needs at least three model sizes and three final token counts, got "
                         f"{runs['N'].nunique()} and {runs['D'].nunique()}")
    train = rows[rows["run"].isin(inner.index)]
    held = rows[rows["run"].isin(runs.index[(runs["N"] == n_max) & (runs["D"] == d_max)])]
    return _forecast_finals(train, held, law, select)


def main() -> None:
    from analysis.load import load_runs
    from testbed.demo import fit_ladder, fitted_rows, load_preset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="+", help="LADDER_DIR PRESET [LADDER_DIR PRESET ...]")
    ap.add_argument("--cutoffs", action="store_true", help="also the rollout backtests behind k, per cutoff")
    a = ap.parse_args()
    if len(a.pairs) % 2:
        ap.error("give ladder directories and presets in pairs")
    print("| ladder | law | rollout k | size-holdout forecasts | mean \\|e\\| | mean e |")
    print("|---|---|---|---|---|---|")
    backtests = []
    for ladder, name in zip(a.pairs[::2], a.pairs[1::2]):
        preset = load_preset(name)
        preset = dataclasses.replace(preset, fit=dataclasses.replace(preset.fit, bootstrap=0))
        table = load_runs(ladder)
        rows = fitted_rows(table, preset)
        whole = fit_ladder(table, preset)
        got = size_holdout(rows, whole.law, preset.fit.select)
        k = whole.extrapolation.k if whole.extrapolation is not None else float("nan")
        print(f"| {ladder} | {whole.law} | {k:.4f} | {len(got)} | {got['e'].abs().mean():.2%} | {got['e'].mean():+.2%} |")
        if whole.extrapolation is not None and whole.extrapolation.per_run is not None:
            compute, sizes = rows.groupby("run")["C"].max(), rows.groupby("run")["N"].first()
            for cut, g in whole.extrapolation.per_run.groupby("cutoff"):
                train = compute.index[compute <= cut]
                backtests.append(f"| {ladder} | {cut:.3g} | {len(train)} | {sizes[train].nunique()} | {len(g)} | "
                                 f"{g['x'].min():.2f}-{g['x'].max():.2f} | {g['e'].abs().mean():.2%} |")
    if a.cutoffs:
        print("\n| ladder | rollout cutoff C | training runs | their sizes | forecasts | x | mean \\|e\\| |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(backtests))


if __name__ == "__main__":
    main()
