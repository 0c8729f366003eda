"""Command lines of the analysis package: fit, predict, backtest, report.

`testbed fit|predict|backtest|report ...` and `python -m analysis fit|predict|backtest|report ...`
both land here. A bad input (unknown law, missing column, unreadable file)
exits with code 2 and one line naming the problem; nothing is written then.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import numpy as np

from train.contract import EXIT_BAD_INPUT


def _guard(prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
           argv: list[str] | None) -> int:
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit as e:   # argparse: --help exits 0, a usage error exits 2
        return int(e.code or 0)
    try:
        return body(args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="sweep/run directory, or a CSV/Parquet table")
    p.add_argument("--columns", default=None,
                   help='column mapping for tables, e.g. N="Model Size",C="Training FLOP",loss=loss')
    p.add_argument("--n-convention", choices=("total", "non_embedding"), default=None,
                   help="which parameter count is N (default: the law's)")
    p.add_argument("--include-failed", action="store_true", help="keep diverged/failed runs")
    p.add_argument("--include-partial", action="store_true", help="keep runs without a summary.json yet")
    p.add_argument("--min-tokens", type=float, default=None,
                   help="leave out rows with fewer training tokens D (e.g. eval points in a run's early plateau)")
    p.add_argument("--min-tokens-per-param", type=float, default=None,
                   help="leave out rows with D/N below this (e.g. the few lowest-ratio points of a published table)")


def _load(args: argparse.Namespace, law: str):
    from analysis.laws import get_law
    from analysis.load import load

    n_conv = args.n_convention or get_law(law).n_convention
    table = load(args.input, columns=args.columns, n_convention=n_conv,
                 include_failed=args.include_failed, include_partial=args.include_partial)
    return filter_rows(table, min_tokens=args.min_tokens, min_tokens_per_param=args.min_tokens_per_param)


def filter_rows(table, *, min_tokens: float | None = None, min_tokens_per_param: float | None = None):
    """The rows kept by the command line's row filters; an error names the filter that left nothing."""
    keep = np.ones(len(table), bool)
    for flag, value, cols in (("--min-tokens", min_tokens, ("D",)), ("--min-tokens-per-param", min_tokens_per_param,
                                                                       ("D", "N"))):
        if value is None:
            continue
        if not value >= 0:
            raise ValueError(f"{flag} must be a non-negative number, got {value}")
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise ValueError(f"{flag} needs column(s) {missing}, which the table lacks")
        got = table["D"].to_numpy(float) if flag == "--min-tokens" else \
            table["D"].to_numpy(float) / table["N"].to_numpy(float)
        keep &= got >= value
    if not keep.any():
        raise ValueError("the row filters (--min-tokens, --min-tokens-per-param) leave no rows")
    return table[keep] if not keep.all() else table


# ---------------------------------------------------------------------------
# fit

