"""Command lines of the analysis package: fit, predict, backtest, report.

`testbed fit|predict|backtest|report ...` and `python -m analysis fit|predict|backtest|report ...`
both land here. Each command parses its flags, calls a library entry point
(`analysis.fitting.fit`, `analysis.predict.forecast`, `analysis.backtest`,
`analysis.report.write_report`) and prints. A bad input (unknown law, missing column,
unreadable file, malformed fit JSON, a filter that leaves nothing) exits with code 2
and one line naming the file or flag; nothing is written then.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

from analysis.console import print_fit, print_frame
from train.contract import EXIT_BAD_INPUT, N_CONVENTIONS

_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)


def _guard(prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
           argv: list[str] | None) -> int:
    try:
        args = parser.parse_intermixed_args(_join_negative_numbers(parser, argv))
    except SystemExit as e:   # argparse: --help exits 0, a usage error exits 2
        return int(e.code or 0)
    try:
        return body(args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{prog}: error: {_as_flag(msg)}", file=sys.stderr)
        return EXIT_BAD_INPUT


# the library checks its arguments under their Python names; on the command line they are these flags
_FLAG_OF = {"plateau_steps": "--plateau-steps", "n_starts": "--starts", "bootstrap": "--bootstrap", "level": "--level", "delta": "--delta",
            "holdout_frac": "--holdout-frac"}
_LIBRARY_NAME = re.compile(rf"^({'|'.join(_FLAG_OF)}) must ")


def _as_flag(msg: str) -> str:
    """`n_starts must be >= 1, got 0` as `--starts must be >= 1, got 0`."""
    return _LIBRARY_NAME.sub(lambda m: f"{_FLAG_OF[m.group(1)]} must ", msg)


def _join_negative_numbers(parser: argparse.ArgumentParser, argv: list[str] | None) -> list[str]:
    """`--C -1e20` as `--C=-1e20`: argparse takes "-1e20" for a flag, so the value check never sees it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    numeric = {s for a in parser._actions if a.type in (float, int) for s in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in numeric and i + 1 < len(argv) and _NEGATIVE_NUMBER.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="sweep/run directory, or a CSV/Parquet table")
    p.add_argument("--columns", default=None,
                   help='column mapping for tables, e.g. N="Model Size",C="Training FLOP",loss=loss')
    p.add_argument("--n-convention", choices=N_CONVENTIONS, default=None,
                   help="which parameter count is N (default: the sweep spec's n_params, else each law's own)")
    p.add_argument("--include-failed", action="store_true", help="keep diverged/failed runs")
    p.add_argument("--include-partial", action="store_true", help="keep runs without a summary.json yet")
    p.add_argument("--min-tokens", type=float, default=None,
                   help="leave out rows with fewer training tokens D (e.g. eval points in a run's early plateau)")
    p.add_argument("--min-tokens-per-param", type=float, default=None,
                   help="leave out rows with D/N below this (e.g. the few lowest-ratio points of a published table)")
    p.add_argument("--skip-first", type=float, default=None, metavar="FRAC",
                   help="leave out the first FRAC of each run's curve (eval points before FRAC x its final tokens)")
    p.add_argument("--where", action="append", default=None, metavar="KEY=VALUE",
                   help="keep only rows whose column KEY equals VALUE (repeatable), e.g. --where dataset=c4")


def _load(args: argparse.Namespace):
    from analysis.load import filter_rows, load

    table = load(args.input, columns=args.columns, n_convention=args.n_convention,
                 include_failed=args.include_failed, include_partial=args.include_partial)
    return filter_rows(table, min_tokens=args.min_tokens, min_tokens_per_param=args.min_tokens_per_param,
                       skip_first=args.skip_first, where=args.where)


def _laws(names: str):
    from analysis.laws import get_law

    laws = [s.strip() for s in names.split(",") if s.strip()]
    if not laws:
        raise ValueError("--laws names no law")
    for name in laws:
        get_law(name)   # unknown law: fail before loading anything
    return laws


# ---------------------------------------------------------------------------
# fit

