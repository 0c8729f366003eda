"""A Markdown report of a sweep: runs, fitted laws with intervals, backtests, forecasts, plots.

`write_report(input)` loads the runs (or a published table), fits each law with
bootstrap intervals and measures its extrapolation error (`analysis.calibrate`),
backtests the laws on shared splits, forecasts a run with 100x the largest compute
(and a given planned run, `target`), and writes `report.md` with its figures in a
sibling folder, linked by relative path so the folder can be moved. Every forecast
is `analysis.predict.forecast`'s, as `testbed predict` prints it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_LAWS = ("chinchilla", "kaplan", "compute", "kaplan-schedule", "schedule")
MAX_RUN_ROWS = 60


def default_report_path(input_path: str | Path) -> Path:
    p = Path(input_path)
    return p / "report.md" if p.is_dir() else p.with_name(f"{p.stem}_report.md")


def write_report(input_path: str | Path, out_path: str | Path | None = None, laws: Sequence[str] | None = None,
                 *, bootstrap: int = 200, level: float = 0.9, columns: dict | str | None = None,
                 forecast_factor: float = 100.0, seed: int = 0, n_starts: int | None = None,
                 min_tokens: float | None = None, min_tokens_per_param: float | None = None,
                 skip_first: float | None = None, where: Sequence[str] | None = None,
                 n_convention: str | None = None, include_failed: bool = False, include_partial: bool = False,
                 target=None) -> Path:
    """Write the report and its PNGs; return the report's path.

    `input_path`: a sweep or run directory, or a CSV/Parquet table (`columns`
    maps its column names). Figures go to `<report stem>_files/` next to it.
    `laws`: default `DEFAULT_LAWS`, less the laws of the lr schedule on a table without a
    schedule. `n_starts` is passed to every fit; the row filters and `n_convention` act as in
    `testbed fit`. `target`: a planned run's config (`train.config.RunConfig`) to forecast.
    """
    from analysis.laws import get_law
    from analysis.load import filter_rows, load

    if bootstrap < 1:
        raise ValueError(f"bootstrap must be >= 1 for a report with intervals, got {bootstrap}")
    chosen = tuple(DEFAULT_LAWS if laws is None else laws)
    if not chosen:
        raise ValueError("no laws given to report on")
    for name in chosen:
        get_law(name)
    table = filter_rows(load(input_path, columns=columns, n_convention=n_convention, include_failed=include_failed,
                             include_partial=include_partial),
                        min_tokens=min_tokens, min_tokens_per_param=min_tokens_per_param, skip_first=skip_first,
                        where=where)
    if laws is None:
        chosen = tuple(n for n in chosen if set(get_law(n).covariates) <= set(table.columns) | {"M"})
    out = Path(out_path) if out_path else default_report_path(input_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig_dir = out.with_name(f"{out.stem}_files")
    fig_dir.mkdir(exist_ok=True)

    md: list[str] = [f"# Scaling report: {Path(input_path).name}", ""]
    md += [f"Source: `{input_path}`: {table['run'].nunique()} runs, {len(table)} eval points. "
           f"Loss is validation cross-entropy in nats/token; intervals are {level:.0%} percentile "
           f"intervals from {bootstrap} bootstrap resamples over runs.", ""]
    md += _runs_section(table, chosen, n_convention)
    md += _data_figures(table, fig_dir, out.parent)
    fits = {}
    for name in chosen:
        section, fit = _law_section(table, name, bootstrap, level, seed, n_starts, n_convention, fig_dir, out.parent)
        md += section
        if fit is not None:
            fits[name] = fit
    md += _backtest_section(table, chosen, bootstrap, level, seed, n_starts, n_convention, fig_dir, out.parent)
    md += _forecast_section(table, fits, forecast_factor, level)
    if target is not None:
        md += _target_section(fits, target, level)
    out.write_text("\n".join(md) + "\n")
    return out


# ---------------------------------------------------------------------------
# sections

def _runs_section(table: pd.DataFrame, laws: Sequence[str], requested: str | None) -> list[str]:
    from analysis.laws import get_law
    from analysis.load import n_convention

    finals = table[table["final"]] if table["final"].any() else table.loc[table.groupby("run")["D"].idxmax()]
    convs = {name: n_convention(table, get_law(name), requested) for name in laws}
    both = {"N_total", "N_non_embedding"} <= set(finals.columns)
    if not both:
        n_cols, n_text = ["N"], "N as the table gives it"
    elif len({c for c, _ in convs.values()}) == 1:
        conv, why = next(iter(convs.values()))
        n_cols = [f"N_{conv}"]
        n_text = f"N counts {conv} parameters ({why}), as every law below reads it"
    else:
        n_cols = ["N_total", "N_non_embedding"]
        n_text = "each law reads its own parameter count: " + ", ".join(f"{n} {c}" for n, (c, _) in convs.items())
    cols = [c for c in ("run", "kind", "width", "depth", *n_cols, "D", "C", "loss", "schedule", "lr_peak", "status")
            if c in finals.columns]
    finals = finals.sort_values(["C", "run"])
    md = ["## Runs", "", f"Final point of each run ({n_text}; D tokens; C training FLOPs, convention "
          f"{_conventions(table)}).", ""]
    floors = table["loss_floor"].dropna().unique() if "loss_floor" in table.columns else []
    if len(floors) == 1:
        md += [f"The data's exact loss floor (Bayes-optimal loss on the validation tokens) is {floors[0]:.4g} "
               "nats/token: a fitted irreducible loss E can be checked against it.", ""]
    shown = finals.head(MAX_RUN_ROWS)
    md += _md_table(shown[cols])
    if len(finals) > len(shown):
        md += ["", f"... and {len(finals) - len(shown)} more runs."]
    return md + [""]


def _data_figures(table: pd.DataFrame, fig_dir: Path, base: Path) -> list[str]:
    from analysis import plots

    md = ["## Curves", ""]
    if table.groupby("run").size().max() > 1:
        md.append(_img(plots.plot_curves(table, fig_dir / "curves.png"), base, "loss curves by model size"))
    try:
        md.append(_img(plots.plot_isoflop(table, fig_dir / "isoflop.png"), base, "isoFLOP profiles"))
    except ValueError as e:
        md.append(f"No isoFLOP profile: {e}.")
    return md + [""]


def _law_section(table, name, bootstrap, level, seed, n_starts, n_convention, fig_dir, base):
    from analysis import plots
    from analysis.calibrate import calibrated
    from analysis.fitting import fit
    from analysis.laws import get_law

    law = get_law(name)
    md = [f"## Law `{name}`", "", f"{law.formula}  ", f"({law.citation}; fitted on "
          f"{'every eval point' if law.fitted_on == 'all' else 'each run' + chr(39) + 's final point'})", ""]
    try:
        result = fit(table, name, bootstrap=bootstrap, level=level, seed=seed, n_convention=n_convention,
                     n_starts=n_starts)
    except (ValueError, RuntimeError) as e:
        return md + [f"Not fitted: {e}", ""], None
    result = calibrated(result, table, n_starts=n_starts)
    md[3] = md[3][:-1] + f"; N: {result.convention['N']} parameters, {result.convention.get('N_source')})"
    se = result.standard_errors()
    rows = [{"parameter": p, "estimate": v, f"{level:.0%} interval": _interval(result.intervals.get(p)),
             "bootstrap SE": se.get(p, np.nan)} for p, v in result.params.items()]
    md += _md_table(pd.DataFrame(rows))
    resid = ", ".join(f"{k} = {_fmt(v)}" for k, v in result.residuals.items())
    md += ["", f"Objective {_fmt(result.objective)} ({'converged' if result.converged else 'NOT converged'}) "
           f"on {result.n_points} points; residuals: {resid}."]
    err = result.extrapolation
    if err is not None:
        md += ["", f"Extrapolation error measured by {err.n_forecasts} rollout backtests inside these runs: run "
               f"scatter s0 = {err.s0:.2%}, growth k = {err.k:.2%} per unit ln(C / C_fit); interval quantile "
               f"{err.quantile_name()}."]
    md += [f"- warning: {w}" for w in result.warnings]
    md.append("")
    try:
        md.append(_img(plots.plot_fit(table, result, fig_dir / f"fit_{name}.png", level=level), base, f"{name} fit"))
        md.append(_img(plots.plot_residuals(table, result, fig_dir / f"residuals_{name}.png"), base,
                       f"{name} residuals"))
    except ValueError as e:
        md.append(f"No fit figure: {e}.")
    return md + [""], result


def _backtest_section(table, laws, bootstrap, level, seed, n_starts, n_convention, fig_dir, base) -> list[str]:
    from analysis import backtest as B
    from analysis import plots

    md = ["## Backtest", "", "Each law is fitted on the runs whose final compute is at most the cutoff and "
          "predicts the final loss of the larger runs: relative error, ARE over their curves, and whether "
          f"the actual loss falls in the {level:.0%} parameter interval (bootstrap band of the law's mean) and "
          "in the predictive interval (that band plus the scatter of the fitted points). The board is ranked by "
          f"`far_err` ({B.RANKING}), over rollout backtests on cutoffs shared by every law.", ""]
    try:
        cutoff = B.default_cutoff(table)
    except ValueError as e:
        return md + [f"No backtest: {e}.", ""]
    board, results = B.leaderboard_results(table, laws, cutoff=cutoff, bootstrap=bootstrap, level=level, seed=seed,
                                           n_starts=n_starts, n_convention=n_convention)
    md += [f"Cutoff: C <= {cutoff:.3g} FLOPs.", ""]
    keep = [c for c in ("law", "far_err", "rollout_forecasts", "rollout_max_extrapolation", "n_train_runs",
                        "n_holdout_runs", "mean_abs_rel_err", "max_abs_rel_err", "mean_are_curve", "coverage",
                        "coverage_predictive", "max_extrapolation", "error") if c in board.columns]
    md += _md_table(board[keep])
    ok = board[board["error"] == ""] if "error" in board else board
    if len(ok):
        best = str(ok["law"].iloc[0])
        res = results[best]
        md += ["", f"Held-out runs under the best law, `{best}`:", ""]
        md += _md_table(res.per_run[["run", "N", "D", "C", "extrapolation", "actual", "predicted", "lower",
                                     "upper", "pred_lower", "pred_upper", "rel_err", "covered",
                                     "covered_predictive"]])
        md += ["", _img(plots.plot_backtest(res, fig_dir / "backtest.png"), base, "predicted vs actual")]
    return md + [""]


def _forecast_section(table, fits: dict, factor: float, level: float) -> list[str]:
    from analysis.predict import forecast

    c_target = float(table["C"].max()) * factor
    md = ["## Forecast", "", f"Loss of a compute-optimal run with {factor:g}x the largest compute "
          f"(C = {c_target:.3g} FLOPs), {level:.0%} intervals: the bootstrap band (parameter uncertainty "
          "over runs) and the calibrated interval, which adds the run scatter and the extrapolation error "
          "the law made in rollout backtests inside these runs, grown with the distance "
          "(`analysis.calibrate`; what `testbed fit --calibrate` stores).", ""]
    rows, notes = [], []
    for name, result in fits.items():
        if "S1" in result.law_obj.covariates:
            notes.append(f"- `{name}`: a law of the lr schedule forecasts a planned run, not a compute budget "
                         "(`testbed report --target CONFIG`)")
            continue
        try:
            fc = forecast(result, {"C": c_target}, level=level)
        except ValueError as e:
            notes.append(f"- `{name}`: no forecast at this compute: {str(e).splitlines()[0]}")
            continue
        p = fc.point(0)
        rows.append({"law": name, "loss": p["loss"],
                     "bootstrap interval": _interval((fc.bootstrap_lower[0], fc.bootstrap_upper[0])),
                     "calibrated interval": _interval((p["lower"], p["upper"])) if fc.interval == "calibrated" else "-",
                     "N": p.get("N", np.nan), "D": p.get("D", np.nan)})
        if fc.interval != "calibrated":
            notes.append(f"- `{name}`: no calibrated interval (its extrapolation error could not be measured)")
    if not rows:
        return md + ["No law could forecast at this compute.", ""] + notes + [""]
    return md + _md_table(pd.DataFrame(rows)) + ([""] + notes if notes else []) + [""]


def _target_section(fits: dict, target, level: float) -> list[str]:
    from analysis.predict import forecast

    md = ["## Target run", "", f"Forecast of the planned run `{target.run_id()}` (width {target.model.width}, "
          f"depth {target.model.depth}, {target.train.tokens:,} tokens, schedule {target.schedule.kind}) from its "
          f"config, as `testbed predict --run` gives it; {level:.0%} intervals.", ""]
    rows, notes = [], []
    for name, result in fits.items():
        try:
            fc = forecast(result, target, level=level).run()
        except ValueError as e:
            notes.append(f"- `{name}`: {str(e).splitlines()[0]}")
            continue
        rows.append({"law": name, "final loss": fc["loss"], "interval": _interval((fc["lower"], fc["upper"])),
                     "kind": fc["interval"], "bootstrap band": _interval((fc["bootstrap_lower"], fc["bootstrap_upper"])),
                     "N": fc["N"], "D": fc["D"]})
    md += _md_table(pd.DataFrame(rows)) if rows else ["No law could forecast this run."]
    return md + ([""] + notes if notes else []) + [""]


# ---------------------------------------------------------------------------
# Markdown helpers (a few lines; pandas' to_markdown would add the tabulate dependency)

def _md_table(frame: pd.DataFrame) -> list[str]:
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return [head, rule, *body]


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "-"
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def _interval(iv) -> str:
    if iv is None or iv[0] is None:
        return "-"
    return f"[{_fmt(iv[0])}, {_fmt(iv[1])}]"


def _img(path: Path, base: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(base).as_posix()})"


def _conventions(table: pd.DataFrame) -> str:
    if "flop_convention" not in table.columns:
        return "unknown"
    return ", ".join(sorted(str(c) for c in table["flop_convention"].unique()))
