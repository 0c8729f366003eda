"""`testbed demo --out DIR`: the main job, end to end, with the forecast checked.

1. train a ladder of tiny GPTs (every size at every token budget, plus a few longer runs) as a sweep;
2. fit a scaling law to the ladder, with bootstrap intervals over runs, and measure the law's
   extrapolation error on the ladder itself (backtests: fit the smaller runs, forecast the larger);
3. forecast a target run with >= 10x the compute of the largest ladder run: its final
   loss (point and 90% interval, widened by that measured error) and its whole curve;
   write the forecast *before* the target trains (`forecast.json` has `actual: null` until then);
4. train the target, and compare predicted with actual;
5. write a Markdown report with the plots.

Every stage is idempotent: a rerun with the same settings skips finished runs and
resumes interrupted ones; a directory holding a different demo is refused.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from train.config import ConfigError, RunConfig, apply_overrides, from_dict
from train.rundir import atomic_write_json, read_json

DEMO_FILE = "demo.json"
FORECAST_FILE = "forecast.json"
FIT_FILE = "fit.json"


@dataclass(frozen=True)
class DemoScale:
    """Everything that decides a demo's runs; stored in DIR/demo.json."""
    name: str
    base: dict                      # run-config overrides shared by the ladder and the target
    sizes: tuple                    # ladder shapes: ({"width": .., "depth": ..}, ...)
    tokens: tuple                   # ladder token budgets; every size trains at every budget (a full N x D grid)
    target: dict                    # the target: {"width", "depth", "compute_ratio"}; its tokens are chosen so its
                                    # compute is compute_ratio x the largest ladder run's (by the run's FLOP convention)
    extra: tuple = ()               # ladder runs beyond the grid: ({"width", "depth", "tokens"}, ...)
    n_params: str = "non_embedding"  # N convention of the ladder and the fit
    lr_rule: str = ""               # optim.lr as a formula of N (sweeps/rules.py), for the ladder and the target alike
    law: str = "kaplan"             # the law fitted to the ladder (analysis.laws)
    select: str = "final"           # fit on each run's final loss ("final") or on every eval point ("all")
    fit_min_tokens: int = 0         # with select="all": eval points before this many tokens are not fitted
    bootstrap: int = 1000
    level: float = 0.9
    jobs: int = 2


def _base(context: int, batch_tokens: int, lr: float, points: int, val_tokens: int, device: str,
          vocab: int = 512, warmup: int = 10, head_dim: int = 8) -> dict:
    return {
        "model": {"kind": "gpt", "context": context, "head_dim": head_dim,
                  "vocab_pad_multiple": 64 if device == "cuda" else 1},
        "data": {"source": "synthetic", "vocab_size": vocab, "seed": 0},
        "train": {"batch_tokens": batch_tokens, "device": device},
        "optim": {"lr": lr},
        "schedule": {"kind": "cosine", "warmup_steps": warmup, "final_frac": 0.1},
        "eval": {"points": points, "tokens": val_tokens},
        "run": {"flop_convention": "exact"},
    }


