"""How the schedule laws' forecasts depend on the annealing decay lambda, and whether a ladder can pick it.

S2, the annealing area of Tissue et al. 2024 (`analysis.schedule`), remembers each lr drop with a
momentum-like decay lambda per optimizer step (0.999 in the paper and here: a memory of ~1,000 steps).
For every lambda in --decays this refits the law on the ladder (the demo's rows: every eval point from
153.6k tokens, depth-2 runs, no bootstrap) and prints, per seed and law:

- obj: the fit's own objective (what profiling lambda in the fit would minimize);
- bt: a cooldown-length backtest inside the ladder: fit on every point at D <= half the longest budget,
  forecast the final loss of the runs at the longest budget (mean |log error|, %);
- the point forecast's error on every trained target under TARGETS/seedS/ (median and max |err|, %).

    python benchmarks/recipe/decay_scan.py LADDER_DIR[,DIR...] TARGETS_DIR SEEDS OUT.json [--laws L,L] [--decays D,D]

Several ladder directories are read as one ladder (e.g. the ladder plus one longer run).
"""
import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import analysis.schedule as schedule
from analysis.fitting import fit
from analysis.load import load_runs
from analysis.predict import run_covariates
from testbed.demo import fitted_rows
from testbed.preset import DemoPreset, FitPlan
from train.config import RunConfig


def targets(fl_dir: Path, seed: int):
    for tdir in sorted((fl_dir / f"seed{seed}").glob("w*d*/")):
        if (tdir / "summary.json").exists():
            cfg = RunConfig.from_dict(json.loads((tdir / "config.json").read_text()))
            yield tdir.name, cfg, json.loads((tdir / "summary.json").read_text())["final_val_loss"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ladders")
    ap.add_argument("targets")
    ap.add_argument("seeds")
    ap.add_argument("out")
    ap.add_argument("--laws", default="kaplan-schedule,schedule")
    ap.add_argument("--decays", default="0.9995,0.999,0.998,0.995,0.99,0.98,0.95")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in a.seeds.split(",")]
    default = schedule.run_schedule_features.__defaults__
    rows = []
    try:
        for lam in (float(x) for x in a.decays.split(",")):
            # every reader of S1/S2 (the loader, the forecast) calls run_schedule_features with its default decay
            schedule.run_schedule_features.__defaults__ = (lam,)
            table = load_runs(a.ladders.split(","))   # several directories: one table, the declared N kept
            table = table[table["depth"] == 2]
            for seed in seeds:
                t = table[table["seed"] == seed]
                for law in a.laws.split(","):
                    plan = DemoPreset(name="scan", ladder={}, fit=FitPlan(law=law, min_tokens=153600, bootstrap=0), target={})
                    fr = fitted_rows(t, plan)
                    res = fit(fr, law, bootstrap=0, seed=0)
                    dmax = fr["D"].max()
                    train, test = fr[fr["D"] <= dmax / 2 + 1], fr[fr["final"] & (fr["D"] > dmax / 2 + 1)]
                    bt = fit(train, law, bootstrap=0, seed=0)
                    col = "N_" + bt.convention["N"]
                    p = bt.predict(N=test[col].to_numpy(float), S1=test["S1"].to_numpy(float), S2=test["S2"].to_numpy(float))
                    bt_err = float(np.mean(np.abs(100 * np.log(np.asarray(p) / test["loss"].to_numpy(float)))))
                    errs = {name: 100 * (float(res.predict(**run_covariates(res, cfg)[0])[-1]) / actual - 1)
                            for name, cfg, actual in targets(Path(a.targets), seed)}
                    e = np.abs(list(errs.values()))
                    rows.append(dict(decay=lam, seed=seed, law=law, obj=res.objective, bt=bt_err,
                                     median=float(np.median(e)), max=float(e.max()), errs=errs,
                                     bound=any("bound" in w for w in res.warnings)))
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        schedule.run_schedule_features.__defaults__ = default
    Path(a.out).write_text(json.dumps(rows, indent=1))
    d = pd.DataFrame(rows)
    d["obj"] *= 1e5
    for law, g in d.groupby("law"):
        print(f"\n{law}: per decay, summed over seeds {seeds}")
        s = g.groupby("decay").agg(obj_x1e5=("obj", "sum"), bt=("bt", "mean"),
                                   median=("errs", lambda es: float(np.median(np.abs([v for e in es for v in e.values()])))),
                                   max=("max", "max"))
        print(s.round(2).to_string())
        picked = g.loc[g.groupby("seed")["obj"].idxmin(), ["seed", "decay"]].values.tolist()
        by_bt = g.loc[g.groupby("seed")["bt"].idxmin(), ["seed", "decay"]].values.tolist()
        print("decay with the lowest objective per seed:", picked, "; lowest cooldown backtest:", by_bt)


if __name__ == "__main__":
    main()