def fit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed fit", description="Fit a scaling law; print its constants and write the fit JSON.")
    _input_args(p)
    p.add_argument("--law", default="chinchilla",
                   help="law name (chinchilla, kaplan, compute, overtrain, schedule, kaplan-schedule); an ensemble "
                        "mix:LAW=W,LAW=W (the weighted mean of the laws' forecasts, each law fitted on its own); or "
                        "auto: the law that forecasts best in rollout backtests inside these runs, far end weighted, "
                        "among those whose fit leaves no parameter at a bound, a law of whole curves where the "
                        "backtests cannot tell it from the best law of final losses, and a law of whole curves "
                        "averaged with the other laws of whole curves, each weighted by 1 / its backtest error "
                        "(analysis.select)")
    p.add_argument("--curves-only", action="store_true",
                   help="with --law auto: rank every law but forecast with laws of whole curves only, as the CPU "
                        "presets do for the trainer's ladders (a law of final losses that leads backtests which "
                        "extrapolate in size can still extrapolate badly in tokens)")
    p.add_argument("--out", default="fit.json", help="where to write the fit result (JSON)")
    p.add_argument("--by", default=None, metavar="COLUMN",
                   help="one fit per value of this column (e.g. dataset), written to OUT with the value in its name")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates over runs (intervals); 0: none")
    p.add_argument("--level", type=float, default=0.95, help="interval level of the bootstrap intervals")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber threshold on log residuals")
    p.add_argument("--select", choices=("final", "all"), default=None,
                   help="final: each run's last eval; all: every eval point (default: what the law describes; "
                        "all for laws of the lr schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--starts", type=int, default=None, help="best grid starts polished by L-BFGS-B (default: the engine's)")
    p.add_argument("--plateau-steps", type=float, default=None, metavar="STEPS",
                   help="the early plateau measured for these runs; fitted points within 3x it are warned about "
                        "(default: analysis.plateau.PLATEAU_STEPS)")
    p.add_argument("--calibrate", action="store_true",
                   help="also measure the law's extrapolation error by backtests on these runs (analysis.calibrate) "
                        "and store it, so `testbed predict` gives intervals that account for it")
    return p


def fit_main(argv: list[str] | None = None) -> int:
    return _guard("testbed fit", _fit, fit_parser(), argv)


def _fit(args: argparse.Namespace) -> int:
    from analysis.calibrate import calibrated
    from analysis.fitting import fit
    from analysis.load import split_by

    if args.law != "auto":
        from analysis.laws import get_law
        get_law(args.law)   # unknown law or bad ensemble: fail before loading anything
        if args.curves_only:
            raise ValueError(f"--curves-only chooses among laws for --law auto; --law {args.law} names the law")
    table = _load(args)
    groups = split_by(table, args.by)
    results = []   # every group is fitted before any file is written: a group that fails leaves nothing behind
    for label, rows in groups:
        common = dict(delta=args.delta, bootstrap=args.bootstrap, seed=args.seed, select=args.select,
                      n_convention=args.n_convention, level=args.level, n_starts=args.starts,
                      plateau_steps=args.plateau_steps)
        try:
            if args.law == "auto":
                from analysis.select import select_law

                if label:
                    print(f"--- {label}")
                selection = select_law(rows, curves_only=args.curves_only, **common)
                print_frame(selection.board[[c for c in ("law", "far_err", "rollout_forecasts", "mean_abs_rel_err",
                                                          "error") if c in selection.board]], "law selection")
                for line in selection.reasons:
                    print(f"selection: {line}")
                result = selection.result
            else:
                result = fit(rows, args.law, **common)
            if args.calibrate:
                result = calibrated(result, rows, delta=args.delta, n_starts=args.starts)
        except ValueError as e:
            if not label:
                raise
            raise ValueError(f"--by {label}: {e}") from None
        results.append((label, result))
    for label, result in results:
        out = Path(args.out) if not label else _group_path(Path(args.out), label)
        result.to_json(out)
        if label:
            print(f"--- {label}")
        print_fit(result)
        err = result.extrapolation
        if err is not None:
            print(f"extrapolation error from {err.n_forecasts} backtest forecasts: run scatter s0 = {err.s0:.3%}, "
                  f"growth k = {err.k:.3%} per unit ln(C / C_fit); interval quantile {err.quantile_name()}")
        print(f"wrote {out}")
    return 0


def _group_path(out: Path, label: str) -> Path:
    value = re.sub(r"[^A-Za-z0-9._-]+", "_", label.split("=", 1)[1])
    return out.with_name(f"{out.stem}.{value}{out.suffix}")


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
    p.add_argument("--targets", default=None, metavar="CSV",
                   help="many targets at once: a CSV with columns N and D, or C; prints (or --out writes) the CSV "
                        "with loss, lower, upper and interval added")
    p.add_argument("--out", default=None, help="with --targets: write the predictions here (CSV) instead of printing")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the --run config")
    p.add_argument("--level", type=float, default=0.9, help="interval level")
    p.add_argument("--json", action="store_true", help='print {"loss", "lower", "upper", "interval"} (plus derived N/D) as JSON')
    p.add_argument("--history", action="extend", nargs="+", default=None, metavar="JSON",
                   help="checked forecasts made before with the same recipe on the same corpus (the demo's "
                        "forecast.json, benchmarks/forecast.py's cases.json; one or more): also print the interval "
                        "their misses give (split conformal, analysis.history); needs a --calibrate fit")
    p.add_argument("--history-law", default=None, metavar="NAME",
                   help="with --history files holding several methods' rows: the method to take (e.g. auto)")
    return p