SCALES: dict[str, DemoScale] = {
    # a miniature for the test suite: seconds, not a meaningful forecast
    "mini": DemoScale(
        name="mini",
        base=_base(context=32, batch_tokens=512, lr=1e-2, points=6, val_tokens=2048, device="cpu", vocab=128, warmup=2),
        sizes=({"width": 16, "depth": 1}, {"width": 24, "depth": 1}, {"width": 32, "depth": 1}),
        tokens=(5120, 10240),
        target={"width": 64, "depth": 2, "compute_ratio": 10.0},
        extra=({"width": 16, "depth": 1, "tokens": 20480},),
        bootstrap=100, jobs=2,
    ),
    # the README's main job: well under 10 minutes on a 2-core CPU. Every ladder run takes >= 400
    # optimizer steps: shorter runs sit on the synthetic language's early plateau, and a law
    # fitted to them mistakes the drop that follows for a power law (benchmarks/README.md).
    # The LR falls as 1/width (Adam's hidden-layer rule in Yang et al. 2022; at depth 2,
    # width ∝ sqrt(N)): at one fixed LR the wider models train worse than the narrower ones
    # here (w48 behind w32), which no scaling law can fit. Measured optimum at 819k tokens,
    # batch 1024: ~3e-3 at width 32, ~2e-3 at 48, <= 1e-3 at 96.
    "cpu": DemoScale(
        name="cpu",
        base=_base(context=64, batch_tokens=1024, lr=3e-3, points=16, val_tokens=32768, device="cpu"),
        sizes=({"width": 16, "depth": 2}, {"width": 24, "depth": 2}, {"width": 32, "depth": 2},
               {"width": 48, "depth": 2}),
        tokens=(409_600, 819_200, 1_638_400),
        target={"width": 96, "depth": 2, "compute_ratio": 10.0},
        # two longer runs at 3.072M tokens (w32 there costs exactly the grid's largest compute:
        # 1.875 = the ratio of w48's to w32's FLOPs per token): they show how a curve bends past
        # the grid's longest budget, toward the target's. In benchmarks/forecast.py they took the
        # median error on this 10x target from 1.04% to 0.50% on the same 6 seeds (0.43% on 3 new
        # ones) and the calibrated interval's mean width from 13% to 9%; they help a longer, narrower
        # 10x target too and cost a wider, shorter one a little (benchmarks/README.md).
        extra=({"width": 24, "depth": 2, "tokens": 3_072_000}, {"width": 32, "depth": 2, "tokens": 3_072_000}),
        lr_rule="3e-3 * (24736 / N) ** 0.5",
        # Kaplan's form read in the lr schedule's forward area, fitted on every eval point from
        # 200 steps on (before that the runs sit on the early plateau): the best forecasts of the
        # laws compared in benchmarks/forecast.py at this scale (median error on this target 0.46%
        # over 9 seeds, Kaplan's law of final losses 1.07%; over three 10x target shapes 0.90%)
        law="kaplan-schedule", select="all", fit_min_tokens=204_800,
    ),
    # a real experiment on one GPU
    "gpu": DemoScale(
        name="gpu",
        base=_base(context=256, batch_tokens=65536, lr=3e-3, points=32, val_tokens=262144, device="cuda", head_dim=64),
        sizes=({"width": 128, "depth": 2}, {"width": 192, "depth": 3}, {"width": 256, "depth": 4},
               {"width": 320, "depth": 5}, {"width": 384, "depth": 6}),
        tokens=(50_000_000, 100_000_000, 200_000_000),
        target={"width": 768, "depth": 8, "compute_ratio": 30.0},
        # as on the cpu scale: the two sizes below the largest also train longer, at the largest grid
        # run's compute for width 320 (5,135 batches); not yet measured on a GPU
        extra=({"width": 256, "depth": 4, "tokens": 336_527_360}, {"width": 320, "depth": 5, "tokens": 336_527_360}),
        law="kaplan-schedule", select="all", fit_min_tokens=25_000_000,
        jobs=1,
    ),
}


class DemoError(ValueError):
    """A demo that cannot start (bad directory, bad settings); the message says what to do."""


# ---------------------------------------------------------------------------
# configs

def ladder_shapes(scale: DemoScale) -> list[dict]:
    """Every ladder run's {"width", "depth", "tokens"}: each size at each budget, then the extra runs."""
    grid = [{**size, "tokens": t} for t in scale.tokens for size in scale.sizes]
    runs = grid + [dict(r) for r in scale.extra]
    keys = [(r["width"], r["depth"], r["tokens"]) for r in runs]
    if len(set(keys)) != len(keys):
        raise DemoError(f"scale {scale.name!r}: an extra ladder run repeats a grid run")
    return runs


def ladder_spec(scale: DemoScale) -> dict:
    runs = ladder_shapes(scale)
    return {
        "name": f"demo-{scale.name}-ladder",
        "description": "demo ladder: every size at every token budget, plus the extra runs",
        "base": scale.base,
        "family": "grid",
        "n_params": scale.n_params,
        # every run listed as one zip (width, depth, tokens): the grid, then the extra runs
        "zip": [{"model.width": [r["width"] for r in runs], "model.depth": [r["depth"] for r in runs],
                 "train.tokens": [r["tokens"] for r in runs]}],
        **({"rules": {"optim.lr": scale.lr_rule}} if scale.lr_rule else {}),
        "executor": {"jobs": scale.jobs, "retries": 1},
    }


def ladder_runs(scale: DemoScale) -> list:
    """The ladder's planned runs (resolved configs, N, FLOPs), without training anything."""
    from sweeps.expand import expand
    from sweeps.spec import spec_from_dict
    return expand(spec_from_dict(ladder_spec(scale)))


