"""`testbed demo --out DIR`: the main job, end to end, with the forecast checked.

1. train the preset's ladder of tiny models as a sweep (`sweeps.run_sweep`);
2. fit its law (or choose one by backtests inside the ladder: `fit.law: auto`), with bootstrap
   intervals over runs, and measure the law's extrapolation error on the ladder itself;
3. forecast the target run (>= 10x the largest ladder run's compute): its final loss with a
   90% interval widened by that measured error, and its whole curve; write it to
   `forecast.json` *before* the target trains (`actual` is null until then); beside it, where the
   preset's recipe ships a history of checked forecasts (or `--history` names one), the interval
   that history's misses give (`analysis.history`);
4. train the target and fill in what it reached;
5. write `report.md` with the plots (`analysis.checked.write_report`).

What the demo trains and fits is a preset (`testbed/presets/*.yaml`, see `testbed.preset`).
Every stage is idempotent: a rerun with the same settings skips finished runs and resumes
interrupted ones; a directory holding a different demo is refused.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from testbed.preset import (DemoError, DemoPreset, load_preset, preset_names, resolve_preset, run_guarded,
                            shipped_history, target_config)
from train.contract import COMPLETED
from train.rundir import atomic_write_json, read_json

DEMO_FILE = "demo.json"
FORECAST_FILE = "forecast.json"
FIT_FILE = "fit.json"
TEXT_PRESET = "text-cpu"   # what `--data PATH` runs without --scale


def prepare_dir(out: Path, preset: DemoPreset) -> None:
    """Create DIR or accept one holding the same demo; refuse anything else before work starts."""
    settings = preset.settings()
    marker = out / DEMO_FILE
    if marker.exists():
        old = read_json(marker).get("settings", {})
        if old != settings:
            raise DemoError(f"{str(out)!r} holds a different demo (preset {old.get('name')!r}); "
                            "choose another --out or delete that directory")
        return
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"{str(out)!r} is not empty and holds no {DEMO_FILE}: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DemoError(f"cannot create {str(out)!r}: {e.strerror or e}") from None
    free_mb = shutil.disk_usage(out).free / 2**20
    if free_mb < preset.disk_mb:
        raise DemoError(f"only {free_mb:.0f} MB free under {str(out)!r}; the demo needs about {preset.disk_mb:.0f} MB")
    atomic_write_json(marker, {"settings": settings, "created": time.strftime("%Y-%m-%d %H:%M:%S")})


def run_ladder(out: Path, preset: DemoPreset, quiet: bool) -> Path:
    """Train the ladder (a sweep in DIR/ladder); at most a third of its runs may fail."""
    from sweeps import run_sweep
    from sweeps.spec import SweepError

    ladder_dir = out / "ladder"
    try:
        outcome = run_sweep(preset.ladder, ladder_dir, quiet=quiet)
    except SweepError as e:
        raise DemoError(f"ladder: {e}") from None
    if outcome.interrupted:
        raise KeyboardInterrupt
    bad = {k: v for k, v in outcome.state.items() if v != COMPLETED}
    if len(bad) > len(outcome.state) // 3:
        raise RuntimeError(f"{len(bad)} of {len(outcome.state)} ladder runs did not complete ({bad}); "
                           f"see {ladder_dir}/logs")
    return ladder_dir


def fitted_rows(table, preset: DemoPreset):
    """The rows the law is fitted on: every eval point from `fit.min_tokens` on, and every run's final point."""
    return table[(table["D"] >= preset.fit.min_tokens) | table["final"]]


def fit_ladder(table, preset: DemoPreset, fixed: dict | None = None):
    """The preset's law (or the one `analysis.select` chooses) fitted on the ladder, with the extrapolation
    error measured there attached when the ladder allows a backtest; `fixed` holds parameters (benchmarks)."""
    from analysis.calibrate import with_extrapolation_error
    from analysis.fitting import fit
    from analysis.laws import get_law
    from analysis.select import candidate_laws, select_law

    plan, rows = preset.fit, fitted_rows(table, preset)
    if plan.law == "auto":
        # a planned run is forecast from its config: laws of (N, D) or of (N, S1, S2) can read it
        candidates = list(plan.candidates) or [n for n in candidate_laws(rows)
                                               if set(get_law(n).covariates) <= {"N", "D", "S1", "S2"}]
        result = select_law(rows, candidates, bootstrap=plan.bootstrap, level=plan.level,
                            select=plan.select, fixed=fixed, curves_only=plan.curves_only).result
    else:
        result = fit(rows, plan.law, bootstrap=plan.bootstrap, level=plan.level, seed=0, select=plan.select,
                     fixed=fixed)
    try:
        return with_extrapolation_error(result, rows, select=plan.select, fixed=fixed)
    except ValueError:   # a ladder too small for a backtest: the forecast says its interval is the bootstrap band
        return result


