"""The forecast matrix pooled: median and max |error|, coverage and mean interval half-width per set of cases.

Each set is the JSON rows `demo_fit_look.py` writes (one row per seed, method and target, with the
calibrated 90% interval) or a `benchmarks/forecast.py` cases.json (its rows of targets that did not
finish are left out), given as LABEL=FILE[,FILE...], with @RATIO after the files to keep the cases of
one compute ratio (`"synthetic 30x=a.json,b.json@30"`):

    python benchmarks/recipe/pool.py "synthetic 10x, seeds 9-16=a.json,b.json" "Wikipedia 10x=w.json" \
        --apart "LSTM 10x=lstm.json" --method auto

Prints one Markdown row per set, then the sets pooled (the --apart sets are shown but not pooled).
The half-width is the interval's (upper - lower) / 2 over the forecast, in percent; "x median" is the
mean half-width over the median |error|, the interval goal's ratio (at most about 3x).

With --parts, a second table says what the intervals were made of, per set: the mean sigma (the std
of the log forecast) and each part's mean share of sigma^2 (`analysis.calibrate.interval_parts`),
over the cases whose rows carry `sigma_parts` (forecast.py writes them from e26c74a on).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from analysis.calibrate import PARTS


def cases(spec: str, method: str) -> tuple[str, list[dict]]:
    label, _, files = spec.partition("=")
    files, at, ratio = files.rpartition("@") if "@" in files else (files, "", "")
    if not files:
        raise SystemExit(f"expected LABEL=FILE[,FILE...][@RATIO], got {spec!r}")
    try:
        ratio = float(ratio) if at else None
    except ValueError:
        raise SystemExit(f"{label}: @{ratio} is not a compute ratio (a number, e.g. @10)") from None
    found = [r for f in files.split(",") for r in json.loads(Path(f).read_text())
             if "error" not in r and (ratio is None or nominal(r) == ratio)]
    if method == EQUAL:
        found = equal_weights(found)
    rows = [as_row(r) for r in found if r.get("method", r.get("law")) == method]
    if not rows:
        raise SystemExit(f"{label}: no rows of method {method!r}{f' at {ratio:g}x' if at else ''} in {files}")
    return label, rows


def nominal(row: dict) -> float:
    """A case's compute ratio as the matrix named it (10, 30): its `ratio`, not the `compute_ratio` its shape
    reached (10.002 for a width whose token count rounds up to whole batches)."""
    return float(row.get("ratio", row.get("compute_ratio", 0)))


EQUAL = "equal-weights"


def equal_weights(found: list[dict]) -> list[dict]:
    """forecast.py cases of auto's ensembles re-weighted equally: where auto chose `mix:A=w,B=w` and the
    rows hold A's and B's own forecasts of the same target, the mean of their relative errors; where auto
    forecast with one law, auto's error. No interval: a row of errors only (coverage and width print "-")."""
    by = {}
    for r in found:
        by.setdefault((r.get("seed"), r.get("data"), r.get("shape")), {})[r.get("law")] = r
    out = []
    for laws in by.values():
        auto = laws.get("auto")
        if auto is None:
            continue
        chosen = auto.get("chosen_law", "")
        members = [m.split("=")[0] for m in chosen[4:].split(",")] if chosen.startswith("mix:") else []
        if members and not all(m in laws for m in members):
            continue              # a member's own forecast was not run: no equal-weight error to score
        err = float(np.mean([laws[m]["rel_error"] for m in members])) if members else auto["rel_error"]
        out.append({"method": EQUAL, "err": 100 * err, "halfw": float("nan"), "inside": None})
    return out


def as_row(r: dict) -> dict:
    """A demo_fit_look.py row as is; a forecast.py case in its units (errors and half-widths in percent)."""
    if "method" in r:
        return r
    return {"err": 100 * r["rel_error"], "halfw": 100 * r["half_width"], "inside": r["inside"],
            "parts": r.get("sigma_parts"), "quantile": r.get("quantile"), "seed": r.get("seed"),
            "shape": r.get("shape"), "data": r.get("data"), "compute_ratio": r.get("compute_ratio")}


def parts_row(label: str, rows: list[dict]) -> str | None:
    """Mean sigma and each part's mean share of sigma^2 over the rows that carry their parts (None: none do)."""
    have = [r["parts"] for r in rows if r.get("parts")]
    if not have:
        return None
    sig2 = [sum(p[k] ** 2 for k in PARTS) for p in have]
    shares = [float(np.mean([p[k] ** 2 / s2 if s2 > 0 else 0.0 for p, s2 in zip(have, sig2)])) for k in PARTS]
    return (f"| {label} | {len(have)}/{len(rows)} | {100 * float(np.mean(np.sqrt(sig2))):.2f}% | "
            + " | ".join(f"{100 * x:.0f}%" for x in shares) + " |")


def row(label: str, rows: list[dict]) -> str:
    err = np.abs([r["err"] for r in rows])
    if any(r["inside"] is None for r in rows):      # errors without intervals (--method equal-weights)
        return f"| {label} | {len(rows)} | {float(np.median(err)):.2f}% | {err.max():.2f}% | - | - |"
    med, hw = float(np.median(err)), float(np.mean([r["halfw"] for r in rows]))
    cov = sum(bool(r["inside"]) for r in rows)
    return (f"| {label} | {len(rows)} | {med:.2f}% | {err.max():.2f}% | {cov}/{len(rows)} ({100 * cov / len(rows):.0f}%) "
            f"| ±{hw:.2f}% ({hw / med:.1f}x) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="LABEL=FILE[,FILE...]: demo_fit_look.py outputs or forecast.py cases.json")
    ap.add_argument("--apart", action="append", default=[], help="a set shown but left out of the pooled rows")
    ap.add_argument("--method", default="auto",
                    help=f"a method of the rows, or {EQUAL}: auto's ensembles with their laws weighted equally "
                         "(forecast.py cases that also ran each member law; errors only, no interval)")
    ap.add_argument("--parts", action="store_true", help="also the table of what the intervals were made of")
    a = ap.parse_args()
    pooled = [cases(s, a.method) for s in a.sets]
    apart = [cases(s, a.method) for s in a.apart]
    print(f"| cases ({a.method}) | n | median \\|err\\| | max \\|err\\| | covered (90%) | mean half-width (x median) |")
    print("|---|---|---|---|---|---|")
    for label, rows in pooled:
        print(row(label, rows))
    if len(pooled) > 1:
        print(row("**pooled**", [r for _, rows in pooled for r in rows]))
    for label, rows in apart:
        print(row(label, rows))
    if a.parts:
        print("\n| cases | with parts | mean sigma | parameters (bootstrap) | run scatter | extrapolation | laws apart |")
        print("|---|---|---|---|---|---|---|")
        for label, rows in pooled + apart:
            print(parts_row(label, rows) or f"| {label} | 0/{len(rows)} | | | | | |")


if __name__ == "__main__":
    main()
