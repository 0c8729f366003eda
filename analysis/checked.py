"""A checked forecast: a planned run forecast from a fitted ladder, written down before it trains, then scored.

`forecast_record(result, table, target)` is the record `testbed demo` writes to
`forecast.json` before its target trains (and `benchmarks/forecast.py` per target):
the point and interval of `analysis.predict.forecast`, the bootstrap band beside it,
the whole forecast curve, what the ladder covered, and where the target lies outside
it (another depth, context, vocabulary or data than the ladder, or more passes over a
finite corpus than any ladder run made: the forecast then extrapolates in a direction
the ladder never varied, and says so). `check(record,
run_dir)` fills in what the trained run reached. Torch-free, like all of analysis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Hyperparameters a ladder holds fixed (or spans) that a law in N and D does not model:
# a target that differs in one of them is forecast by a law that never saw the difference.
_SAME_AS_LADDER = {"kind": "model kind", "context": "context", "vocab_size": "vocabulary",
                   "data_seed": "data seed", "parametrization": "parametrization"}


def outside_ladder(table: pd.DataFrame, target) -> list[str]:
    """What the target config has that the ladder's runs never had (one phrase each)."""
    values = {"kind": target.model.kind, "context": target.model.context, "vocab_size": target.model.vocab_size,
              "data_seed": target.data.seed, "parametrization": target.model.parametrization,
              "depth": target.model.depth}
    out = []
    for col, what in _SAME_AS_LADDER.items():
        if col in table.columns:
            seen = set(table[col].dropna().unique().tolist())
            if seen and values[col] not in seen:
                out.append(f"{what} {values[col]} (ladder: {', '.join(str(v) for v in sorted(seen, key=str))})")
    if "depth" in table.columns:
        depths = table["depth"].dropna()
        if len(depths) and not depths.min() <= values["depth"] <= depths.max():
            out.append(f"depth {values['depth']} (ladder: {int(depths.min())}-{int(depths.max())}; "
                       "the law reads depth only through N)")
    if "path" in table.columns:
        sources, epochs, corpus = _ladder_data(table)
        if sources and target.data.source not in sources:
            out.append(f"data {target.data.source!r} (ladder: {', '.join(sorted(sources))})")
        elif corpus and corpus[0] == tuple(getattr(target.data, k) for k in _CORPUS_KEYS):
            # the ladder's own token cache, read more often than by any ladder run: every law assumes fresh tokens
            corpus = corpus[1]
            seen = target.train.tokens / corpus
            if seen > 1.0 and seen > 1.05 * max(epochs, default=0.0):
                out.append(f"epochs: the target reads its {corpus:,} training tokens {seen:.1f} times (ladder: at "
                           f"most {max(epochs, default=0.0):.2f}); the law assumes every token is fresh")
    return out


# the data settings that make a text corpus's token cache (train.data.text): a target that shares them reads
# the same training tokens as the ladder, so its passes over them can be counted against the ladder's
_CORPUS_KEYS = ("source", "tokenizer", "vocab_size", "val_frac", "max_docs", "text_field", "hf_split")


