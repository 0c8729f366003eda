"""Backtest the laws on published scaling data: fit the small-compute runs, forecast the largest.

Data: the Chinchilla points extracted by Besiroglu et al. 2024 (see
/work/shared/data/README.md). Leave-largest-out at several compute cutoffs; for
each law and cutoff the table shows the mean and max |relative error| of the
held-out final losses and how often the actual loss falls inside the 90%
intervals: the parameter interval (bootstrap over runs; here every row is its
own run) and the predictive interval (plus resampled fit residuals).

    python benchmarks/backtest_published.py [--csv PATH] [--bootstrap 200]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from analysis.backtest import leaderboard_results
from analysis.load import load_table

DEFAULT_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chinchilla_epoch" / "svg_extracted_data.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(DEFAULT_CSV))
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--laws", default="chinchilla,kaplan,compute")
    ap.add_argument("--cutoffs", default="1e20,3e20,1e21", help="compute cutoffs in FLOPs")
    args = ap.parse_args()
    table = load_table(args.csv, 'N="Model Size",C="Training FLOP",loss=loss')
    laws = args.laws.split(",")
    out = Table(title=f"leave-largest-out on {len(table)} published points (bootstrap {args.bootstrap}, 90% intervals)")
    for col in ("cutoff C", "train/held-out", "max extrapolation", "law", "mean |rel err|", "max |rel err|",
                "coverage (param)", "coverage (predictive)", "seconds"):
        out.add_column(col, justify="right")
    for cut in (float(c) for c in args.cutoffs.split(",")):
        board, _ = leaderboard_results(table, laws, cutoff=cut, bootstrap=args.bootstrap, level=0.9)
        for row in board.itertuples(index=False):
            if row.error:
                out.add_row(f"{cut:.0e}", "-", "-", row.law, row.error, "", "", "", "")
                continue
            out.add_row(f"{cut:.0e}", f"{row.n_train_runs}/{row.n_holdout_runs}", f"{row.max_extrapolation:.0f}x",
                        row.law, f"{row.mean_abs_rel_err:.2%}", f"{row.max_abs_rel_err:.2%}", f"{row.coverage:.0%}",
                        f"{row.coverage_predictive:.0%}", f"{row.seconds:.1f}")
    Console(width=140).print(out)


if __name__ == "__main__":
    main()