def target_config(scale: DemoScale, target: dict | None = None) -> RunConfig:
    """The target run: the ladder's base config at the target shape, with tokens for its compute ratio.

    Tokens are whole batches; the ratio is against the largest ladder run by the runs' own FLOP
    convention, so `compute_ratio` in forecast.json is what the target really costs.
    """
    from models.counting import flops_per_token

    t = dict(scale.target if target is None else target)
    c_max = max(r.flops for r in ladder_runs(scale))
    cfg = from_dict(RunConfig, json.loads(json.dumps(scale.base)))
    cfg = apply_overrides(cfg, {"model.width": t["width"], "model.depth": t["depth"],
                                "run.name": f"target-w{t['width']}-d{t['depth']}", "run.sweep": f"demo-{scale.name}"})
    cfg = apply_overrides(cfg, {"model.vocab_size": cfg.resolved().model.vocab_size})
    if scale.lr_rule:
        from models.counting import param_counts
        from sweeps.spec import evaluate_rule
        n = param_counts(cfg.model)[scale.n_params]
        cfg = apply_overrides(cfg, {"optim.lr": evaluate_rule(scale.lr_rule, n, key="lr_rule")})
    fpt = flops_per_token(cfg.model, cfg.run.flop_convention)
    batches = max(1, math.ceil(t["compute_ratio"] * c_max / fpt / cfg.train.batch_tokens))
    return apply_overrides(cfg, {"train.tokens": batches * cfg.train.batch_tokens}).resolved()


def _settings(scale: DemoScale) -> dict:
    """What makes two demos the same demo (how many jobs ran at once does not)."""
    d = json.loads(json.dumps(asdict(scale)))
    d.pop("jobs")
    return d


def prepare_dir(out: Path, scale: DemoScale) -> None:
    """Create DIR or accept one holding the same demo; refuse anything else before work starts."""
    settings = _settings(scale)
    marker = out / DEMO_FILE
    if marker.exists():
        old = read_json(marker)
        if old.get("settings") != settings:
            raise DemoError(f"{str(out)!r} holds a different demo (scale {old.get('settings', {}).get('name')!r}); "
                            "choose another --out or delete that directory")
        return
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"{str(out)!r} is not empty and holds no {DEMO_FILE}: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DemoError(f"cannot create {str(out)!r}: {e.strerror or e}") from None
    atomic_write_json(marker, {"settings": settings, "created": time.strftime("%Y-%m-%d %H:%M:%S")})


def _check_disk(out: Path, need_mb: float) -> None:
    free_mb = shutil.disk_usage(out).free / 2**20
    if free_mb < need_mb:
        raise DemoError(f"only {free_mb:.0f} MB free under {str(out)!r}; the demo needs about {need_mb:.0f} MB")


# ---------------------------------------------------------------------------
# stages

def run_ladder(out: Path, scale: DemoScale, quiet: bool) -> Path:
    from sweeps.expand import expand
    from sweeps.local import lock_sweep_dir, run_local
    from sweeps.progress import make_progress
    from sweeps.spec import spec_from_dict
    from sweeps.sweepdir import prepare

    spec = spec_from_dict(ladder_spec(scale))
    runs = expand(spec)
    ladder_dir = out / "ladder"
    lock = lock_sweep_dir(ladder_dir)
    try:
        sd = prepare(ladder_dir, spec, runs)
        display = make_progress(runs, quiet=quiet)
        try:
            outcome = run_local(sd, runs, jobs=scale.jobs, retries=spec.executor.retries, display=display)
        finally:
            display.close()
    finally:
        lock.release()
    if outcome.interrupted:
        raise KeyboardInterrupt
    bad = {k: v for k, v in outcome.state.items() if v != "completed"}
    if len(bad) > len(runs) // 3:
        raise RuntimeError(f"{len(bad)} of {len(runs)} ladder runs did not complete ({bad}); see {ladder_dir}/logs")
    return ladder_dir


def fit_ladder(ladder_dir: Path, scale: DemoScale, out: Path):
    """Fit the scale's law on the ladder, measure its extrapolation error there, write DIR/fit.json.

    Returns (table, fit): the fit carries the measured error (`analysis.calibrate.attach`), so
    `testbed predict DIR/fit.json --run ...` gives the demo's calibrated interval; it carries
    none when the ladder is too small for a backtest (the forecast then says so).
    """
    from analysis.load import load_runs

    table = load_runs(ladder_dir, n_convention=scale.n_params)
    result = fit_scale(table, scale)
    result.to_json(out / FIT_FILE)
    return table, result