def run_demo(out: str | Path, preset: DemoPreset | str, quiet: bool = False, history: list | None = None) -> dict:
    """The whole demo for a preset (or a preset's name or file); returns the checked forecast (DIR/forecast.json).

    `history`: checked forecasts made before with the same preset on the same data (earlier demos'
    forecast.json files, benchmarks/forecast.py's cases.json): the forecast also carries the interval
    their misses give (`analysis.history`, split conformal), scored like the ladder's own. None (the
    default): the history shipped for the preset's recipe, if there is one (`shipped_history`); [] none.
    """
    from rich.console import Console

    from analysis.checked import check, forecast_record, write_report
    from analysis.console import sigma_line
    from analysis.history import calibrate_on_history, calibrate_records
    from analysis.load import load_runs
    from train.api import train_run

    console = Console(quiet=quiet)
    preset = load_preset(preset) if isinstance(preset, str) else preset
    if preset.needs_data:
        raise DemoError(f"preset {preset.name} trains on a local text corpus: give it with --data PATH")
    out = Path(out)
    target = target_config(preset)  # validates the target before anything trains
    shipped = shipped_history(preset) if history is None else None
    if shipped is not None:
        hist = calibrate_records(shipped[1], level=preset.fit.level)
        source = f"shipped with the preset's recipe: {shipped[0].parent.name}/{shipped[0].name}"
    else:
        # this demo's own forecast (a rerun, or a glob over earlier demos' directories) is not its own history
        history = [h for h in history or [] if Path(h).resolve() != (out / FORECAST_FILE).resolve()]
        try:
            hist = calibrate_on_history(history, level=preset.fit.level, law=preset.fit.law) if history else None
        except ValueError as e:
            raise DemoError(f"--history: {e}") from None
        source = "--history"
    prepare_dir(out, preset)
    t0 = time.time()

    console.rule(f"[bold]1/4 ladder[/] (preset {preset.name}: {preset.description})")
    note = preset.lr_rule_note()
    if note:
        console.print(f"note: {note}", markup=False)
    ladder_dir = run_ladder(out, preset, quiet)

    console.rule("[bold]2/4 fit[/]")
    table = load_runs(ladder_dir)
    result = fit_ladder(table, preset)
    result.to_json(out / FIT_FILE)
    console.print(result.summary())
    for reason in (result.settings.get("selection") or {}).get("reasons", []):
        console.print(f"  law choice: {reason}")
    if result.extrapolation is not None:
        e = result.extrapolation
        console.print(f"extrapolation error measured on the ladder ({e.n_forecasts} backtest forecasts): "
                      f"run scatter s0 = {e.s0:.2%}, growth k = {e.k:.2%} per unit ln(C/C_ladder); "
                      f"interval quantile {e.quantile_name()}")

    console.rule("[bold]3/4 forecast[/] (written before the target trains)")
    fc_path = out / FORECAST_FILE
    record = read_json(fc_path) if fc_path.exists() else None
    if record is None or record.get("target", {}).get("run_id") != target.run_id():
        record = forecast_record(result, table, target, level=preset.fit.level, fitted=fitted_rows(table, preset))
        record["method"] = preset.fit.law        # what a later --history matches: the preset's law setting
        atomic_write_json(fc_path, record)
    if hist is not None:
        lo, hi = hist.bounds(record["predicted"], record["compute_ratio"])
        record["history"] = {"lower": float(lo), "upper": float(hi), "q": hist.q, "n": hist.n,
                             "note": hist.note(record["compute_ratio"]), "source": source}
        atomic_write_json(fc_path, record)
    elif record.pop("history", None) is not None:      # an earlier run's history, not this one's
        atomic_write_json(fc_path, record)
    console.print(f"target N={record['target']['N']:,.0f} D={record['target']['D']:,.0f} "
                  f"({record['compute_ratio']:.1f}x the largest ladder compute): predicted final loss "
                  f"{record['predicted']:.4f} [{record['lower']:.4f}, {record['upper']:.4f}] "
                  f"({record['level']:.0%}, {record['interval']['kind']})")
    if record["interval"].get("sigma_parts"):
        console.print(f"  {sigma_line(record['interval']['sigma'], record['interval']['sigma_parts'])}")
    if record.get("history"):
        h = record["history"]
        console.print(f"  history-calibrated: [{h['lower']:.4f}, {h['upper']:.4f}] ({h['note']}; {h['source']})")
    for what in record.get("outside_ladder", []):
        console.print(f"  note: the target differs from every ladder run in {what}")

    console.rule("[bold]4/4 target run[/]")
    target_dir = out / "target"
    train_run(target, target_dir)
    record = check(record, target_dir)
    if record.get("history"):
        h = record["history"]
        record["history"] = {**h, "inside": bool(h["lower"] <= record["actual"] <= h["upper"])}
    record["wall_time_s"] = time.time() - t0
    atomic_write_json(fc_path, record)
    report = write_report(out, table, result, record, fitted=fitted_rows(table, preset))

    console.rule("[bold]result[/]")
    console.print(f"predicted {record['predicted']:.4f}  interval [{record['lower']:.4f}, {record['upper']:.4f}]  "
                  f"actual {record['actual']:.4f}  error {100 * record['abs_rel_error']:.2f}%  "
                  f"inside: {'yes' if record['inside_interval'] else 'no'}")
    console.print(f"({record['interval']['kind']} {record['level']:.0%} interval; the bootstrap band alone: "
                  f"[{record['bootstrap_lower']:.4f}, {record['bootstrap_upper']:.4f}])")
    if record.get("history"):
        h = record["history"]
        console.print(f"history-calibrated interval [{h['lower']:.4f}, {h['upper']:.4f}] from {h['n']} checked "
                      f"forecasts: inside: {'yes' if h['inside'] else 'no'}")
    if record["curve"].get("are") is not None:
        console.print(f"whole-curve ARE {100 * record['curve']['are']:.2f}%  ({record['curve']['note']})")
    floor = f"loss floor {record['loss_floor']:.4f}; " if record.get("loss_floor") else ""
    console.print(f"compute ratio {record['compute_ratio']:.1f}x; {floor}wall time {record['wall_time_s'] / 60:.1f} min")
    console.print(f"forecast: {fc_path}\nreport:   {report}")
    return record


