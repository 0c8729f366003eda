"""How much of a Kaplan-form forecast comes from the bound on log Nc?

On the demo's CPU ladders the Kaplan-form fits put log Nc at its upper bound (80):
the size term stands in for an irreducible loss the law lacks. This refits the
ladders that `benchmarks/forecast.py --demo-cpu` trained (reusing its output
directory; nothing is trained) with the bound as shipped and widened, and prints
each forecast's error on the seed's 10x target. The rows fitted are the demo's
(`testbed.demo._fit_rows`: eval points from the cpu scale's fit_min_tokens on).

    python benchmarks/forecast_bound_check.py --out /tmp/fcb/democpu --seeds 0,1,2 --bound 150
"""
from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path

from analysis.fitting import fit
from analysis.laws import get_law
from analysis.load import load_runs
from testbed.demo import SCALES, _fit_rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory of benchmarks/forecast.py --demo-cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bound", type=float, default=150.0, help="the widened upper bound on log Nc")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    for name, select in (("kaplan-schedule", "all"), ("kaplan", "final")):
        law = get_law(name)
        lo, hi = law.bounds[0]
        wide = dataclasses.replace(law, bounds=((lo, args.bound),) + law.bounds[1:])
        for s in (int(x) for x in args.seeds.split(",")):
            seed_dir = Path(args.out) / f"seed{s}"
            t = load_runs(seed_dir / "ladder", n_convention="non_embedding")
            target = load_runs(seed_dir / "target-x10", n_convention="non_embedding")
            rows = _fit_rows(t, dataclasses.replace(SCALES["cpu"], select=select))
            final = target[target["final"]]
            cov = {c: final[c].to_numpy() for c in law.covariates}
            errs = [100 * (fit(rows, lw, select=select, n_convention="non_embedding").predict(**cov)[0]
                           / final["loss"].iloc[0] - 1) for lw in (law, wide)]
            print(f"{name:16s} seed {s}: log Nc <= {hi:g}: {errs[0]:+.2f}%   <= {args.bound:g}: {errs[1]:+.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
