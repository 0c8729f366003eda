"""kaplan-schedule v2's start grid on recipe ladders: the first, coarser grid against the law's own.

Per seed of each ladder (depth-2 runs, every eval point from 153.6k tokens, the demo's rows), the fit
from each grid (best 8 starts polished, as by default): its objective, a, log B and seconds. A grid that
lands in the flat basin where the B term swamps 1/S1 shows a higher objective there.

    python benchmarks/recipe/ks_start_grid.py /work/scratch/h15b/synth_wsd_v2 /work/scratch/h15b/synth_wsd_v2b
"""
import itertools
import logging
import sys
import time

import numpy as np

from analysis.fitting import fit
from analysis.laws import _grid
from analysis.load import load_runs
from testbed.demo import fitted_rows
from testbed.preset import DemoPreset, FitPlan

logging.disable(logging.WARNING)
GRIDS = {
    "first (log B every 10, 2,400 starts)": np.array(list(itertools.product(
        _grid(0.5, 3.5, 5), _grid(-30, 10, 5), _grid(0.2, 1.4, 4), (0.02, 0.08, 0.2, 0.5), _grid(-30, -5, 6)))),
    "the law's (log B every 5, 4,320 starts)": None,
}
preset = DemoPreset(name="x", ladder={}, fit=FitPlan(law="kaplan-schedule", min_tokens=153600, bootstrap=0), target={})
print("| ladder | seed | grid | objective | a | log B | s |\n|---|---|---|---|---|---|---|")
for ladder in sys.argv[1:]:
    table = load_runs(ladder)
    table = table[table["depth"] == 2]
    for seed in sorted(table["seed"].unique()):
        rows = fitted_rows(table[table["seed"] == seed], preset)
        for name, starts in GRIDS.items():
            t0 = time.perf_counter()
            r = fit(rows, "kaplan-schedule", select="all", starts=starts)
            print(f"| {ladder.rstrip('/').split('/')[-1]} | {seed} | {name} | {r.objective:.3g} | {r.params['a']:.2f} | "
                  f"{np.log(r.params['B']):.1f} | {time.perf_counter() - t0:.1f} |", flush=True)
