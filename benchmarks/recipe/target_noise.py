"""A target's own init noise: matrix targets trained again from another init, beside the loss they reached.

The forecast matrix (`benchmarks/forecast.py`) trains each target once, with run.seed = data.seed = the
seed. This trains the same target configs with run.seed + OFFSET (the same data seed, so the same
batches) and prints both final losses and their difference: the part of a forecast's miss that no
ladder could have forecast.

    python benchmarks/recipe/target_noise.py --cases benchmarks/recipe/cases/synth_s40.json,benchmarks/recipe/cases/synth_s42.json \
        --preset cpu --targets 10:w96d2,10:w128d2 --out OUT

Measured in benchmarks/recipe/README.md, section (29).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]   # the repository, and benchmarks/forecast.py as `forecast`


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True, help="FILE[,FILE...]: forecast.py cases.json rows of the seeds to retrain")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", default=None, help="the corpus, for a text preset")
    ap.add_argument("--targets", required=True, help="the targets to retrain (forecast.py --targets)")
    ap.add_argument("--offset", type=int, default=1000, help="the new init's run.seed is the seed + this")
    ap.add_argument("--out", required=True, help="a directory for the retrained runs")
    a = ap.parse_args(argv)

    from testbed.preset import load_preset
    from train.api import train_run

    import forecast as fm
    preset = load_preset(a.preset)
    if a.data:
        preset = preset.with_data(a.data)
    rows = [r for f in a.cases.split(",") for r in json.loads(Path(f).read_text())
            if r.get("law") == "auto" and r.get("actual") is not None]
    targets = fm.parse_targets(a.targets)
    print("| seed | target | final loss, the matrix's init | another init | difference |")
    print("|---|---|---|---|---|")
    diffs = []
    for seed in sorted({int(r["seed"]) for r in rows}):
        runs = fm.target_runs(fm.seed_preset(preset, seed, 1), targets)
        for t, planned in zip(targets, runs, strict=True):
            key = fm.shape_key(t)
            was = [r["actual"] for r in rows if int(r["seed"]) == seed and r["shape"] == key]
            if not was:
                raise SystemExit(f"seed {seed}: no trained row for target {key} in {a.cases}")
            cfg = planned.config.with_overrides({"run.seed": seed + a.offset}).resolved()
            summary = train_run(cfg, Path(a.out) / f"seed{seed}" / planned.run_id)
            now = float(summary["final_val_loss"])
            diffs.append(np.log(now / was[0]))
            print(f"| {seed} | {key} | {was[0]:.4f} | {now:.4f} | {100 * diffs[-1]:+.2f}% |", flush=True)
    d = np.asarray(diffs)
    print(f"\nrms difference {100 * float(np.sqrt(np.mean(d ** 2))):.2f}% over {len(d)} targets: one init's sd "
          f"is about {100 * float(np.sqrt(np.mean(d ** 2) / 2)):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