def fit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed fit", description="Fit a scaling law; print its constants and write the fit JSON.")
    _input_args(p)
    p.add_argument("--law", default="chinchilla", help="law name (chinchilla, kaplan, compute, overtrain, schedule, kaplan-schedule)")
    p.add_argument("--out", default="fit.json", help="where to write the fit result (JSON)")
    p.add_argument("--bootstrap", type=int, default=0, help="bootstrap replicates over runs (intervals); 0: none")
    p.add_argument("--level", type=float, default=0.95, help="interval level of the bootstrap intervals")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber threshold on log residuals")
    p.add_argument("--select", choices=("final", "all"), default="final",
                   help="final: each run's last eval; all: every eval point")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--starts", type=int, default=None, help="best grid starts polished by L-BFGS-B (default: the engine's)")
    p.add_argument("--calibrate", action="store_true",
                   help="also measure the law's extrapolation error by backtests on these runs (analysis.calibrate) "
                        "and store it, so `testbed predict` gives intervals that account for it")
    return p


def fit_main(argv: list[str] | None = None) -> int:
    return _guard("testbed fit", _fit, fit_parser(), argv)


def _fit(args: argparse.Namespace) -> int:
    from analysis.calibrate import stored_error, with_extrapolation_error
    from analysis.fitting import fit
    from analysis.laws import get_law

    get_law(args.law)  # unknown law: fail before loading anything
    table = _load(args, args.law)
    result = fit(table, args.law, delta=args.delta, bootstrap=args.bootstrap, seed=args.seed,
                 select=args.select, n_convention=args.n_convention, level=args.level, n_starts=args.starts)
    if args.calibrate:
        result = with_extrapolation_error(result, table, select=args.select, delta=args.delta,
                                          n_starts=args.starts)
    out = result.to_json(args.out)
    print_fit(result)
    stored = stored_error(result)
    if stored:
        err = stored[0]
        print(f"extrapolation error from {err.n_forecasts} backtest forecasts: run scatter s0 = {err.s0:.3%}, "
              f"growth k = {err.k:.3%} per unit ln(C / C_fit)")
    print(f"wrote {out}")
    return 0


def print_fit(result) -> None:
    """The parameter table (estimate, interval, bootstrap SE) with fit diagnostics, via rich."""
    from rich.console import Console
    from rich.table import Table

    has_samples = result.samples is not None and len(result.samples) > 1
    se = result.standard_errors() if has_samples else {}
    level = f"{result.interval_level:.0%} interval" if result.interval_level else "interval"
    table = Table(title=f"{result.law} (v{result.law_version}) on {result.n_points} points")
    for col in ("parameter", "estimate", level, "bootstrap SE"):
        table.add_column(col, justify="right" if col != "parameter" else "left")
    for name, value in result.params.items():
        iv = result.intervals.get(name)
        table.add_row(name, f"{value:.6g}", f"[{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "-",
                      f"{se[name]:.3g}" if name in se else "-")
    console = Console()
    console.print(table)
    status = "converged" if result.converged else "NOT converged"
    resid = ", ".join(f"{k} {v:.4g}" for k, v in result.residuals.items() if isinstance(v, (int, float)))
    console.print(f"objective {result.objective:.6g} ({status}); residuals: {resid}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


# ---------------------------------------------------------------------------
# predict

def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed predict", description="Predict the loss from a fit JSON, with an interval.")
    p.add_argument("fit", help="fit result JSON (from testbed fit)")
    p.add_argument("--N", type=float, default=None, help="parameters")
    p.add_argument("--D", type=float, default=None, help="training tokens")
    p.add_argument("--C", type=float, default=None, help="training FLOPs (with no N/D: compute-optimal allocation)")
    p.add_argument("--run", default=None, metavar="CONFIG",
                   help="a planned run's config (YAML/JSON, as for `testbed train`): forecast its whole eval curve "
                        "(needed by laws of the lr schedule, e.g. kaplan-schedule)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the --run config")
    p.add_argument("--level", type=float, default=0.9, help="interval level")
    p.add_argument("--json", action="store_true", help='print {"loss", "lower", "upper"} (plus derived N/D) as JSON')
    return p


def predict_main(argv: list[str] | None = None) -> int:
    return _guard("testbed predict", _predict, predict_parser(), argv)


def _predict(args: argparse.Namespace) -> int:
    from analysis.fitresult import FitResult

    for name in ("N", "D", "C"):
        v = getattr(args, name)
        if v is not None and not (v > 0 and v < float("inf")):
            raise ValueError(f"--{name} must be a positive number, got {v}")
    result = FitResult.from_json(args.fit)
    if args.run is not None or args.overrides:
        if args.run is None:
            raise ValueError(f"overrides {args.overrides} need --run CONFIG (the planned run they change)")
        if any(getattr(args, k) is not None for k in ("N", "D", "C")):
            raise ValueError("--run CONFIG [key=value ...] forecasts a planned run; give it without --N/--D/--C")
        return _print_run_forecast(result, args)
    out = predict_point(result, N=args.N, D=args.D, C=args.C, level=args.level)
    if args.json:
        print(json.dumps(out))
    else:
        band = (f"  [{out['lower']:.4g}, {out['upper']:.4g}] ({args.level:.0%}, {out['interval']})"
                if out["lower"] is not None
                else "  (no interval: the fit has no bootstrap samples; refit with --bootstrap)")
        where = ", ".join(f"{k}={out[k]:.4g}" for k in ("N", "D", "C") if k in out)
        print(f"{result.law}: loss at {where} = {out['loss']:.4f}{band}")
    return 0


def predict_point(result, *, N=None, D=None, C=None, level: float = 0.9) -> dict:
    """Loss (and interval) at N and D, or at compute C under the compute-optimal allocation.

    Returns {"loss", "lower", "upper", "interval"} plus N and D when they were derived from
    C (D = C / (6N)). Without bootstrap samples or a stored extrapolation error, lower and
    upper are None. A fit made with `--calibrate` gives the calibrated interval
    (`analysis.calibrate.calibrated_interval`; "interval": "calibrated", with the
    extrapolation factor C / C_fit and sigma); otherwise the bootstrap band ("bootstrap").
    """
    from analysis import predict as P

    derived: dict[str, float] = {}
    if "S1" in result.law_obj.covariates:
        raise ValueError(f"the {result.law} law reads the planned run's lr schedule, not N and D alone: "
                         "use --run CONFIG [key=value ...]")
    if N is not None and D is not None and C is None:
        pred = P.loss_at(result, level=level, N=N, D=D)
    elif C is not None and N is None and D is None:
        if tuple(result.law_obj.covariates) == ("C",):
            pred = P.loss_at_compute(result, C, level=level)
        else:
            alloc = P.compute_optimal(result, C, level=level)
            pred = alloc.loss
            derived = {"N": _scalar(alloc.N_opt.point), "D": _scalar(alloc.D_opt.point)}
    else:
        raise ValueError("give --N and --D (loss at a model size and token count) or --C alone "
                         "(loss at the compute-optimal allocation)")
    lo, hi = _scalar(pred.lower), _scalar(pred.upper)
    has_band = np.isfinite(lo) and np.isfinite(hi)
    out = {"loss": _scalar(pred.point), "lower": lo if has_band else None, "upper": hi if has_band else None,
           "interval": "bootstrap" if has_band else None, **derived}
    from analysis.calibrate import stored_interval

    n, d = derived.get("N", N), derived.get("D", D)
    cov = {"C": C} if tuple(result.law_obj.covariates) == ("C",) else {"N": n, "D": d}
    calibrated = stored_interval(result, level=level, **cov)
    if calibrated is not None:
        lo, hi, sigma, ext = calibrated
        out.update(lower=_scalar(lo), upper=_scalar(hi), interval="calibrated", extrapolation=_scalar(ext),
                   sigma=_scalar(sigma))
    return out


def _print_run_forecast(result, args) -> int:
    from train.config import load_config

    from analysis.predict import forecast_run

    cfg = load_config(args.run, args.overrides).resolved()
    out = forecast_run(result, cfg, level=args.level)
    if args.json:
        print(json.dumps(out))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{result.law}: forecast of {cfg.run_id()} (N={out['N']:.4g}, D={out['D']:.4g})")
    for col in ("step", "tokens", "loss", f"{args.level:.0%} interval ({out['interval'] or 'none'})"):
        t.add_column(col, justify="right")
    c = out["curve"]
    for s, tok, p, lo, hi in zip(c["steps"], c["tokens"], c["loss"], c["lower"], c["upper"]):
        if p is not None:
            t.add_row(str(s), f"{tok:.4g}", f"{p:.4f}", f"[{lo:.4f}, {hi:.4f}]" if lo is not None else "-")
    Console().print(t)
    print(f"{result.law}: final loss {out['loss']:.4f}"
          + (f"  [{out['lower']:.4f}, {out['upper']:.4f}] ({args.level:.0%}, {out['interval']})"
             if out["lower"] is not None else "  (no interval: the fit has no bootstrap samples)"))
    print(f"note: {out['note']}")
    return 0


def _scalar(a) -> float:
    return float(np.asarray(a, dtype=float).ravel()[0])


# ---------------------------------------------------------------------------
# backtest

def backtest_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed backtest",
                                description="Fit on the small runs, predict the largest ones, score the forecast.")
    _input_args(p)
    p.add_argument("--law", default="chinchilla", help="law to backtest")
    p.add_argument("--laws", default=None, help="comma-separated laws: print a leaderboard instead")
    p.add_argument("--cutoff", type=float, default=None, help="compute cutoff in FLOPs (default: hold out the top ~25%%)")
    p.add_argument("--holdout-frac", type=float, default=0.25, help="fraction of compute budgets held out")
    p.add_argument("--rollout", action="store_true", help="successive cutoffs instead of one")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for the intervals (0: none)")
    p.add_argument("--level", type=float, default=0.9, help="interval level for coverage")
    p.add_argument("--select", choices=("final", "all"), default="final")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--starts", type=int, default=None, help="best grid starts polished by L-BFGS-B per fit")
    p.add_argument("--plot", default=None, help="write predicted-vs-actual PNG here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def backtest_main(argv: list[str] | None = None) -> int:
    return _guard("testbed backtest", _backtest, backtest_parser(), argv)


def _backtest(args: argparse.Namespace) -> int:
    from analysis import backtest as B
    from analysis.laws import get_law

    laws = [s.strip() for s in args.laws.split(",") if s.strip()] if args.laws else [args.law]
    for name in laws:
        get_law(name)
    table = _load(args, laws[0])
    common = dict(level=args.level, bootstrap=args.bootstrap, seed=args.seed, select=args.select, n_starts=args.starts)
    if args.laws:
        board = B.leaderboard(table, laws, cutoff=args.cutoff, holdout_frac=args.holdout_frac, **common)
        if args.json:
            print(json.dumps(B._jsonable(board.to_dict("records"))))
        else:
            _print_frame(board, "backtest leaderboard")
        return 0
    if args.rollout:
        res = B.rollout(table, args.law, **common)
    else:
        res = B.backtest(table, args.law, cutoff=args.cutoff, holdout_frac=args.holdout_frac, **common)
    if args.plot:
        from analysis.plots import plot_backtest
        plot_backtest(res, args.plot)
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        _print_frame(res.per_run.drop(columns=["cutoff"]) if len(res.cutoffs) == 1 else res.per_run,
                     f"{res.law}: held-out runs (cutoffs {', '.join(f'{c:.3g}' for c in res.cutoffs)} FLOPs)")
        print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in res.summary.items()))
    return 0


