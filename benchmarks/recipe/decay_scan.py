"""How the schedule laws' forecasts depend on the annealing term's memory, and whether a ladder can pick it.

S2, the annealing area of Tissue et al. 2024 (`analysis.schedule`), remembers each lr drop with a
momentum-like decay lambda per optimizer step (0.999 in the paper and here: a memory of ~1,000 steps).
This script swaps in other memories, refits the law on the ladder for each (the demo's rows: every eval
point from 153.6k tokens, depth-2 runs, no bootstrap) and prints, per seed and law:

- obj: the fit's own objective (what profiling the memory in the fit would minimize);
- bt: a cooldown-length backtest inside the ladder: fit on every point at D <= half the longest budget,
  forecast the final loss of the runs at the longest budget (mean |log error|, %);
- the point forecast's error on every trained target under TARGETS/seedS/ (median and max |err|, %).

A memory (--memories) is one of
- `step:LAMBDA`: the product's S2, decay LAMBDA per optimizer step (`analysis.schedule.schedule_features`);
- `area:TAU`: each drop relaxes exponentially in the lr area that follows it,
  S2(t) = TAU * sum_k drop_k (1 - exp(-a_k(t) / TAU)), with a_k(t) the sum of lr/peak over steps k..t
  (a first-order relaxation: the noise part of the loss follows the lr at a rate set by the lr itself);
- `power:TAU:BETA`: the same with the power-law relaxation of the multi-power law (Luo et al. 2025, its
  G(x) = 1 - (1 + x / TAU)^-BETA, without the lr^-gamma rescaling of the area), a mix of relaxation rates.
Every S2 is in tokens (times the batch), like the product's. A gain (--gains) rescales S2 per run:
`1` (none), `N^C` (by (N / 1e5)^C: an annealing gain that grows with size) or `lr^C` (by (peak lr /
0.01)^C; `lr^1` is Tissue et al.'s S2 in the absolute lr rather than the lr over its peak).

    python benchmarks/recipe/decay_scan.py LADDER_DIR[,DIR...] TARGETS_DIR SEEDS OUT.json \
        [--laws L,L] [--memories step:0.999,area:60,...] [--gains 1,lr^1,...]

Several ladder directories are read as one ladder (e.g. the ladder plus one longer run). The default
memories are section (20)'s lambdas.
"""
import argparse
import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import analysis.schedule as schedule
from analysis.fitting import fit
from analysis.laws import get_law
from analysis.load import load_runs, n_convention
from analysis.predict import run_covariates
from testbed.demo import fitted_rows
from testbed.preset import DemoPreset, FitPlan
from train.config import RunConfig


def targets(fl_dir: Path, seed: int):
    for tdir in sorted((fl_dir / f"seed{seed}").glob("w*d*/")):
        if (tdir / "summary.json").exists():
            cfg = RunConfig.from_dict(json.loads((tdir / "config.json").read_text()))
            yield tdir.name, cfg, json.loads((tdir / "summary.json").read_text())["final_val_loss"]


def relaxed_features(tau: float, beta: float | None):
    """A drop-in for `analysis.schedule.schedule_features` whose S2 relaxes in the lr area (see the docstring):
    exponentially when `beta` is None, else by the multi-power law's G."""
    def features(lr_curve, steps, decay=None, *, tokens_per_step=1.0, peak=None):
        eta = np.asarray(lr_curve, dtype=np.float64)
        eta = eta / (float(eta.max()) if peak is None else float(peak))
        drop = np.zeros_like(eta)
        drop[1:] = eta[:-1] - eta[1:]
        drop[: int(np.argmax(eta)) + 1] = 0.0            # no annealing credit in warmup, as the product's S2
        area = np.cumsum(eta)                            # area[t]: lr/peak summed over steps 1..t+1
        before = area - eta                              # the area before step k, so a_k(t) = area[t] - before[k]
        idx = np.atleast_1d(np.asarray(steps)).astype(int) - 1
        drops = np.nonzero(drop)[0]
        S2 = np.zeros(idx.size)
        for j, t in enumerate(idx):
            k = drops[drops <= t]
            a = area[t] - before[k]
            G = 1.0 - (np.exp(-a / tau) if beta is None else (1.0 + a / tau) ** -beta)
            S2[j] = tau * np.sum(drop[k] * G)
        return area[idx] * tokens_per_step, S2 * tokens_per_step
    return features


def memory_features(memory: str):
    kind, *v = memory.split(":")
    if kind == "step":
        return lambda lr_curve, steps, decay=None, **kw: PRODUCT(lr_curve, steps, float(v[0]), **kw)
    if kind == "area":
        return relaxed_features(float(v[0]), None)
    if kind == "power":
        return relaxed_features(float(v[0]), float(v[1]))
    raise SystemExit(f"--memories: {memory!r} is not step:LAMBDA, area:TAU or power:TAU:BETA")