def predict_main(argv: list[str] | None = None) -> int:
    return _guard("testbed predict", _predict, predict_parser(), argv)


def _predict(args: argparse.Namespace) -> int:
    from analysis.console import print_fit_warnings
    from analysis.fitresult import FitResult
    from analysis.predict import forecast

    for name in ("N", "D", "C"):
        v = getattr(args, name)
        if v is not None and not (v > 0 and v < float("inf")):
            raise ValueError(f"--{name} must be a positive number, got {v}")
    points = [k for k in ("N", "D", "C") if getattr(args, k) is not None]
    if args.run is None and args.overrides:
        raise ValueError(f"overrides {args.overrides} need --run CONFIG (the planned run they change)")
    if args.run is not None and points:
        raise ValueError("--run CONFIG [key=value ...] forecasts a planned run; give it without --N/--D/--C")
    if args.targets is not None and (points or args.run is not None):
        raise ValueError("--targets CSV holds the targets; give it without --N/--D/--C/--run")
    if args.out is not None and args.targets is None:
        raise ValueError("--out writes the predictions of --targets CSV")
    if args.run is None and args.targets is None and sorted(points) not in (["D", "N"], ["C"]):
        raise ValueError("give --N and --D (loss at a model size and token count) or --C alone "
                         "(loss at the compute-optimal allocation), or --run CONFIG, or --targets CSV")
    if args.history_law is not None and not args.history:
        raise ValueError("--history-law chooses among the --history files' methods; give --history too")
    result = FitResult.from_json(args.fit)
    hist = None
    if args.history:
        from analysis.history import calibrate_on_history
        if result.extrapolation is None:
            raise ValueError("--history scales its interval by how far the forecast extrapolates (C / C_fit), which "
                             "only a calibrated fit stores: fit with `testbed fit --calibrate`")
        hist = calibrate_on_history(args.history, level=args.level, law=args.history_law)
    if args.run is not None:
        rc = _print_run_forecast(result, args, hist)
    elif args.targets is not None:
        rc = _predict_targets(result, args, hist)
    else:
        fc = forecast(result, {k: getattr(args, k) for k in points}, level=args.level)
        out = _with_history(fc.point(0), hist)
        if args.json:
            print(json.dumps(out))
        else:
            asked = ", ".join(f"{k}={getattr(args, k):.4g}" for k in points)
            derived = "".join(f", {k}={out[k]:.4g}" for k in ("N", "D") if k in out)
            print(f"{result.law}: loss at {asked}{derived} = {out['loss']:.4f}  "
                  f"[{out['lower']:.4f}, {out['upper']:.4f}] ({args.level:.0%}, {out['interval']})")
            _print_history(out, args.level)
        rc = 0
    if rc == 0:   # the answer stands on the fit: its caveats go with it
        print_fit_warnings(result)
    return rc


def _with_history(out: dict, hist) -> dict:
    """A forecast point with the interval of `hist` (an `analysis.history.HistoryInterval`) added as `history`."""
    if hist is None:
        return out
    ratio = float(out.get("extrapolation") or 1.0)
    lo, hi = hist.bounds(out["loss"], ratio)
    return {**out, "history": {"lower": float(lo), "upper": float(hi), "q": hist.q, "n": hist.n,
                               "note": hist.note(ratio)}}


def _print_history(out: dict, level: float) -> None:
    if "history" in out:
        h = out["history"]
        print(f"  history-calibrated: [{h['lower']:.4f}, {h['upper']:.4f}] ({level:.0%}, {h['note']})")


def _predict_targets(result, args, hist=None) -> int:
    """Every row of a CSV of targets in one call: the forecast is vectorized over them."""
    import pandas as pd

    from analysis.predict import forecast
    from analysis.tables import load_targets

    targets, values = load_targets(args.targets)
    fc = forecast(result, values, level=args.level)
    rows = [_with_history(fc.point(i), hist) for i in range(len(targets))]
    flat = [{**{k: v for k, v in r.items() if k != "history"},
             **({"history_lower": r["history"]["lower"], "history_upper": r["history"]["upper"]} if "history" in r
                else {})} for r in rows]
    out = pd.concat([targets.reset_index(drop=True), pd.DataFrame(flat).drop(columns=list(values), errors="ignore")],
                    axis=1)
    if args.json:
        print(json.dumps(rows))
    elif args.out:
        out.to_csv(args.out, index=False)
        print(f"wrote {len(out)} predictions to {args.out}")
    else:
        print(out.to_csv(index=False), end="")
    return 0


