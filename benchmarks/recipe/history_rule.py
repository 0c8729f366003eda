"""The interval calibrated on past forecasts (`analysis.history`), scored on matrix rows it did not see.

Per corpus (the rows' `data`), the history's auto rows give the split conformal quantile q of
|ln(actual / predicted)| / ln(compute ratio); each scored row's interval is predicted * exp(-/+ q ln(its
compute ratio)). Printed per set of scored rows and corpus, beside the interval the row printed (the
ladder's own, `analysis.calibrate`): covered, mean half-width ((upper - lower) / 2 over the forecast) and
its ratio to the median |error|, the issue's width measure.

    C=benchmarks/recipe/cases
    python benchmarks/recipe/history_rule.py --history $C/dev_two_inits_synth_s27_33.json,$C/dev_two_inits_wiki_s8_12.json \
        "fresh (27)-(28)=$C/synth_s34.json,...,$C/wiki_s16_10x.json"

With --leave-seed-out each scored row is calibrated on the history's rows of its corpus from other seeds
(a row's own seed's forecasts share its ladder, so they are not exchangeable with it); scoring the history
on itself this way is a leave-one-seed-out estimate of what the history interval does for a new seed:

    python benchmarks/recipe/history_rule.py --history $ALL --leave-seed-out "every read row=$ALL"

A set is LABEL=FILE[,FILE...][@RATIO], as for `pool.py`. Measured in benchmarks/recipe/README.md, sections
(29)-(30).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]

import pool  # noqa: E402  (benchmarks/recipe/pool.py: its LABEL=FILE@RATIO sets and rows)
from analysis.history import conformal_quantile, history_scores, load_history  # noqa: E402


def quantiles(files: list[str], level: float, leave_out=None) -> dict[str, tuple[float, int]]:
    """{corpus: (q, n)} from the auto rows of the history files, without the rows of (corpus, seed) `leave_out`."""
    rows = [r for r in load_history(files, law="auto")
            if leave_out is None or (str(r.get("data")), r.get("seed")) != leave_out]
    out = {}
    for data in sorted({str(r.get("data")) for r in rows}):
        s = history_scores([r for r in rows if str(r.get("data")) == data])
        out[data] = (conformal_quantile(s, level), len(s))
    return out


def log_half_width(row: dict) -> float:
    """The half-width in log space of the interval a pool.py row printed: its quantile times its sigma."""
    if not row.get("parts") or not row.get("quantile"):
        raise SystemExit(f"a row without sigma's parts ({row.get('shape')}, seed {row.get('seed')}): its printed "
                         "interval cannot be rebuilt")
    return float(row["quantile"] * np.sqrt(sum(v ** 2 for v in row["parts"].values())))


def cells(err: np.ndarray, half: np.ndarray) -> str:
    """covered, mean half-width (x median |error|) of log half-widths `half` around log errors `err`."""
    med = float(np.median(np.abs(np.expm1(err))))
    hw = float(np.mean(np.sinh(half)))
    return f"{int(np.sum(np.abs(err) <= half))}/{len(err)} | ±{hw:.2%} ({hw / med:.1f}x)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="LABEL=FILE[,FILE...][@RATIO]: rows to score")
    ap.add_argument("--history", required=True, help="FILE[,FILE...]: the checked forecasts to calibrate on")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--leave-seed-out", action="store_true",
                    help="calibrate each scored row on the history without its own corpus and seed")
    a = ap.parse_args(argv)
    q = quantiles(a.history.split(","), a.level)
    print("| corpus | history forecasts | q (per unit ln ratio) |")
    print("|---|---|---|")
    for data, (qq, n) in q.items():
        print(f"| {data} | {n} | {qq:.4f} |")
    print("\n| rows | corpus | n | median \\|err\\| | as printed: covered | half-width | history: covered | half-width |")
    print("|---|---|---|---|---|---|---|---|")
    def qs(row: dict) -> float:
        """The history's q for a scored row (without the row's own seed, with --leave-seed-out)."""
        if not a.leave_seed_out:
            return q[str(row["data"])][0]
        key = (str(row["data"]), row.get("seed"))
        if key not in left:
            left[key] = quantiles(a.history.split(","), a.level, leave_out=key)[key[0]][0]
        return left[key]

    left: dict = {}
    for label, rows in (pool.cases(s, "auto") for s in a.sets):
        missing = sorted({str(r["data"]) for r in rows} - set(q))
        if missing:
            raise SystemExit(f"{label}: the history has no rows of corpus {', '.join(missing)}")
        for data in [*sorted({str(r["data"]) for r in rows}), "all"]:
            g = [r for r in rows if data in ("all", str(r["data"]))]
            # pool's rows: err = 100 (predicted - actual) / actual; the printed interval is predicted * exp(-/+ q sigma)
            err = -np.log1p(np.array([r["err"] for r in g]) / 100)              # ln(actual / predicted)
            printed = np.array([log_half_width(r) for r in g])
            hist = np.array([qs(r) * np.log(float(r["compute_ratio"])) for r in g])
            med = float(np.median(np.abs([r["err"] for r in g]))) / 100
            print(f"| {label} | {data} | {len(g)} | {med:.2%} | {cells(err, printed)} | {cells(err, hist)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
