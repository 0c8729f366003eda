"""Finished matrix seeds forecast again from a ladder with a second init per run.

For each seed of a `benchmarks/forecast.py` output (its `seed<k>/ladder` trained with one init per
run, its targets trained and scored), this trains the same ladder again with run.seed = k + OFFSET
(same data seed, so the same batches) into `seed<k>/ladder-rep`, fits the preset's method on both
ladders together as the matrix does (`benchmarks/forecast.py`'s `forecast_targets`, with the preset's
bootstrap), forecasts the seed's targets and scores them against the targets that trained (`benchmarks/forecast.py`'s `score`). The rows have
the matrix's format (`benchmarks/recipe/pool.py` tables them). The targets were trained and scored
before, so these are dev measurements for choosing a recipe, not fresh tests of one.

    python benchmarks/recipe/more_inits.py --matrix OUT/synth30 --seeds 30 --preset cpu \\
        --targets 10:w64d2,10:w96d2,10:w128d2,10:w64d4,30:w96d2,30:w64d4 --out rows.json
    python benchmarks/recipe/more_inits.py --matrix OUT/wiki11 --seeds 11 --preset text-cpu \\
        --data CORPUS --data-label wikipedia --targets 10:w64d2,10:w96d2,10:w128d2,10:w64d4 --out rows.json

Measured in benchmarks/recipe/README.md, section (27), with OFFSET 1000: that is what the presets'
`replicates: 2` (run.seed + 1) was chosen on.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _forecast_script():
    spec = importlib.util.spec_from_file_location("forecast_matrix", ROOT / "benchmarks" / "forecast.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", required=True, help="a benchmarks/forecast.py --out directory")
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", default=None)
    ap.add_argument("--data-label", default=None)
    ap.add_argument("--targets", required=True, help="the targets the matrix trained (forecast.py --targets)")
    ap.add_argument("--offset", type=int, default=1000, help="the second init's run.seed is the seed + this")
    ap.add_argument("--out", required=True, help="JSON rows, one per target, in the matrix's format")
    args = ap.parse_args(argv)

    import pandas as pd

    from analysis.load import load_runs
    from testbed.demo import run_ladder
    from testbed.preset import load_preset

    fm = _forecast_script()
    targets = fm.parse_targets(args.targets)
    preset = load_preset(args.preset)
    if args.data:
        preset = preset.with_data(args.data)
    data = args.data_label or ("synthetic" if not args.data else args.data)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        one = fm.seed_preset(preset, seed, 2)
        # the ladder the matrix trained: one init per run (the presets before section (27))
        one = replace(one, ladder={k: v for k, v in one.ladder.items() if k != "replicates"})
        seed_dir = Path(args.matrix) / f"seed{seed}"
        if not (seed_dir / "ladder").is_dir() or not (seed_dir / "targets").is_dir():
            raise SystemExit(f"{seed_dir}: no ladder/ and targets/ (run benchmarks/forecast.py first)")
        rep = copy.deepcopy(one.ladder)
        rep["base"].setdefault("run", {})["seed"] = seed + args.offset
        rep["name"] = f"{rep['name']}-rep"
        rep_dir = run_ladder(seed_dir / "ladder-rep", replace(one, ladder=rep), quiet=True)
        table = pd.concat([load_runs(seed_dir / "ladder"), load_runs(rep_dir)], ignore_index=True)
        runs = fm.target_runs(one, targets)
        ids = {fm.shape_key(t): r.run_id for t, r in zip(targets, runs, strict=True)}
        forecasts = fm.forecast_targets(one, table, targets, runs, ["auto"], one.fit.bootstrap)
        found = fm.score({"targets": ids, "forecasts": forecasts}, seed_dir / "targets", seed, data)
        rows += [{**r, "ladder_runs": int(table["run"].nunique())} for r in found]
        print(f"seed {seed}: " + ", ".join(f"{r['shape']} {r.get('rel_error', float('nan')):+.2%}" for r in found),
              flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"rows: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