def _print_run_forecast(result, args, hist=None) -> int:
    from analysis.console import print_run_forecast
    from analysis.predict import forecast
    from train.config import load_config

    cfg = load_config(args.run, args.overrides).resolved()
    out = _with_history(forecast(result, cfg, level=args.level).run(), hist)
    if args.json:
        print(json.dumps(out))
    else:
        print_run_forecast(result.law, cfg.run_id(), out, args.level)
        _print_history(out, args.level)
    return 0


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
    p.add_argument("--rollout", action="store_true",
                   help="successive cutoffs instead of one (a leaderboard always ranks by rollout, far end weighted)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for the intervals (0: none)")
    p.add_argument("--level", type=float, default=0.9, help="interval level for coverage")
    p.add_argument("--select", choices=("final", "all"), default=None,
                   help="rows each law is fitted on (default: what each law describes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--starts", type=int, default=None, help="best grid starts polished by L-BFGS-B per fit")
    p.add_argument("--plot", default=None, help="write predicted-vs-actual PNG here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def backtest_main(argv: list[str] | None = None) -> int:
    return _guard("testbed backtest", _backtest, backtest_parser(), argv)


def _backtest(args: argparse.Namespace) -> int:
    from analysis import backtest as B

    laws = _laws(args.laws or args.law)
    table = _load(args)
    common = dict(level=args.level, bootstrap=args.bootstrap, seed=args.seed, select=args.select,
                  n_starts=args.starts, n_convention=args.n_convention)
    if args.laws:
        board = B.leaderboard(table, laws, cutoff=args.cutoff, holdout_frac=args.holdout_frac, **common)
        if args.json:
            print(json.dumps(B.jsonable(board.to_dict("records"))))
        else:
            print_frame(board, "backtest leaderboard (best first: " + B.RANKING + ")")
        return 0
    if args.rollout:
        res = B.rollout(table, laws[0], **common)
    else:
        res = B.backtest(table, laws[0], cutoff=args.cutoff, holdout_frac=args.holdout_frac, **common)
    if args.plot:
        from analysis.plots import plot_backtest
        plot_backtest(res, args.plot)
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        print_frame(res.per_run.drop(columns=["cutoff"]) if len(res.cutoffs) == 1 else res.per_run,
                     f"{res.law}: held-out runs (cutoffs {', '.join(f'{c:.3g}' for c in res.cutoffs)} FLOPs)")
        print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in res.summary.items()))
    return 0


# ---------------------------------------------------------------------------
# report

def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed report", description="Write a Markdown report with fits, backtests and plots.")
    _input_args(p)
    p.add_argument("--out", default=None, help="report path (default: INPUT/report.md, or beside a table)")
    p.add_argument("--laws", default=None,
                   help="comma-separated laws to fit and backtest (default: chinchilla, kaplan, compute, and for run "
                        "directories the lr-schedule laws kaplan-schedule and schedule)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for intervals")
    p.add_argument("--starts", type=int, default=None, help="best grid starts polished by L-BFGS-B per fit")
    p.add_argument("--target", default=None, metavar="CONFIG",
                   help="also forecast this planned run's config (YAML/JSON, as for `testbed train`)")
    p.add_argument("target_overrides", nargs="*", metavar="key=value", help="dotted overrides of the --target config")
    return p


def report_main(argv: list[str] | None = None) -> int:
    return _guard("testbed report", _report, report_parser(), argv)


def _report(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    laws = tuple(_laws(args.laws)) if args.laws else None
    if args.target_overrides and args.target is None:
        raise ValueError(f"overrides {args.target_overrides} need --target CONFIG (the planned run they change)")
    target = None
    if args.target is not None:
        from train.config import load_config
        target = load_config(args.target, args.target_overrides).resolved()
    path = write_report(args.input, args.out, laws=laws, bootstrap=args.bootstrap, columns=args.columns,
                        n_starts=args.starts, min_tokens=args.min_tokens,
                        min_tokens_per_param=args.min_tokens_per_param, skip_first=args.skip_first,
                        where=args.where, n_convention=args.n_convention, include_failed=args.include_failed,
                        include_partial=args.include_partial, target=target)
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
