"""Fit speed: the Chinchilla Approach-3 procedure (grid + polish + bootstrap) on the published points.

    python benchmarks/fit_speed.py [--data PATH] [--bootstrap 4000] [--drop-lowest-ratio 0] [--check 100]

Prints one table: wall time of each stage of `analysis.fitting.fit` (the 4,500-start grid
evaluated in one numpy pass, L-BFGS-B from the best starts, the batched bootstrap refit),
the same bootstrap done one scipy L-BFGS-B call per replicate on `--check` replicates
(timed, then scaled to the full count), the published procedure's L-BFGS-B from every
grid start (timed on a few starts, scaled), and how often the batched solver and scipy
reach the same optimum on the checked replicates. Wall and CPU seconds are both shown:
on a shared machine the CPU time is the honest measure of the work.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fitting import fit, grid_search, polish
from analysis.laws import get_law
from analysis.objective import prepare
from analysis.uncertainty import bootstrap_runs

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chinchilla_epoch" / "svg_extracted_data.csv"


def load_points(path: Path, drop_lowest_ratio: int) -> pd.DataFrame:
    raw = pd.read_csv(path)
    t = pd.DataFrame({"N": raw["Model Size"], "C": raw["Training FLOP"], "loss": raw["loss"]})
    t["D"] = t["C"] / (6 * t["N"])
    keep = (t["D"] / t["N"]).rank(method="first") > drop_lowest_ratio
    return t[keep].reset_index(drop=True)


class Timer:
    """Wall and CPU seconds of a block (CPU time shows the work when the machine is shared)."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--bootstrap", type=int, default=4000)
    ap.add_argument("--drop-lowest-ratio", type=int, default=0,
                    help="drop this many runs with the fewest tokens per parameter (Besiroglu et al. drop 5)")
    ap.add_argument("--check", type=int, default=100, help="replicates refitted one by one with scipy for comparison")
    ap.add_argument("--published-starts", type=int, default=40, help="grid starts timed for the every-start procedure")
    args = ap.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"data file {args.data} not found (see /work/shared/data/README.md)")

    table = load_points(args.data, args.drop_lowest_ratio)
    law = get_law("chinchilla")
    rows: list[tuple[str, str, str]] = []

    with Timer() as t_total:
        result = fit(table, "chinchilla", bootstrap=args.bootstrap, seed=0)

    # the stages, timed separately
    data = prepare(table, law)
    grid = law.default_starts()
    with Timer() as t_grid:
        best, _ = grid_search(law, data, 1e-3, grid, 8)
    free = np.ones(law.n_params, dtype=bool)
    with Timer() as t_polish:
        polished = [polish(law, data, 1e-3, th, free) for th in best]
    theta_hat = min(polished, key=lambda p: p[1].fun)[0]
    with Timer() as t_boot:
        boot = bootstrap_runs(law, data, theta_hat, delta=1e-3, free=free, n_boot=args.bootstrap, seed=0)

    # reference: scipy L-BFGS-B one replicate at a time, on the first `check` replicates
    k = min(args.check, args.bootstrap)
    gaps, dtheta = [], []
    with Timer() as t_scipy:
        for i in range(k):
            weighted = dataclasses.replace(data, weights=boot.counts_BxR[i][data.run_codes])
            th, res = polish(law, weighted, 1e-3, theta_hat, free)
            gaps.append((boot.objective_B[i] - res.fun) / res.fun)
            dtheta.append(np.abs(th - boot.theta_BxP[i]).max())
    scale_scipy = args.bootstrap / max(k, 1)

    # reference: the published procedure, L-BFGS-B from every one of the 4,500 grid starts
    m = min(args.published_starts, len(grid))
    pick = np.random.default_rng(0).choice(len(grid), m, replace=False)
    with Timer() as t_every:
        for i in pick:
            polish(law, data, 1e-3, grid[i], free)
    scale_every = len(grid) / m

    fmt = lambda t, f=1.0: (f"{t.wall * f:.3f}", f"{t.cpu * f:.3f}")  # noqa: E731
    rows += [
        ("grid: objective at every start, one numpy pass", f"{len(grid)} starts", *fmt(t_grid)),
        ("L-BFGS-B (exact gradient) from the best starts", f"{len(best)} starts", *fmt(t_polish)),
        ("bootstrap: batched Levenberg-Marquardt, all replicates at once",
         f"{args.bootstrap} refits, {boot.iterations} iters", *fmt(t_boot)),
        ("whole fit(): grid + polish + bootstrap", f"{len(table)} points", *fmt(t_total)),
        ("reference: scipy L-BFGS-B per replicate (scaled)", f"{args.bootstrap} refits (timed {k})", *fmt(t_scipy, scale_scipy)),
        ("reference: L-BFGS-B from every grid start (scaled)", f"{len(grid)} starts (timed {m})", *fmt(t_every, scale_every)),
    ]
    same = int(np.sum(np.array(dtheta) < 1e-2))
    print(f"\nChinchilla Approach 3, {len(table)} points; E={result.params['E']:.4f} alpha={result.params['alpha']:.4f} "
          f"beta={result.params['beta']:.4f} objective={result.objective:.7f}; "
          f"bootstrap not converged: {boot.n_not_converged}")
    print(f"batched vs scipy on {k} replicates: same optimum (max |theta diff| < 0.01) on {same}; "
          f"max relative objective gap {max(gaps):.2e} (positive: batched higher), median {np.median(gaps):.1e}\n")
    w = max(len(r[0]) for r in rows)
    print(f"| {'stage'.ljust(w)} | {'size':<28} | wall s | CPU s |")
    print(f"|{'-' * (w + 2)}|{'-' * 30}|--------|-------|")
    for name, size, wall, cpu in rows:
        print(f"| {name.ljust(w)} | {size:<28} | {wall:>6} | {cpu:>5} |")


if __name__ == "__main__":
    main()