def _print_frame(frame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in frame.columns:
        t.add_column(str(c))
    for row in frame.itertuples(index=False):
        t.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=200).print(t)


# ---------------------------------------------------------------------------
# report

def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed report", description="Write a Markdown report with fits, backtests and plots.")
    p.add_argument("input", help="sweep directory (or a CSV/Parquet table)")
    p.add_argument("--out", default=None, help="report path (default: INPUT/report.md, or beside a table)")
    p.add_argument("--laws", default="chinchilla,kaplan,compute", help="comma-separated laws to fit and backtest")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for intervals")
    p.add_argument("--columns", default=None, help="column mapping for tables")
    p.add_argument("--starts", type=int, default=None, help="best grid starts polished by L-BFGS-B per fit")
    p.add_argument("--min-tokens", type=float, default=None,
                   help="leave out rows with fewer training tokens D (e.g. eval points in a run's early plateau)")
    p.add_argument("--min-tokens-per-param", type=float, default=None,
                   help="leave out rows with D/N below this")
    return p


def report_main(argv: list[str] | None = None) -> int:
    return _guard("testbed report", _report, report_parser(), argv)


def _report(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    laws = tuple(s.strip() for s in args.laws.split(",") if s.strip())
    path = write_report(args.input, args.out, laws=laws, bootstrap=args.bootstrap, columns=args.columns,
                        n_starts=args.starts, min_tokens=args.min_tokens,
                        min_tokens_per_param=args.min_tokens_per_param)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------

COMMANDS = {"fit": fit_main, "predict": predict_main, "backtest": backtest_main, "report": report_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m analysis {{{'|'.join(COMMANDS)}}} ...", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else EXIT_BAD_INPUT
    return COMMANDS[argv[0]](argv[1:])

