"""The demo's own fit on a recipe ladder, scored on the first-look targets: per seed, `testbed.demo.fit_ladder`
(a law, or auto; depth-2 runs; every eval point from 153.6k tokens) with its calibrated 90% interval, then
`analysis.checked.forecast_record` for each trained target under FIRST_LOOK/seedS/.

    python benchmarks/recipe/demo_fit_look.py LADDER_DIR FIRST_LOOK_DIR auto,kaplan-schedule,kaplan OUT.json [SEEDS]

SEEDS (e.g. 9,10): score only these seeds of the ladder. LADDER_DIR may list several directories
(comma-separated), read as one ladder. `--decay LAMBDA` (anywhere in the arguments) sets the annealing
decay of S2 for the loader, the fit and the forecasts instead of `analysis.schedule.DECAY`.
`--curves-only`: auto chooses among the laws of whole curves only (the CPU presets' `fit.curves_only`).
"""
import json
import sys
from pathlib import Path
import pandas as pd
from analysis.load import load_runs
from analysis.checked import forecast_record
from testbed.demo import fit_ladder, fitted_rows
from testbed.preset import DemoPreset, FitPlan
from train.config import RunConfig

# `--curves-only`: auto chooses among the laws of whole curves only, as the CPU presets do (fit.curves_only)
CURVES_ONLY = "--curves-only" in sys.argv
if CURVES_ONLY:
    sys.argv.remove("--curves-only")
if "--decay" in sys.argv:
    import analysis.schedule
    at = sys.argv.index("--decay")
    if at + 1 >= len(sys.argv):
        raise SystemExit("--decay needs a value, e.g. --decay 0.998")
    # every reader of S1/S2 (the loader, the forecast) calls run_schedule_features with its default decay
    analysis.schedule.run_schedule_features.__defaults__ = (float(sys.argv[at + 1]),)
    del sys.argv[at:at + 2]
ladder_dir, fl_dir, laws = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
table = load_runs(ladder_dir.split(","))   # several directories: one table, the sweep spec's declared N kept
table = table[table["depth"] == 2]
if len(sys.argv) > 5:
    table = table[table["seed"].isin([int(x) for x in sys.argv[5].split(",")])]
out = []
for seed in sorted(table["seed"].unique()):
    t = table[table["seed"] == seed]
    for law in laws:
        preset = DemoPreset(name="x", ladder={}, fit=FitPlan(law=law, min_tokens=153600, bootstrap=200, curves_only=CURVES_ONLY), target={})
        try:
            res = fit_ladder(t, preset)
        except Exception as e:
            print(seed, law, "fit failed", e)
            continue
        for tdir in sorted((fl_dir / f"seed{seed}").glob("w*d*/")):
            if not (tdir / "summary.json").exists():
                continue
            cfg = RunConfig.from_dict(json.loads((tdir / "config.json").read_text()))
            rec = forecast_record(res, t, cfg, level=0.9, fitted=fitted_rows(t, preset))
            act = json.loads((tdir / "summary.json").read_text())["final_val_loss"]
            row = dict(seed=int(seed), method=law, law=res.law, target=tdir.name, pred=rec["predicted"], actual=act,
                       err=100 * (rec["predicted"] / act - 1), lo=rec["lower"], hi=rec["upper"],
                       inside=rec["lower"] <= act <= rec["upper"], halfw=100 * (rec["upper"] - rec["lower"]) / 2 / rec["predicted"],
                       bounds=",".join(res.warnings and [w[:40] for w in res.warnings if "bound" in w] or []),
                       outside="; ".join(rec["outside_ladder"]))
            out.append(row)
            print(row, flush=True)
df = pd.DataFrame(out)
df.to_json(Path(sys.argv[4]), orient="records", indent=1)
g = df.groupby("method").agg(cases=("err", "size"), median_abs=("err", lambda e: e.abs().median()), max_abs=("err", lambda e: e.abs().max()),
                              mean_signed=("err", "mean"), coverage=("inside", "mean"), mean_halfw=("halfw", "mean"))
print(g.round(2).to_string())
