"""Figures of the tidy table, fits and backtests (matplotlib, Agg backend, PNG files).

Each function takes a table / fit / backtest result and an output path, writes
one PNG and returns its path. No pyplot global state is used (figures are
created with `matplotlib.figure.Figure`), so plotting is safe in threads and
never opens a window.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import cm, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def _figure(ncols: int = 1, width: float = 6.0, height: float = 4.2):
    fig = Figure(figsize=(width * ncols, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _n_colours(values: np.ndarray):
    """A log-scaled colour map over model sizes N."""
    norm = colors.LogNorm(vmin=float(np.min(values)), vmax=float(max(np.max(values), np.min(values) * 1.0001)))
    return norm, cm.ScalarMappable(norm=norm, cmap="viridis")


def plot_curves(table: pd.DataFrame, path: str | Path, x: str = "D") -> Path:
    """Loss vs tokens (or FLOPs with x="C") of every run, log-log, coloured by N; final points marked."""
    if x not in ("D", "C"):
        raise ValueError(f"x must be D or C, got {x!r}")
    fig, (ax,) = _figure()
    norm, mappable = _n_colours(table["N"].to_numpy(float))
    for run, rows in table.sort_values("step").groupby("run", sort=False):
        c = mappable.to_rgba(rows["N"].iloc[0])
        ax.plot(rows[x], rows["loss"], "-", color=c, lw=1.2, alpha=0.85)
        fin = rows[rows["final"]] if "final" in rows else rows.iloc[-1:]
        ax.plot(fin[x], fin["loss"], "o", color=c, ms=4)
    ax.set(xscale="log", yscale="log", xlabel="tokens D" if x == "D" else "training FLOPs C",
           ylabel="validation loss (nats/token)", title=f"loss curves of {table['run'].nunique()} runs")
    fig.colorbar(mappable, ax=ax, label="parameters N")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_isoflop(table: pd.DataFrame, path: str | Path, budgets: Sequence[float] | None = None,
                 n_budgets: int = 5) -> Path:
    """IsoFLOP profiles: loss vs N at fixed compute, with a parabola in log N per budget.

    The loss at budget C is read off each run's curve by interpolation in log C
    (Porian et al. 2024); for runs whose schedule has not annealed at that point
    the reading is pessimistic, so prefer runs that end at C (their final points).
    The minimum of each parabola is N_opt(C) (Hoffmann et al. 2022, Approach 2).
    """
    rows = isoflop_rows(table, budgets, n_budgets)
    fig, (ax,) = _figure()
    bmap = cm.ScalarMappable(norm=colors.LogNorm(rows["budget"].min(), rows["budget"].max() * 1.0001), cmap="plasma")
    for budget, grp in rows.groupby("budget"):
        c = bmap.to_rgba(budget)
        ax.plot(grp["N"], grp["loss"], "o", color=c, ms=4)
        if grp["N"].nunique() >= 3:
            logn = np.log(grp["N"].to_numpy(float))
            coef = np.polyfit(logn, grp["loss"].to_numpy(float), 2)
            xs = np.linspace(logn.min(), logn.max(), 100)
            ax.plot(np.exp(xs), np.polyval(coef, xs), "-", color=c, lw=1)
            if coef[0] > 0:
                n_opt = -coef[1] / (2 * coef[0])
                if logn.min() <= n_opt <= logn.max():
                    ax.plot(np.exp(n_opt), np.polyval(coef, n_opt), "*", color=c, ms=11, mec="k")
    ax.set(xscale="log", xlabel="parameters N", ylabel="loss at budget", title="isoFLOP profiles (★ = parabola minimum)")
    fig.colorbar(bmap, ax=ax, label="compute budget C (FLOPs)")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def isoflop_rows(table: pd.DataFrame, budgets: Sequence[float] | None = None, n_budgets: int = 5) -> pd.DataFrame:
    """Each run's loss at each budget it reaches (interpolated in log C, log loss): columns budget, run, N, loss."""
    if budgets is None:
        lo = table.groupby("run")["C"].min().max()   # every run has started by here ...
        hi = table.groupby("run")["C"].max().max()
        lo = max(lo, hi / 1e3)
        budgets = np.geomspace(lo, hi, n_budgets) if hi > lo else [hi]
    out = []
    for run, rows in table.sort_values("C").groupby("run"):
        c, loss = np.log(rows["C"].to_numpy(float)), np.log(rows["loss"].to_numpy(float))
        for b in budgets:
            if c[0] <= np.log(b) <= c[-1]:
                out.append({"budget": float(b), "run": run, "N": float(rows["N"].iloc[0]),
                            "loss": float(np.exp(np.interp(np.log(b), c, loss)))})
    if not out:
        raise ValueError("no run's curve reaches any of the compute budgets")
    return pd.DataFrame(out)


