"""What the bootstrap refits the batched solver leaves unconverged do to a forecast.

Fits LAW on a ladder as the demo does (every eval point from 153.6k tokens, depth-2 runs), refits
1,000 run-level bootstrap replicates with `analysis.uncertainty.bootstrap_runs`, finishes each
replicate it leaves unconverged with L-BFGS-B (`analysis.fitting.polish`, on that replicate's
weights), and prints how far those replicates were from their optimum and how the target's
forecast and its 5-95% bootstrap band move.

    python benchmarks/recipe/boot_unconverged.py DEMO_DIR/ladder DEMO_DIR/target schedule
"""
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from analysis.fitting import fit, polish
from analysis.laws import get_law
from analysis.load import load_runs
from analysis.objective import prepare
from analysis.predict import run_covariates
from analysis.uncertainty import bootstrap_runs
from testbed.demo import fitted_rows
from testbed.preset import DemoPreset, FitPlan
from train.config import RunConfig

warnings.filterwarnings("ignore")
ladder, target, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
table = load_runs(ladder)
rows = fitted_rows(table[table["depth"] == 2], DemoPreset(name="x", ladder={}, target={},
                                                          fit=FitPlan(law=name, min_tokens=153600, bootstrap=0)))
law = get_law(name)
res = fit(rows, name, bootstrap=0)
data = prepare(rows, law, select=res.settings["select"])
delta, free = res.settings["delta"], np.ones(law.n_params, bool)
t0 = time.time()
boot = bootstrap_runs(law, data, law.to_theta(res.params), delta=delta, free=free, n_boot=1000, seed=0)
print(f"batched solver: {time.time() - t0:.1f} s, {boot.n_not_converged} of 1000 not converged")
bad = np.flatnonzero(~boot.converged_B)
W = boot.counts_BxR[:, data.run_codes] * data.weights
finished, gaps = boot.theta_BxP.copy(), []
t0 = time.time()
for b in bad:
    finished[b], r = polish(law, dataclasses.replace(data, weights=W[b]), delta, boot.theta_BxP[b].copy(), free)
    gaps.append((boot.objective_B[b] - r.fun) / r.fun)
print(f"L-BFGS-B on the {bad.size} unconverged: {time.time() - t0:.1f} s")
if bad.size:
    print(f"their objective above their own optimum: median {np.median(gaps):.2%}, max {np.max(gaps):.2%}")
cfg = RunConfig.from_dict(json.loads((target / "config.json").read_text()))
cov = {k: np.asarray(v[-1:], float) for k, v in run_covariates(res, cfg)[0].items()}


def final_loss(theta):
    return np.exp(law.log_predict_grad(theta, cov, False)[0][:, 0])


before, after = final_loss(boot.theta_BxP), final_loss(finished)
if bad.size:
    print(f"each unconverged replicate's forecast moves by {np.median(np.abs(after[bad] / before[bad] - 1)):.2%} (median)")
print("5-95% band of the target's final loss: batched", np.round(np.percentile(before, [5, 95]), 4),
      "finished", np.round(np.percentile(after, [5, 95]), 4))