def _ladder_data(table: pd.DataFrame) -> tuple[set[str], list[float], tuple[tuple, int] | None]:
    """The ladder runs' data sources, how many times each run read its training tokens, and its one corpus.

    Read from the run directories (config.json's data settings; summary.json's data.train_tokens,
    which only a finite corpus has). The corpus, (its `_CORPUS_KEYS` settings, its training tokens), is
    given only when every run read the same one. At most 64 runs are read.
    """
    from train.contract import CONFIG, SUMMARY
    from train.rundir import read_json
    sources, epochs, corpora = set(), [], set()
    for path in table["path"].dropna().unique()[:64]:
        try:
            data = read_json(Path(path) / CONFIG)["data"]
            sources.add(data["source"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        try:
            summary = read_json(Path(path) / SUMMARY)
            size = int(summary["data"]["train_tokens"])
            epochs.append(float(summary["tokens"]) / size)
            corpora.add((tuple(data.get(k) for k in _CORPUS_KEYS), size))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            continue
    return sources, epochs, next(iter(corpora)) if len(corpora) == 1 else None


def forecast_record(result, table: pd.DataFrame, target, *, level: float = 0.9,
                    fitted: pd.DataFrame | None = None) -> dict[str, Any]:
    """The forecast of planned run `target` (a resolved RunConfig) from `result`, fitted on `table`'s runs.

    `fitted`: the rows the law was fitted on (default `table`); the record names their
    smallest token count. The headline interval is calibrated when the fit stores an
    extrapolation error, else the bootstrap band, and `interval` says which.
    """
    from analysis.predict import forecast
    from models.counting import flops_per_token

    fc = forecast(result, target, level=level).run()
    if fc["interval"] == "calibrated":
        interval = {"kind": "calibrated", "sigma": fc["sigma"], "sigma_parts": fc["sigma_parts"],
                    "quantile": result.extrapolation.quantile(level),
                    "extrapolation_error": result.extrapolation.to_dict(),
                    "note": "bootstrap spread, run scatter s0 and extrapolation error k*ln(C/C_ladder) "
                            "measured by backtests inside the ladder (analysis.calibrate)"}
    else:
        interval = {"kind": "bootstrap", "note": "the ladder is too small for a backtest: parameter "
                                                 "(bootstrap over runs) interval only, which ignores law error"}
    finals = table[table["final"]]
    fitted = table if fitted is None else fitted
    c_ladder = float(finals["C"].max())
    c_target = flops_per_token(target.model, target.run.flop_convention) * fc["D"]
    curve = fc["curve"]
    selection = (result.settings or {}).get("selection")
    return {
        "law": result.law, "level": level,
        "predicted": fc["loss"], "lower": fc["lower"], "upper": fc["upper"],
        "bootstrap_lower": fc["bootstrap_lower"], "bootstrap_upper": fc["bootstrap_upper"],
        "interval": interval,
        "actual": None, "abs_rel_error": None, "inside_interval": None,
        "compute_ratio": c_target / c_ladder,
        "outside_ladder": outside_ladder(table, target),
        "target": {"run_id": target.run_id(), "N": fc["N"], "n_convention": result.convention.get("N"), "D": fc["D"],
                   "C": c_target, "width": target.model.width, "depth": target.model.depth},
        "ladder": {"runs": int(finals["run"].nunique()), "max_C": c_ladder,
                   "N_range": [float(finals["N"].min()), float(finals["N"].max())],
                   "D_range": [float(finals["D"].min()), float(finals["D"].max())]},
        "fit": {"params": result.params, "intervals": {k: list(v) for k, v in result.intervals.items()},
                "select": result.settings.get("select"), "min_tokens": float(fitted["D"].min()),
                "warnings": list(result.warnings), "converged": result.converged,
                **({"selection": selection["reasons"]} if selection else {})},
        "curve": {"steps": curve["steps"], "tokens": curve["tokens"], "predicted": curve["loss"],
                  "lower": curve["lower"], "upper": curve["upper"], "note": fc["note"], "actual": None},
        "loss_floor": None,
    }


def check(record: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """The record with what the trained run in `run_dir` reached: actual loss, error, inside, curve ARE."""
    from train.contract import COMPLETED
    from train.rundir import read_run

    _, metrics, summary = read_run(run_dir)
    if not summary or summary.get("status") != COMPLETED:
        raise RuntimeError(f"the target run did not complete (status {summary and summary.get('status')}); "
                           f"see {run_dir}")
    actual = float(summary["final_val_loss"])
    evals = {int(r["step"]): float(r["val_loss"]) for r in metrics if r.get("kind") == "eval"}
    out = dict(record)
    out.update(actual=actual, abs_rel_error=abs(record["predicted"] - actual) / actual,
               inside_interval=bool(record["lower"] <= actual <= record["upper"]),
               loss_floor=summary.get("loss_floor"))
    curve = dict(record["curve"])
    curve["actual"] = [evals.get(int(s)) for s in curve["steps"]]
    pairs = [(p, a) for p, a in zip(curve["predicted"], curve["actual"], strict=True)
             if a is not None and p is not None]
    curve["are"] = float(np.mean([abs(p - a) / a for p, a in pairs])) if pairs else None
    out["curve"] = curve
    out["target"] = {**record["target"], "wall_time_s": summary.get("wall_time_s"),
                     "tokens_per_s": summary.get("tokens_per_s")}
    return out


# ---------------------------------------------------------------------------
# the report of a checked forecast

def plot_target_curve(record: dict[str, Any], path: str | Path) -> Path:
    """The target's forecast curve with its interval, and its actual curve once trained."""
    from analysis.plots import LOSS_LABEL, _figure, _log_xy, _save

    c = record["curve"]
    fig, (ax,) = _figure(height=4.2)
    shown = [(t, p, lo, hi) for t, p, lo, hi in zip(c["tokens"], c["predicted"], c["lower"], c["upper"], strict=True)
             if p is not None]
    if shown:
        t, p, lo, hi = map(list, zip(*shown, strict=True))
        ax.fill_between(t, lo, hi, alpha=0.25, lw=0, label=f"{record['level']:.0%} {record['interval']['kind']} interval")
        ax.plot(t, p, "--", label="forecast (from the ladder only)")
    got = [(t, a) for t, a in zip(c["tokens"], c["actual"] or [None] * len(c["tokens"]), strict=True) if a is not None]
    if got:
        ax.plot(*zip(*got, strict=True), "o-", ms=3, label="actual")
    if record.get("loss_floor"):
        ax.axhline(record["loss_floor"], color="grey", ls=":", lw=1, label="loss floor (exact)")
    _log_xy(ax, log_y=False)
    ax.set(xlabel="tokens D", ylabel=LOSS_LABEL,
           title=f"target run, {record['compute_ratio']:.0f}x the ladder's largest compute")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_report(out_dir: str | Path, table: pd.DataFrame, result, record: dict[str, Any],
                 fitted: pd.DataFrame | None = None) -> Path:
    """OUT/report.md and its figures: ladder curves, the fit, and the target forecast against what it reached."""
    from analysis import plots
    from analysis.report import _img, _interval, _md_table

    out = Path(out_dir)
    figs = out / "report_files"
    figs.mkdir(parents=True, exist_ok=True)
    fitted = table if fitted is None else fitted
    f = record
    curves = plots.plot_curves(table, figs / "ladder_curves.png")
    fit_png = plots.plot_fit(fitted, result, figs / "fit.png", level=f["level"],
                             extrapolate=max(10.0, f["target"]["D"] / table["D"].max()))
    target_png = plot_target_curve(f, figs / "target_curve.png")
    lad, tgt = f["ladder"], f["target"]
    row = {"law": f["law"], "predicted": f["predicted"], "interval": _interval((f["lower"], f["upper"])),
           "actual": f["actual"] if f["actual"] is not None else "-",
           "rel. error": f"{100 * f['abs_rel_error']:.2f}%" if f["abs_rel_error"] is not None else "-",
           "inside": f["inside_interval"] if f["inside_interval"] is not None else "-"}
    fitted_on = (f"every eval point from {f['fit']['min_tokens']:,.0f} tokens on" if f["fit"]["select"] == "all"
                 else "each run's final loss")
    md = ["# A checked forecast", "",
          f"Ladder: {lad['runs']} runs, N {lad['N_range'][0]:,.0f}–{lad['N_range'][1]:,.0f} ({tgt['n_convention']} "
          f"parameters), D {lad['D_range'][0]:,.0f}–{lad['D_range'][1]:,.0f} tokens.",
          f"Target: N = {tgt['N']:,.0f}, D = {tgt['D']:,.0f}, C = {tgt['C']:.3g} FLOPs "
          f"({f['compute_ratio']:.1f}x the largest ladder run).", ""]
    if f.get("outside_ladder"):
        md += ["The target lies outside the ladder in: " + "; ".join(f["outside_ladder"]) + ".", ""]
    md += _md_table(pd.DataFrame([row]))
    md += ["", f"Interval: {f['level']:.0%}, {f['interval']['kind']} ({f['interval']['note']}). The bootstrap band "
           f"alone (parameter uncertainty over runs) is {_interval((f['bootstrap_lower'], f['bootstrap_upper']))}.",
           "", f"Law: {f['law']}, fitted on {fitted_on}."]
    if f["fit"].get("selection"):
        md += ["", "Why this law: " + "; ".join(f["fit"]["selection"]) + "."]
    params = pd.DataFrame([{"parameter": k, "estimate": v, "interval": _interval(f["fit"]["intervals"].get(k))}
                           for k, v in f["fit"]["params"].items()])
    md += ["", f"Fitted parameters ({f['level']:.0%} bootstrap intervals over runs):", "", *_md_table(params)]
    if f["fit"]["warnings"]:
        md += ["", "Fit warnings: " + "; ".join(f["fit"]["warnings"])]
    md += ["", _img(curves, out, "ladder curves"), "", _img(fit_png, out, "fit"), "", _img(target_png, out, "target"), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