def fit_scale(table, scale: DemoScale, fixed: dict | None = None):
    """The scale's law fitted on its rows (`_fit_rows`), with the extrapolation error measured on
    them attached when the ladder allows a backtest; `fixed` holds parameters (benchmarks)."""
    from analysis.calibrate import with_extrapolation_error
    from analysis.fitting import fit

    fitted = _fit_rows(table, scale)
    result = fit(fitted, scale.law, bootstrap=scale.bootstrap, level=scale.level, seed=0,
                 n_convention=scale.n_params, select=scale.select, fixed=fixed)
    try:
        return with_extrapolation_error(result, fitted, select=scale.select, fixed=fixed)
    except ValueError:   # a ladder too small for a backtest: the forecast says its interval is the bootstrap band
        return result


def _fit_rows(table, scale: DemoScale):
    """The rows the law is fitted on: every eval point from `fit_min_tokens` on (or the final points)."""
    if scale.select == "final":
        return table
    return table[(table["D"] >= scale.fit_min_tokens) | table["final"]]


def make_forecast(scale: DemoScale, result, table, target: RunConfig) -> dict:
    """Forecast the target's final loss and its whole curve from the fit alone (the target has not trained).

    The numbers are `analysis.predict.forecast`'s, as `testbed predict --run` prints them:
    the headline interval is calibrated (bootstrap spread plus the extrapolation error the
    ladder measured on itself) and the bootstrap band alone is kept as `bootstrap_lower`/
    `bootstrap_upper`. Without a backtest (a ladder too small) the headline interval is the
    bootstrap band and `interval` says so.
    """
    from analysis.predict import forecast
    from models.counting import flops_per_token

    fc = forecast(result, target, level=scale.level).run()
    if fc["interval"] == "calibrated":
        interval = {"kind": "calibrated", "sigma": fc["sigma"], "extrapolation_error": result.extrapolation.to_dict(),
                    "note": "bootstrap spread, run scatter s0 and extrapolation error k*ln(C/C_ladder) "
                            "measured by backtests inside the ladder (analysis.calibrate)"}
    else:
        interval = {"kind": "bootstrap", "note": "the ladder is too small for a backtest: parameter "
                                                 "(bootstrap over runs) interval only, which ignores law error"}
    finals = table[table["final"]]
    c_ladder_max = float(finals["C"].max())
    c_target = flops_per_token(target.model, target.run.flop_convention) * fc["D"]
    curve = fc["curve"]
    return {
        "law": result.law,
        "level": scale.level,
        "predicted": fc["loss"],
        "lower": fc["lower"],
        "upper": fc["upper"],
        "bootstrap_lower": fc["bootstrap_lower"],
        "bootstrap_upper": fc["bootstrap_upper"],
        "interval": interval,
        "actual": None,
        "abs_rel_error": None,
        "inside_interval": None,
        "compute_ratio": c_target / c_ladder_max,
        "target": {"run_id": target.run_id(), "N": fc["N"], "n_convention": scale.n_params, "D": fc["D"],
                   "C": c_target, "width": target.model.width, "depth": target.model.depth},
        "ladder": {"runs": int(finals["run"].nunique()), "max_C": c_ladder_max,
                   "N_range": [float(finals["N"].min()), float(finals["N"].max())],
                   "D_range": [float(finals["D"].min()), float(finals["D"].max())]},
        "fit": {"params": result.params, "intervals": {k: list(v) for k, v in result.intervals.items()},
                "select": scale.select, "min_tokens": scale.fit_min_tokens if scale.select == "all" else None,
                "warnings": list(result.warnings), "converged": result.converged},
        "curve": {"steps": curve["steps"], "tokens": curve["tokens"], "predicted": curve["loss"],
                  "lower": curve["lower"], "upper": curve["upper"], "note": fc["note"], "actual": None},
        "loss_floor": None,
    }


def check_forecast(forecast: dict, target_dir: Path) -> dict:
    """Fill in what the trained target actually reached."""
    from train.rundir import read_run

    _, metrics, summary = read_run(target_dir)
    if not summary or summary.get("status") != "completed":
        raise RuntimeError(f"the target run did not complete (status {summary and summary.get('status')}); see {target_dir}")
    actual = float(summary["final_val_loss"])
    evals = {int(r["step"]): float(r["val_loss"]) for r in metrics if r.get("kind") == "eval"}
    forecast = dict(forecast)
    forecast["actual"] = actual
    forecast["abs_rel_error"] = abs(forecast["predicted"] - actual) / actual
    forecast["inside_interval"] = bool(forecast["lower"] <= actual <= forecast["upper"])
    forecast["loss_floor"] = summary.get("loss_floor")
    curve = dict(forecast["curve"])
    curve["actual"] = [evals.get(int(s)) for s in curve["steps"]]
    pairs = [(p, a) for p, a in zip(curve["predicted"], curve["actual"]) if a is not None and p is not None]
    curve["are"] = sum(abs(p - a) / a for p, a in pairs) / len(pairs) if pairs else None
    forecast["curve"] = curve
    forecast["target"] = {**forecast["target"], "wall_time_s": summary.get("wall_time_s"),
                          "tokens_per_s": summary.get("tokens_per_s")}
    return forecast