def _default_scale(data: str | None) -> str:
    if data:
        return TEXT_PRESET
    try:
        import torch
        return "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testbed demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (a rerun resumes it)")
    p.add_argument("--scale", default=None, metavar="PRESET",
                   help=f"a built-in preset ({', '.join(preset_names())}) or a preset YAML file; default: gpu with "
                        f"a GPU, cpu without, {TEXT_PRESET} with --data")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="run the preset's recipe on a local text corpus (file or glob; .txt/.jsonl/.parquet, zstd too)")
    p.add_argument("--jobs", type=int, default=None, help="ladder runs trained at once")
    p.add_argument("--history", action="extend", nargs="+", default=None, metavar="JSON",
                   help="checked forecasts made before with the same preset on the same data (earlier demos' "
                        "forecast.json, benchmarks/forecast.py's cases.json; one or more): also give the interval "
                        "their misses give (split conformal; at 90%% it needs 9 or more). Default: the history shipped for "
                        "the preset's recipe (testbed/histories), where there is one")
    p.add_argument("--no-history", action="store_true",
                   help="no history interval, not even the one shipped for the preset's recipe")
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(argv)
    if ns.no_history and ns.history:
        p.error("--no-history and --history exclude each other")
    return run_guarded("demo", lambda: run_demo(ns.out, resolve_preset(ns.scale or _default_scale(ns.data), ns.data, ns.jobs),
                                                quiet=ns.quiet, history=[] if ns.no_history else ns.history))
