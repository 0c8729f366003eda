"""Figures of the tidy table, fits and backtests (matplotlib, Agg backend, PNG files).

Each function takes a table / fit / backtest result and an output path, writes
one PNG and returns its path. No pyplot global state is used (figures are
created with `matplotlib.figure.Figure`), so plotting is safe in threads and
never opens a window.

Every figure uses constrained layout (nothing clipped), labels its axes with
units, gives every line, band and bar a legend entry, and labels log axes
readably: powers of ten where the data span decades, a few plain numbers
(`readable_log_axis`) where they span less, never a crowd of minor labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import cm, colors, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

DPI = 110
LOSS_LABEL = "loss (nats/token)"
LABELS = {"N": "parameters N", "D": "tokens D", "C": "training FLOPs C"}


def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.4):
    fig = Figure(figsize=(width * ncols, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Figure, path: str | Path) -> Path:
    """Readable ticks on every log axis (colour bars too), read off the final view limits; write the PNG."""
    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() == "log":
                readable_log_axis(axis, *lim)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def readable_log_axis(axis, lo: float, hi: float, max_ticks: int = 6) -> None:
    """Log-axis ticks a reader can read: decades when the data span several, else a few round values.

    Matplotlib labels a log axis that spans about a decade with minor labels at every multiple
    ("2x10^5 3x10^5 4x10^5 ...", overlapping) or majors like "4.4x10^0". Here minor ticks stay
    unlabelled; the labelled ticks are the densest of the sequences 1, 1-3, 1-2-5 (times powers of
    ten) that gives at most `max_ticks` values in the range, or, for a range narrower than that,
    a few round linear values, all in compact notation (200k, 1.5M, 3.2, 1.3e+22).
    """
    lo, hi = float(min(lo, hi)), float(max(lo, hi))
    if not (lo > 0 and np.isfinite(hi)):
        return
    axis.set_minor_formatter(ticker.NullFormatter())
    if hi / lo >= 10 ** 2.5:
        axis.set_major_locator(ticker.LogLocator(base=10, numticks=max_ticks + 1))
        axis.set_major_formatter(ticker.LogFormatterSciNotation())
        return
    values: list[float] = []
    decades = 10.0 ** np.arange(np.floor(np.log10(lo)) - 1, np.ceil(np.log10(hi)) + 1)
    for mults in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0)):
        cand = sorted(m * d for d in decades for m in mults if lo <= m * d <= hi)
        if len(cand) > max_ticks:
            break
        values = cand
    if len(values) < 3:   # less than about half a decade: round values on a linear grid
        linear = ticker.MaxNLocator(nbins=max_ticks - 1, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        values = [v for v in linear if lo <= v <= hi and v > 0] or [lo, hi]
    axis.set_major_locator(ticker.FixedLocator(_spaced(axis, values, lo, hi)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: compact_number(v)))


def _spaced(axis, values: list[float], lo: float, hi: float) -> list[float]:
    """`values` thinned so that neighbours sit far enough apart on the drawn axis for their labels.

    On a log axis the upper values of a linear sequence crowd together; a label such as "800k" needs
    about half an inch beside its neighbour, a row of text about a quarter inch above it.
    """
    fig = axis.axes.figure
    box = axis.axes.get_position()
    inches = box.width * fig.get_figwidth() if axis.axis_name == "x" else box.height * fig.get_figheight()
    gap = 0.55 if axis.axis_name == "x" else 0.3
    span = np.log(hi / lo) if hi > lo else 1.0
    kept: list[float] = []
    for v in values:
        if not kept or np.log(v / kept[-1]) / span * inches >= gap:
            kept.append(v)
    return kept


def compact_number(v: float) -> str:
    """200k, 1.5M, 3G, 12T for counts; 2.5 or 0.03 for small values; 1.3e+22 beyond tera."""
    if v == 0:
        return "0"
    if 1e3 <= abs(v) < 1e15:
        power = int(np.floor(np.log10(abs(v)) / 3))
        return f"{v / 10 ** (3 * power):.3g}{'kMGT'[power - 1]}"
    return f"{v:.3g}"


def _log_xy(ax, log_y: bool = False) -> None:
    """Log x (and log y); their ticks are made readable when the figure is saved (`_save`)."""
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")


def _n_colours(values: np.ndarray):
    """A log-scaled colour map over model sizes N."""
    norm = colors.LogNorm(vmin=float(np.min(values)), vmax=float(max(np.max(values), np.min(values) * 1.0001)))
    return norm, cm.ScalarMappable(norm=norm, cmap="viridis")


def _colorbar(fig, mappable, ax, label: str) -> None:
    fig.colorbar(mappable, ax=ax, label=label)


def _fitted_rows(table: pd.DataFrame, fit) -> pd.DataFrame:
    """The rows the fit used, N counted as the fit counted it."""
    from analysis.load import select_rows, use_n_convention

    table = use_n_convention(table, fit.law_obj, fit.convention.get("N"))[0]
    return select_rows(table, fit.settings.get("select") or fit.law_obj.fitted_on)


def plot_curves(table: pd.DataFrame, path: str | Path, x: str = "D") -> Path:
    """Loss vs tokens (or FLOPs with x="C") of every run, log-log, coloured by N; final points marked."""
    if x not in ("D", "C"):
        raise ValueError(f"x must be D or C, got {x!r}")
    fig, (ax,) = _figure()
    norm, mappable = _n_colours(table["N"].to_numpy(float))
    for _run, rows in table.sort_values("step").groupby("run", sort=False):
        c = mappable.to_rgba(rows["N"].iloc[0])
        ax.plot(rows[x], rows["loss"], "-", color=c, lw=1.2, alpha=0.85)
        fin = rows[rows["final"]] if "final" in rows else rows.iloc[-1:]
        ax.plot(fin[x], fin["loss"], "o", color=c, ms=4)
    _log_xy(ax, log_y=True)
    ax.set(xlabel=LABELS[x], ylabel=LOSS_LABEL, title=f"loss curves of {table['run'].nunique()} runs")
    ax.legend(handles=[Line2D([], [], color="grey", lw=1.2, label="a run's eval points"),
                       Line2D([], [], color="grey", marker="o", ls="", ms=4, label="its final point")],
              loc="upper right", fontsize=8)
    _colorbar(fig, mappable, ax, LABELS["N"])
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def plot_isoflop(table: pd.DataFrame, path: str | Path, budgets: Sequence[float] | None = None,
                 n_budgets: int = 5) -> Path:
    """IsoFLOP profiles: loss vs N at fixed compute, with a parabola in log N per budget.

    The loss at budget C is read off each run's curve by interpolation in log C
    (Porian et al. 2024); for runs whose schedule has not annealed at that point
    the reading is pessimistic, so prefer runs that end at C (their final points).
    The minimum of each parabola is N_opt(C) (Hoffmann et al. 2022, Approach 2): a star
    where it lies among the sizes run, an open triangle at the edge where it lies beyond.
    """
    rows = isoflop_rows(table, budgets, n_budgets)
    fig, (ax,) = _figure()
    bmap = cm.ScalarMappable(norm=colors.LogNorm(rows["budget"].min(), rows["budget"].max() * 1.0001), cmap="plasma")
    marks = {"star": 0, "edge": 0, "parabola": 0}
    for budget, grp in rows.groupby("budget"):
        c = bmap.to_rgba(budget)
        ax.plot(grp["N"], grp["loss"], "o", color=c, ms=4)
        if grp["N"].nunique() < 3:
            continue
        logn = np.log(grp["N"].to_numpy(float))
        coef = np.polyfit(logn, grp["loss"].to_numpy(float), 2)
        xs = np.linspace(logn.min(), logn.max(), 100)
        ax.plot(np.exp(xs), np.polyval(coef, xs), "-", color=c, lw=1)
        marks["parabola"] += 1
        if coef[0] <= 0:
            continue
        x_star = -coef[1] / (2 * coef[0])
        if logn.min() <= x_star <= logn.max():
            ax.plot(np.exp(x_star), np.polyval(coef, x_star), "*", color=c, ms=13, mec="k", zorder=4)
            marks["star"] += 1
        else:
            edge = logn.min() if x_star < logn.min() else logn.max()
            ax.plot(np.exp(edge), np.polyval(coef, edge), "^" if x_star > edge else "v", mfc="none", mec=c,
                    ms=9, zorder=4)
            marks["edge"] += 1
    handles = [Line2D([], [], color="grey", marker="o", ls="", ms=4, label="a run's loss at the budget")]
    if marks["parabola"]:
        handles.append(Line2D([], [], color="grey", lw=1, label="parabola in log N (budgets with >= 3 sizes)"))
    if marks["star"]:
        handles.append(Line2D([], [], color="grey", marker="*", ls="", ms=12, mec="k", label="its minimum: N_opt(C)"))
    if marks["edge"]:
        handles.append(Line2D([], [], color="grey", marker="^", ls="", mfc="none", ms=9,
                              label="minimum beyond the sizes run"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    _log_xy(ax)
    ax.set(xlabel=LABELS["N"], ylabel=f"{LOSS_LABEL} at the budget", title="isoFLOP profiles")
    _colorbar(fig, bmap, ax, "compute budget C (FLOPs)")
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def isoflop_rows(table: pd.DataFrame, budgets: Sequence[float] | None = None, n_budgets: int = 5) -> pd.DataFrame:
    """Each run's loss at each budget it reaches (interpolated in log C, log loss): columns budget, run, N, loss.

    A table of final points only (one row per run, as published isoFLOP grids are) is read as
    such a grid: runs whose compute lies within 15% of each other form one budget.
    """
    if budgets is None and table.groupby("run").size().max() == 1:
        return _final_point_budgets(table, n_budgets)
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


def _final_point_budgets(table: pd.DataFrame, n_budgets: int) -> pd.DataFrame:
    t = table.sort_values("C")
    lnc = np.log(t["C"].to_numpy(float))
    group = np.r_[0, np.cumsum(np.diff(lnc) > np.log(1.15))]
    groups = [g for _, g in t.groupby(group) if g["N"].nunique() >= 3]
    if not groups:
        raise ValueError("no compute budget has runs of 3 or more sizes (an isoFLOP profile needs them)")
    picks = np.unique(np.round(np.linspace(0, len(groups) - 1, min(n_budgets, len(groups)))).astype(int))
    return pd.concat([pd.DataFrame({"budget": float(np.exp(np.log(g["C"]).mean())), "run": g["run"].to_numpy(),
                                    "N": g["N"].to_numpy(float), "loss": g["loss"].to_numpy(float)})
                      for g in (groups[i] for i in picks)], ignore_index=True)


def plot_fit(table: pd.DataFrame, fit, path: str | Path, extrapolate: float = 100.0, level: float = 0.9) -> Path:
    """Data and the fitted law, extended `extrapolate`x beyond the data, with the bootstrap band.

    (N, D) laws: loss vs D, one fitted line per model size plus the largest size
    scaled up; a compute law: loss vs C; (N, S1, S2) laws fitted on curves: each run's
    eval points with the law along its schedule. Other laws: predicted vs observed.
    Bands are drawn for the largest size and the extrapolation only, so they do not
    pile up into grey.
    """
    from analysis.backtest import covariates_for

    law = fit.law_obj
    has_band = fit.samples is not None and len(fit.samples) > 0
    data = _fitted_rows(table, fit)
    band_label = f"{level:.0%} bootstrap band"
    fig, (ax,) = _figure()
    handles = [Line2D([], [], color="grey", marker="o", ls="", ms=4, label="fitted points")]
    if set(law.covariates) == {"N", "D"}:
        n_max, n_far = data["N"].max(), data["N"].max() * extrapolate
        norm, mappable = _n_colours(np.r_[data["N"].to_numpy(float), n_far])
        sizes = np.unique(data["N"].to_numpy(float))
        if len(sizes) > 6:
            sizes = sizes[np.unique(np.round(np.linspace(0, len(sizes) - 1, 6)).astype(int))]
        d_grid = np.geomspace(data["D"].min(), data["D"].max() * extrapolate, 200)
        for n in [*sizes, n_far]:
            _line_with_band(ax, fit, d_grid, {"N": n, "D": d_grid}, mappable.to_rgba(n), has_band and n >= n_max,
                            level, dashed=n > n_max)
        ax.scatter(data["D"], data["loss"], c=mappable.to_rgba(data["N"].to_numpy(float)), s=14, zorder=3)
        _colorbar(fig, mappable, ax, LABELS["N"])
        _log_xy(ax, log_y=True)
        ax.set(xlabel=LABELS["D"])
        handles += [Line2D([], [], color="grey", lw=1.2, label="the law at a fitted size"),
                    Line2D([], [], color="grey", lw=1.2, ls="--", label=f"{extrapolate:g}x the largest size")]
    elif tuple(law.covariates) == ("C",):
        c_grid = np.geomspace(data["C"].min(), data["C"].max() * extrapolate, 200)
        _line_with_band(ax, fit, c_grid, {"C": c_grid}, "C1", has_band, level, dashed=False)
        ax.axvline(data["C"].max(), color="grey", ls=":", lw=1)
        ax.scatter(data["C"], data["loss"], s=14, color="C0", zorder=3)
        _log_xy(ax, log_y=True)
        ax.set(xlabel=LABELS["C"])
        handles += [Line2D([], [], color="C1", lw=1.2, label="the fitted frontier"),
                    Line2D([], [], color="grey", ls=":", lw=1, label="largest fitted compute")]
    elif tuple(law.covariates) == ("N", "S1", "S2") and "run" in data.columns:
        # a whole-curve law: every run's eval points and the law along that run's schedule
        norm, mappable = _n_colours(data["N"].to_numpy(float))
        n_max = data["N"].max()
        for _, g in data.sort_values("D").groupby("run", sort=False):
            colour = mappable.to_rgba(float(g["N"].iloc[0]))
            ax.scatter(g["D"], g["loss"], color=colour, s=10, zorder=3)
            cov = covariates_for(g, law.name)
            if has_band and g["N"].iloc[0] >= n_max:
                point, lo, hi = fit.predict_interval(level=level, **cov)
                ax.fill_between(g["D"], lo, hi, color=colour, alpha=0.25, lw=0)
            else:
                point = fit.predict(**cov)
            ax.plot(g["D"], point, "-", color=colour, lw=1.0)
        _colorbar(fig, mappable, ax, LABELS["N"])
        _log_xy(ax, log_y=True)
        ax.set(xlabel="tokens D (the law read along each run's lr schedule)")
        handles.append(Line2D([], [], color="grey", lw=1, label="the law along a run"))
    else:
        pred = fit.predict(**covariates_for(data, law.name))
        ax.scatter(data["loss"], pred, s=14)
        lims = [min(data["loss"].min(), pred.min()), max(data["loss"].max(), pred.max())]
        ax.plot(lims, lims, "k--", lw=1)
        ax.set(xlabel=f"observed {LOSS_LABEL}", ylabel=f"fitted {LOSS_LABEL}")
        handles = [Line2D([], [], color="C0", marker="o", ls="", ms=4, label="fitted points"),
                   Line2D([], [], color="k", ls="--", lw=1, label="fitted = observed")]
        has_band = False
    if has_band:
        where = (" (largest size and beyond)" if set(law.covariates) == {"N", "D"} else
                 " (largest size)" if "N" in law.covariates else "")
        handles.append(Patch(color="grey", alpha=0.3, label=band_label + where))
    ax.set(ylabel=ax.get_ylabel() or LOSS_LABEL, title=f"{fit.law} fit")
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def _line_with_band(ax, fit, x, cov, colour, band, level, dashed) -> None:
    """The law's line, and its bootstrap band when `band`."""
    if band:
        point, lo, hi = fit.predict_interval(level=level, **cov)
        ax.fill_between(x, lo, hi, color=colour, alpha=0.25, lw=0)
    else:
        point = fit.predict(**cov)
    ax.plot(x, point, "--" if dashed else "-", color=colour, lw=1.2)