def write_demo_report(out: Path, table, result, forecast: dict, fitted=None) -> Path:
    """DIR/report.md: ladder curves, the fit with its extrapolation band, and the target predicted vs actual."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plots import plot_curves, plot_fit

    figs = out / "report_files"
    figs.mkdir(exist_ok=True)
    curves = plot_curves(table, figs / "ladder_curves.png")
    fitfig = plot_fit(table if fitted is None else fitted, result, figs / "fit.png",
                      extrapolate=max(10.0, forecast["target"]["D"] / table["D"].max()))

    c = forecast["curve"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    fc = [(t, p, lo, hi) for t, p, lo, hi in zip(c["tokens"], c["predicted"], c["lower"], c["upper"]) if p is not None]
    if fc:
        t, p, lo, hi = map(list, zip(*fc))
        ax.fill_between(t, lo, hi, alpha=0.25, lw=0, label=f"{forecast['level']:.0%} interval")
        ax.plot(t, p, "--", label="forecast (from the ladder only)")
    got = [(t, a) for t, a in zip(c["tokens"], c["actual"]) if a is not None]
    if got:
        ax.plot(*zip(*got), "o-", ms=3, label="actual")
    if forecast.get("loss_floor"):
        ax.axhline(forecast["loss_floor"], color="grey", ls=":", lw=1, label="loss floor (exact)")
    ax.set(xscale="log", xlabel="tokens", ylabel="validation loss (nats/token)",
           title=f"target run, {forecast['compute_ratio']:.0f}x the ladder's largest compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    target_png = figs / "target_curve.png"
    fig.savefig(target_png, dpi=120)
    plt.close(fig)

    f = forecast
    lines = [
        "# Demo: a checked forecast", "",
        f"Ladder: {f['ladder']['runs']} runs, N {f['ladder']['N_range'][0]:,.0f}–{f['ladder']['N_range'][1]:,.0f} "
        f"({f['target']['n_convention']} parameters), D {f['ladder']['D_range'][0]:,.0f}–{f['ladder']['D_range'][1]:,.0f} tokens.",
        f"Target: N = {f['target']['N']:,.0f}, D = {f['target']['D']:,.0f}, C = {f['target']['C']:.3g} FLOPs "
        f"({f['compute_ratio']:.1f}x the largest ladder run).", "",
        "| law | predicted | lower | upper | actual | rel. error | inside |", "|---|---|---|---|---|---|---|",
        f"| {f['law']} | {f['predicted']:.4f} | {f['lower']:.4f} | {f['upper']:.4f} | "
        + (f"{f['actual']:.4f} | {100 * f['abs_rel_error']:.2f}% | {'yes' if f['inside_interval'] else 'no'} |"
           if f["actual"] is not None else "– | – | – |"),
        "",
        f"Interval: {f['level']:.0%}, {f['interval']['kind']} ({f['interval']['note']}). The bootstrap band "
        f"alone (parameter uncertainty over runs) is [{f['bootstrap_lower']:.4f}, {f['bootstrap_upper']:.4f}].",
        "", f"Law: {f['law']}, fitted on " + (f"every eval point from {f['fit']['min_tokens'] or 0:,} tokens on"
                                              if f["fit"].get("select") == "all" else "each run's final loss") + ".",
        "", "Fitted parameters (" + f"{f['level']:.0%} bootstrap intervals over runs):", "",
        "| parameter | estimate | interval |", "|---|---|---|",
    ]
    for k, v in f["fit"]["params"].items():
        iv = f["fit"]["intervals"].get(k)
        lines.append(f"| {k} | {v:.4g} | " + (f"[{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "–") + " |")
    if f["fit"]["warnings"]:
        lines += ["", "Fit warnings: " + "; ".join(f["fit"]["warnings"])]
    lines += ["", f"![ladder curves]({curves.relative_to(out)})", "", f"![fit]({fitfig.relative_to(out)})", "",
              f"![target]({target_png.relative_to(out)})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------------------
# command line

def _detect_scale() -> str:
    try:
        import torch
        return "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def run_demo(out: str | Path, scale_name: str | None = None, quiet: bool = False, jobs: int | None = None) -> dict:
    """The whole demo; returns the checked forecast (also in DIR/forecast.json)."""
    from rich.console import Console

    console = Console(quiet=quiet)
    name = scale_name or _detect_scale()
    if name not in SCALES:
        raise DemoError(f"--scale must be one of {sorted(SCALES)}, got {name!r}")
    scale = SCALES[name]
    if jobs is not None:
        if jobs < 1:
            raise DemoError(f"--jobs must be >= 1, got {jobs}")
        scale = DemoScale(**{**asdict(scale), "jobs": jobs})
    out = Path(out)
    target = target_config(scale)  # validates the target before anything trains
    prepare_dir(out, scale)
    _check_disk(out, need_mb=50 if name != "gpu" else 2000)
    t0 = time.time()

    extra = f" + {len(scale.extra)} longer runs" if scale.extra else ""
    console.rule(f"[bold]1/4 ladder[/] ({len(scale.sizes)} sizes x {len(scale.tokens)} token budgets{extra}, scale {name})")
    ladder_dir = run_ladder(out, scale, quiet)

    console.rule("[bold]2/4 fit[/]")
    table, result = fit_ladder(ladder_dir, scale, out)
    console.print(result.summary())
    error = result.extrapolation
    if error is not None:
        console.print(f"extrapolation error measured on the ladder ({error.n_forecasts} backtest forecasts): "
                      f"run scatter s0 = {error.s0:.2%}, growth k = {error.k:.2%} per unit ln(C/C_ladder)")

    console.rule("[bold]3/4 forecast[/] (written before the target trains)")
    fc_path = out / FORECAST_FILE
    forecast = read_json(fc_path) if fc_path.exists() else None
    if forecast is None or forecast.get("target", {}).get("run_id") != target.run_id():
        forecast = make_forecast(scale, result, table, target)
        atomic_write_json(fc_path, forecast)
    console.print(f"target N={forecast['target']['N']:,.0f} D={forecast['target']['D']:,.0f} "
                  f"({forecast['compute_ratio']:.1f}x the largest ladder compute): predicted final loss "
                  f"{forecast['predicted']:.4f} [{forecast['lower']:.4f}, {forecast['upper']:.4f}] "
                  f"({forecast['level']:.0%}, {forecast['interval']['kind']})")

    console.rule("[bold]4/4 target run[/]")
    from train.api import train_run
    target_dir = out / "target"
    train_run(target, target_dir)
    forecast = check_forecast(forecast, target_dir)
    forecast["wall_time_s"] = time.time() - t0
    atomic_write_json(fc_path, forecast)
    report = write_demo_report(out, table, result, forecast, fitted=_fit_rows(table, scale))

    console.rule("[bold]result[/]")
    console.print(f"predicted {forecast['predicted']:.4f}  interval [{forecast['lower']:.4f}, {forecast['upper']:.4f}]  "
                  f"actual {forecast['actual']:.4f}  error {100 * forecast['abs_rel_error']:.2f}%  "
                  f"inside: {'yes' if forecast['inside_interval'] else 'no'}")
    console.print(f"({forecast['interval']['kind']} {forecast['level']:.0%} interval; the bootstrap band alone: "
                  f"[{forecast['bootstrap_lower']:.4f}, {forecast['bootstrap_upper']:.4f}])")
    if forecast["curve"].get("are") is not None:
        console.print(f"whole-curve ARE {100 * forecast['curve']['are']:.2f}%  ({forecast['curve']['note']})")
    console.print(f"compute ratio {forecast['compute_ratio']:.1f}x; loss floor {forecast['loss_floor']:.4f}; "
                  f"wall time {forecast['wall_time_s'] / 60:.1f} min")
    console.print(f"forecast: {fc_path}\nreport:   {report}")
    return forecast


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testbed demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (a rerun resumes it)")
    p.add_argument("--scale", choices=sorted(SCALES), default=None,
                   help="cpu (default without a GPU), gpu (default with one), mini (seconds; for tests)")
    p.add_argument("--jobs", type=int, default=None, help="ladder runs trained at once")
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(argv)
    try:
        run_demo(ns.out, ns.scale, quiet=ns.quiet, jobs=ns.jobs)
    except (DemoError, ConfigError) as e:
        print(f"demo error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