def plot_fit(table: pd.DataFrame, fit, path: str | Path, extrapolate: float = 100.0, level: float = 0.9) -> Path:
    """Data and the fitted law, extended `extrapolate`x beyond the data, with the bootstrap band.

    (N, D) laws: loss vs D, one fitted line per model size plus the largest size
    scaled up; a compute law: loss vs C; (N, S1, S2) laws fitted on curves: each run's
    eval points with the law along its schedule. Other laws: predicted vs observed.
    """
    from analysis.backtest import covariates_for

    law = fit.law_obj
    has_band = fit.samples is not None and len(fit.samples) > 0
    data = table[table["final"]] if fit.settings.get("select", "final") == "final" else table
    fig, (ax,) = _figure()
    if set(law.covariates) == {"N", "D"}:
        norm, mappable = _n_colours(np.r_[data["N"].to_numpy(float), data["N"].max() * extrapolate])
        sizes = np.unique(data["N"].to_numpy(float))
        if len(sizes) > 6:
            sizes = sizes[np.unique(np.round(np.linspace(0, len(sizes) - 1, 6)).astype(int))]
        d_grid = np.geomspace(data["D"].min(), data["D"].max() * extrapolate, 200)
        for n in [*sizes, data["N"].max() * extrapolate]:
            _line_with_band(ax, fit, d_grid, {"N": n, "D": d_grid}, mappable.to_rgba(n), has_band, level,
                            dashed=n > data["N"].max())
        ax.scatter(data["D"], data["loss"], c=mappable.to_rgba(data["N"].to_numpy(float)), s=14, zorder=3)
        fig.colorbar(mappable, ax=ax, label="parameters N (dashed: beyond the data)")
        ax.set(xscale="log", yscale="log", xlabel="tokens D")
    elif tuple(law.covariates) == ("C",):
        c_grid = np.geomspace(data["C"].min(), data["C"].max() * extrapolate, 200)
        _line_with_band(ax, fit, c_grid, {"C": c_grid}, "C1", has_band, level, dashed=False)
        ax.axvline(data["C"].max(), color="grey", ls=":", lw=1)
        ax.scatter(data["C"], data["loss"], s=14, color="C0", zorder=3)
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs C")
    elif tuple(law.covariates) == ("N", "S1", "S2") and "run" in data.columns:
        # a whole-curve law: every run's eval points and the law along that run's schedule
        norm, mappable = _n_colours(data["N"].to_numpy(float))
        for _, g in data.sort_values("D").groupby("run", sort=False):
            colour = mappable.to_rgba(float(g["N"].iloc[0]))
            ax.scatter(g["D"], g["loss"], color=colour, s=10, zorder=3)
            cov = covariates_for(g, law.name)
            if has_band:
                point, lo, hi = fit.predict_interval(level=level, **cov)
                ax.fill_between(g["D"], lo, hi, color=colour, alpha=0.2, lw=0)
            else:
                point = fit.predict(**cov)
            ax.plot(g["D"], point, "-", color=colour, lw=1.0)
        fig.colorbar(mappable, ax=ax, label="parameters N")
        ax.set(xscale="log", yscale="log", xlabel="tokens D (each run: its eval points and the law along its schedule)")
    else:
        pred = fit.predict(**covariates_for(data, law.name))
        ax.scatter(data["loss"], pred, s=14)
        lims = [min(data["loss"].min(), pred.min()), max(data["loss"].max(), pred.max())]
        ax.plot(lims, lims, "k--", lw=1)
        ax.set(xlabel="observed loss", ylabel="fitted loss")
    ax.set(ylabel=ax.get_ylabel() or "loss", title=f"{fit.law} fit" + (f" with {level:.0%} bootstrap band" if has_band else ""))
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _line_with_band(ax, fit, x, cov, colour, has_band, level, dashed):
    if has_band:
        point, lo, hi = fit.predict_interval(level=level, **cov)
        ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)
    else:
        point = fit.predict(**cov)
    ax.plot(x, point, "--" if dashed else "-", color=colour, lw=1.2)


def plot_residuals(table: pd.DataFrame, fit, path: str | Path) -> Path:
    """Log residuals log(L) - log(L̂) of the fitted points against N and against D (or C)."""
    from analysis.backtest import covariates_for

    data = table[table["final"]] if fit.settings.get("select", "final") == "final" else table
    resid = np.log(data["loss"].to_numpy(float)) - np.log(fit.predict(**covariates_for(data, fit.law)))
    fig, axes = _figure(ncols=2, width=4.6)
    for ax, x in zip(axes, ("N", "D" if "D" in data else "C")):
        ax.scatter(data[x], resid, s=12)
        ax.axhline(0.0, color="k", lw=1)
        ax.set(xscale="log", xlabel=x, ylabel="log residual", title=f"{fit.law}: residuals vs {x}")
        ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_backtest(result, path: str | Path) -> Path:
    """Predicted vs actual final loss of the held-out runs, interval bars, coloured by extrapolation factor."""
    pr = result.per_run
    fig, (ax,) = _figure()
    emap = cm.ScalarMappable(norm=colors.LogNorm(max(pr["extrapolation"].min(), 1.0),
                                                 max(pr["extrapolation"].max(), 1.0001)), cmap="magma_r")
    c = emap.to_rgba(pr["extrapolation"].to_numpy(float))
    for lo, hi, colour, width in (("pred_lower", "pred_upper", "lightgrey", 3), ("lower", "upper", "dimgrey", 1)):
        if lo in pr and pr[lo].notna().all():   # predictive interval (wide, light) under the parameter interval
            yerr = np.vstack([pr["predicted"] - pr[lo], pr[hi] - pr["predicted"]]).clip(min=0)
            ax.errorbar(pr["actual"], pr["predicted"], yerr=yerr, fmt="none", ecolor=colour, elinewidth=width, zorder=1)
    ax.scatter(pr["actual"], pr["predicted"], c=c, s=22, zorder=2, edgecolors="k", linewidths=0.4)
    lims = [min(pr["actual"].min(), pr["predicted"].min()), max(pr["actual"].max(), pr["predicted"].max())]
    ax.plot(lims, lims, "k--", lw=1)
    fig.colorbar(emap, ax=ax, label="extrapolation (held-out C / cutoff)")
    s = result.summary
    ax.set(xlabel="actual final loss", ylabel="predicted final loss",
           title=f"{result.law}: mean |rel err| {s['mean_abs_rel_err']:.2%}, coverage {s['coverage']:.0%} "
                 f"(param) / {s.get('coverage_predictive', float('nan')):.0%} (predictive)")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