def gain_scale(gain: str):
    """(per-row scale of the fitted table, scale of a target from its N and config)."""
    if gain == "1":
        return (lambda rows, ncol: 1.0), (lambda N, cfg: 1.0)
    what, _, c = gain.partition("^")
    c = float(c)
    if what == "N":
        return (lambda rows, ncol: (rows[ncol].to_numpy(float) / 1e5) ** c), (lambda N, cfg: (np.asarray(N) / 1e5) ** c)
    if what == "lr":
        return (lambda rows, ncol: (rows["lr_peak"].to_numpy(float) / 0.01) ** c), (lambda N, cfg: (cfg.optim.lr / 0.01) ** c)
    raise SystemExit(f"--gains: {gain!r} is not 1, N^C or lr^C")


PRODUCT = schedule.schedule_features


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ladders")
    ap.add_argument("targets")
    ap.add_argument("seeds")
    ap.add_argument("out")
    ap.add_argument("--laws", default="kaplan-schedule,schedule")
    ap.add_argument("--memories", default="step:0.9995,step:0.999,step:0.998,step:0.995,step:0.99,step:0.98,step:0.95")
    ap.add_argument("--gains", default="1")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = []
    try:
        for memory in a.memories.split(","):
            # every reader of S1/S2 (the loader, the forecast) goes through schedule.schedule_features
            schedule.schedule_features = memory_features(memory)
            table = load_runs(a.ladders.split(","))   # several directories: one table, the declared N kept
            table = table[table["depth"] == 2]
            for seed, law, gain in itertools.product(seeds, a.laws.split(","), a.gains.split(",")):
                rows_scale, target_scale = gain_scale(gain)
                plan = DemoPreset(name="scan", ladder={}, fit=FitPlan(law=law, min_tokens=153600, bootstrap=0), target={})
                fr = fitted_rows(table[table["seed"] == seed], plan).copy()
                ncol = "N_" + n_convention(fr, get_law(law))[0]     # the convention the fit below takes
                fr["S2"] = fr["S2"] * rows_scale(fr, ncol)
                res = fit(fr, law, bootstrap=0, seed=0)
                assert "N_" + res.convention["N"] == ncol, (res.convention, ncol)
                dmax = fr["D"].max()
                train, test = fr[fr["D"] <= dmax / 2 + 1], fr[fr["final"] & (fr["D"] > dmax / 2 + 1)]
                bt = fit(train, law, bootstrap=0, seed=0)
                p = bt.predict(N=test[ncol].to_numpy(float), S1=test["S1"].to_numpy(float), S2=test["S2"].to_numpy(float))
                bt_err = float(np.mean(np.abs(100 * np.log(np.asarray(p) / test["loss"].to_numpy(float)))))
                errs = {}
                for name, cfg, actual in targets(Path(a.targets), seed):
                    cov = dict(run_covariates(res, cfg)[0])
                    cov["S2"] = cov["S2"] * target_scale(cov["N"], cfg)
                    errs[name] = 100 * (float(res.predict(**cov)[-1]) / actual - 1)
                e = np.abs(list(errs.values()))
                rows.append(dict(memory=memory, gain=gain, seed=seed, law=law, obj=res.objective, bt=bt_err,
                                 median=float(np.median(e)), max=float(e.max()), errs=errs,
                                 bound=any("bound" in w for w in res.warnings)))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        schedule.schedule_features = PRODUCT
    Path(a.out).write_text(json.dumps(rows, indent=1))
    d = pd.DataFrame(rows)
    d["obj"] *= 1e5
    d["setting"] = d["memory"] + (" " + d["gain"]).where(d["gain"] != "1", "")
    for law, g in d.groupby("law"):
        print(f"\n{law}: per setting, summed over seeds {seeds}")
        s = g.groupby("setting", sort=False).agg(
            obj_x1e5=("obj", "sum"), bt=("bt", "mean"),
            median=("errs", lambda es: float(np.median(np.abs([v for e in es for v in e.values()])))),
            max=("max", "max"),
            signed=("errs", lambda es: float(np.mean([v for e in es for v in e.values()]))))
        print(s.round(2).to_string())
        by_obj = g.loc[g.groupby("seed")["obj"].idxmin(), ["seed", "setting"]].values.tolist()
        by_bt = g.loc[g.groupby("seed")["bt"].idxmin(), ["seed", "setting"]].values.tolist()
        print("lowest objective per seed:", by_obj, "; lowest cooldown backtest:", by_bt)


if __name__ == "__main__":
    main()