def plot_residuals(table: pd.DataFrame, fit, path: str | Path) -> Path:
    """Log residuals ln(L / L̂) of the fitted points against N and against D (or C)."""
    from analysis.backtest import covariates_for

    data = _fitted_rows(table, fit)
    resid = np.log(data["loss"].to_numpy(float)) - np.log(fit.predict(**covariates_for(data, fit.law)))
    fig, axes = _figure(ncols=2, width=4.8)
    for ax, x in zip(axes, ("N", "D" if "D" in data else "C")):
        ax.scatter(data[x], resid, s=12, label="fitted points")
        ax.axhline(0.0, color="k", lw=1, label="the law")
        _log_xy(ax)
        ax.set(xlabel=LABELS[x], ylabel="log residual ln(L / L_fit)", title=f"{fit.law}: residuals vs {x}")
        ax.legend(fontsize=8, loc="best")
        ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def plot_backtest(result, path: str | Path) -> Path:
    """Predicted vs actual final loss of the held-out runs, interval bars, coloured by extrapolation factor."""
    pr = result.per_run
    level = f"{result.level:.0%}"
    fig, (ax,) = _figure()
    ext = pr["extrapolation"].to_numpy(float)
    emap = cm.ScalarMappable(norm=colors.LogNorm(max(ext.min(), 1.0), max(ext.max(), 1.0001)), cmap="magma_r")
    handles = []
    for lo, hi, colour, width, label in (("pred_lower", "pred_upper", "lightgrey", 4, f"{level} predictive interval"),
                                         ("lower", "upper", "dimgrey", 1.5, f"{level} parameter interval")):
        if lo in pr and pr[lo].notna().all():   # the predictive interval (wide, light) under the parameter one
            yerr = np.vstack([pr["predicted"] - pr[lo], pr[hi] - pr["predicted"]]).clip(min=0)
            ax.errorbar(pr["actual"], pr["predicted"], yerr=yerr, fmt="none", ecolor=colour, elinewidth=width, zorder=1)
            handles.append(Line2D([], [], color=colour, lw=width, label=label))
    ax.scatter(pr["actual"], pr["predicted"], c=emap.to_rgba(ext), s=24, zorder=2, edgecolors="k", linewidths=0.4)
    lims = [min(pr["actual"].min(), pr["predicted"].min()), max(pr["actual"].max(), pr["predicted"].max())]
    ax.plot(lims, lims, "k--", lw=1)
    handles = [Line2D([], [], color="grey", marker="o", mec="k", ls="", ms=5, label="held-out run"),
               Line2D([], [], color="k", ls="--", lw=1, label="predicted = actual"), *handles]
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    _colorbar(fig, emap, ax, "extrapolation (held-out C / cutoff)")
    s = result.summary
    ax.set(xlabel=f"actual final {LOSS_LABEL}", ylabel=f"predicted final {LOSS_LABEL}",
           title=f"{result.law}: backtest of {len(pr)} held-out runs")
    ax.text(0.98, 0.02, f"mean |rel err| {s['mean_abs_rel_err']:.2%}\ncoverage {s['coverage']:.0%} (parameter), "
            f"{s.get('coverage_predictive', float('nan')):.0%} (predictive)", transform=ax.transAxes, ha="right",
            va="bottom", fontsize=8, bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8, "lw": 0.5})
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
