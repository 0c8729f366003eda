"""Backtest the laws on published scaling data: fit the small-compute runs, forecast the largest.

Data: the Chinchilla points extracted by Besiroglu et al. 2024 (see
/work/shared/data/README.md). Leave-largest-out at several compute cutoffs; for
each law and cutoff the table shows the mean and max |relative error| of the
held-out final losses and,
for each of the three 90% intervals, how often the actual loss falls inside and
its mean relative half-width:

- bootstrap: the parameter band (bootstrap over runs; here every row is its own run);
- predictive: that band plus resampled fit residuals;
- calibrated: what `testbed fit --calibrate` gives (`analysis.calibrate`): the
  fit on the runs up to the cutoff measures its own extrapolation error by
  rollout backtests on those runs (s0, k shown), and the interval grows with
  each held-out run's distance.

First it prints the leaderboard's ranking (`analysis.backtest.leaderboard`): rollout
backtests over the whole table, weighted toward the farthest forecasts.

    python benchmarks/backtest_published.py [--csv PATH] [--bootstrap 200] [--laws ...] [--cutoffs ...]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from analysis.backtest import leaderboard_results
from analysis.calibrate import calibrated_backtest
from analysis.console import print_table
from analysis.load import load

DEFAULT_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chinchilla_epoch" / "svg_extracted_data.csv"
COLUMNS = 'N="Model Size",C="Training FLOP",loss=loss'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(DEFAULT_CSV))
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--laws", default="chinchilla,kaplan,compute")
    ap.add_argument("--cutoffs", default="3e19,1e20,3e20,1e21", help="compute cutoffs in FLOPs")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (for benchmarks/README.md)")
    args = ap.parse_args()
    table = load(args.csv, columns=COLUMNS)
    laws = args.laws.split(",")
    head = ("cutoff C", "train/held-out", "max extrapolation", "law", "mean |rel err|",
            "max |rel err|", "bootstrap cov / width", "predictive cov / width", "calibrated cov / width",
            "s0 / k", "seconds")
    rows, ranking = [], ""
    for cut in (float(c) for c in args.cutoffs.split(",")):
        board, _ = leaderboard_results(table, laws, cutoff=cut, bootstrap=args.bootstrap, level=0.9)
        # the ranking's rollout runs over the whole table, on cutoffs shared by the laws: the same at every cutoff
        ranking = ", ".join(f"{r.law} {r.far_err:.2%} ({r.rollout_forecasts} forecasts, up to "
                            f"{r.rollout_max_extrapolation:.0f}x)" for r in board.itertuples() if not r.error)
        for row in board.itertuples(index=False):
            if row.error:
                rows.append((f"{cut:.0e}", "-", "-", row.law, row.error, *[""] * 6))
                continue
            t0 = time.perf_counter()
            s = calibrated_backtest(table, row.law, cutoff=cut, bootstrap=args.bootstrap, level=0.9).summary
            rows.append((f"{cut:.0e}", f"{row.n_train_runs}/{row.n_holdout_runs}", f"{row.max_extrapolation:.0f}x",
                         row.law, f"{row.mean_abs_rel_err:.2%}", f"{row.max_abs_rel_err:.2%}",
                         f"{row.coverage:.0%} / ±{s['width_bootstrap']:.2%}",
                         f"{row.coverage_predictive:.0%} / ±{s['width_predictive']:.2%}",
                         f"{s['coverage_calibrated']:.0%} / ±{s['width_calibrated']:.2%}",
                         f"{s['s0']:.2%} / {s['k']:.2%}", f"{row.seconds + time.perf_counter() - t0:.1f}"))
    print(f"leaderboard (far-end weighted rollout error, best first): {ranking}\n")
    print_table(head, rows, f"leave-largest-out on {len(table)} published points (bootstrap {args.bootstrap}, "
                "90% intervals)", markdown=args.markdown)


if __name__ == "__main__":
    main()
