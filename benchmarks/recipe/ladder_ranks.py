"""Does anything measured inside a ladder say how far that ladder's target forecasts will miss?

For each kept ladder of the forecast matrix (its targets trained and scored), this measures what a
ladder can tell about its own extrapolation error, with the fit the matrix made (the preset's, auto's
law chosen on the whole ladder, bootstrap off):

    rollout k      the calibrated interval's growth rate (`analysis.calibrate`): backtests at compute
                   cutoffs, which on a WSD-branch ladder extrapolate in tokens only
    size holdout   the law refitted without the largest size, forecasting that size's runs
                   (`size_holdout.size_holdout`)
    corner         the law refitted on the smaller sizes at the shorter budgets, forecasting the
                   largest size's longest runs: size and tokens at once, as a target does
                   (`size_holdout.corner_holdout`)

and sets them beside the ladder's target misses (auto's rows in forecast.py cases or more_inits.py
rows): one table per ladder, then per corpus the Spearman rank correlation of each with the ladder's
rms 10x miss and the same for each of sigma's parts, then candidate interval rules scored on the rows (each from the row's own sigma parts,
the extrapolation part rebuilt from another k; all with the normal quantile, the product's rule for
two-init ladders), beside a bound no rule can use: one constant sigma per corpus, equal to that
corpus's rms miss in the set.

    python benchmarks/recipe/ladder_ranks.py synthetic:37=cpu:OUT/synth37/seed37/ladder \\
        wikipedia:15=text-cpu:OUT/wiki15/seed15/ladder ... \\
        --rows "fresh=cases/synth_s37.json,cases/wiki_s15_10x.json" --save ranks.json

A ladder is DATA:SEED=PRESET:DIR[+DIR] (DATA and SEED as the rows' `data` and `seed`; two directories
for a ladder trained in two halves, as more_inits.py's ladder and ladder-rep). `--save` keeps each
ladder's measurements, so a rerun with more ladders fits only the new ones. Measured in
benchmarks/recipe/README.md, section (29).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analysis.calibrate import PARTS  # noqa: E402

Z = float(stats.norm.ppf(0.95))


def _sibling(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure(dirs: list[str], preset_name: str) -> dict:
    """One ladder's in-ladder measurements (the module docstring's three), as plain numbers."""
    import pandas as pd

    from analysis.load import load_runs
    from testbed.demo import fit_ladder, fitted_rows, load_preset

    sh = _sibling("size_holdout")
    preset = load_preset(preset_name)
    preset = dataclasses.replace(preset, fit=dataclasses.replace(preset.fit, bootstrap=0))
    table = pd.concat([load_runs(d) for d in dirs], ignore_index=True)
    rows = fitted_rows(table, preset)
    whole = fit_ladder(table, preset)
    ex = whole.extrapolation
    smaller = rows[rows["N"] < rows["N"].max()]
    size = sh.size_holdout(rows, whole.law, preset.fit.select)     # its x: ln(C / the smaller sizes' largest C)
    corner = sh.corner_holdout(rows, whole.law, preset.fit.select)
    return {"law": whole.law, "s0": ex.s0, "k": ex.k, "N_max": float(rows["N"].max()),
            "roll_x": ex.per_run["x"].tolist(), "roll_e": ex.per_run["e"].tolist(),
            "size_e": size["e"].tolist(), "size_x": size["x"].tolist(),
            "size_xN": np.log(size["N"] / smaller["N"].max()).tolist(),
            "corner_e": corner["e"].tolist(), "corner_x": corner["x"].tolist()}


def rates(m: dict) -> dict[str, float]:
    """The candidate growth rates of one ladder's measurements: per unit ln C unless named per ln N."""
    from analysis.calibrate import growth_rate

    rx, re_, sx, se = (np.asarray(m[k], float) for k in ("roll_x", "roll_e", "size_x", "size_e"))
    size = growth_rate(sx, se, m["s0"])
    return {"rollout": m["k"], "pooled": growth_rate(np.r_[rx, sx], np.r_[re_, se], m["s0"]), "size": size,
            "larger": max(m["k"], size), "size per ln N": growth_rate(np.asarray(m["size_xN"], float), se, m["s0"])}


RULES = ("shipped", "k from rollout and size holdout pooled", "k from the size holdout", "the larger k",
         "size holdout per ln N", "no laws' spread")


def sigma(rule: str, row: dict, m: dict) -> float:
    """The row's sigma under `rule`: its own parts, the extrapolation part rebuilt from another rate."""
    p = row["sigma_parts"]
    extra, laws = p["extrapolation"], p["between_laws"]
    k = rates(m)
    x = np.log(float(row["compute_ratio"]))
    if rule == "k from rollout and size holdout pooled":
        extra = k["pooled"] * x
    elif rule == "k from the size holdout":
        extra = k["size"] * x
    elif rule == "the larger k":
        extra = k["larger"] * x
    elif rule == "size holdout per ln N":
        extra = k["size per ln N"] * np.log(max(float(row["target_N"]) / m["N_max"], 1.0))
    elif rule == "no laws' spread":
        laws = 0.0
    elif rule != "shipped":
        raise ValueError(f"unknown rule {rule!r}")
    return float(np.sqrt(p["bootstrap"] ** 2 + p["scatter"] ** 2 + extra ** 2 + laws ** 2))


def scored(errors: np.ndarray, sigmas: np.ndarray, rel: np.ndarray) -> str:
    """Markdown cells: covered, mean half-width (x the median |rel|), rms of e / sigma, 90th percentile of |e| / sigma."""
    z = errors / sigmas
    hw = float(np.mean(np.sinh(Z * sigmas)))
    med = float(np.median(np.abs(rel)))
    return (f"{int(np.sum(np.abs(z) <= Z))}/{len(z)} | ±{hw:.2%} ({hw / med:.1f}x) | "
            f"{float(np.sqrt(np.mean(z * z))):.2f} | {float(np.percentile(np.abs(z), 90)):.2f}")


def load_rows(spec: str, ladders: dict) -> tuple[str, list[dict]]:
    name, _, files = spec.partition("=")
    if not files:
        raise SystemExit(f"--rows expects NAME=FILE[,FILE...], got {spec!r}")
    out = []
    for f in files.split(","):
        for r in json.loads(Path(f).read_text()):
            key = (r.get("data"), int(r.get("seed", -1)))
            if r.get("law") == "auto" and "error" not in r and r.get("sigma_parts") and key in ladders:
                out.append({**r, "ladder": key})
    if not out:
        raise SystemExit(f"--rows {name}: no auto rows with sigma parts from the ladders given in {files}")
    return name, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ladders", nargs="+", help="DATA:SEED=PRESET:DIR[+DIR]")
    ap.add_argument("--rows", action="append", required=True, help="NAME=FILE[,FILE...]: a set of scored rows")
    ap.add_argument("--save", default=None, help="a JSON file keeping each ladder's measurements")
    a = ap.parse_args(argv)
    ladders = {}
    for spec in a.ladders:
        key, _, where = spec.partition("=")
        data, _, seed = key.partition(":")
        preset, _, dirs = where.partition(":")
        if not (data and seed.isdigit() and preset and dirs):
            raise SystemExit(f"a ladder is DATA:SEED=PRESET:DIR[+DIR], got {spec!r}")
        ladders[(data, int(seed))] = (preset, dirs.split("+"))
    saved = json.loads(Path(a.save).read_text()) if a.save and Path(a.save).exists() else {}
    measured = {}
    for key, (preset, dirs) in ladders.items():
        tag = f"{key[0]}:{key[1]}={preset}:{'+'.join(dirs)}"
        if tag not in saved:
            saved[tag] = measure(dirs, preset)
            if a.save:
                Path(a.save).write_text(json.dumps(saved, indent=1))
        measured[key] = saved[tag]
    sets = [load_rows(s, ladders) for s in a.rows]
    nominal = _sibling("pool").nominal            # a target's compute ratio as the matrix named it
    rows = {id(r): r for _, rs in sets for r in rs}.values()

    def rms(v):
        return float(np.sqrt(np.mean(np.square(v))))

    print("| ladder | law | s0 | rollout k | size holdout rms e | corner rms e | mean sigma (10x) | rms miss (10x) |")
    print("|---|---|---|---|---|---|---|---|")
    per = {}
    for key, m in measured.items():
        ten = [r for r in rows if r["ladder"] == key and nominal(r) == 10.0]
        if not ten:
            continue
        miss = rms([np.log(r["actual"] / r["predicted"]) for r in ten])
        sig = float(np.mean([r["sigma"] for r in ten]))
        per[key] = (m["k"], rms(m["size_e"]), rms(m["corner_e"]), sig, miss)
        print(f"| {key[0]} {key[1]} | {m['law']} | {m['s0']:.4f} | {m['k']:.4f} | {per[key][1]:.2%} | "
              f"{per[key][2]:.2%} | {sig:.2%} | {miss:.2%} |")
    print("\n| corpus | ladders | Spearman with the rms miss: rollout k | size holdout | corner | mean sigma |")
    print("|---|---|---|---|---|---|")
    for data in sorted({k[0] for k in per}):
        v = np.array([per[k] for k in per if k[0] == data])
        if len(v) < 3:
            continue
        rho = [stats.spearmanr(v[:, j], v[:, 4])[0] for j in range(4)]
        print(f"| {data} | {len(v)} | " + " | ".join(f"{x:+.2f}" for x in rho) + " |")
    print("\n| corpus | sigma's part at 10x | mean over ladders | coefficient of variation | Spearman with the rms miss |")
    print("|---|---|---|---|---|")
    for data in sorted({k[0] for k in per}):
        keys = [k for k in per if k[0] == data]
        if len(keys) < 3:
            continue
        for part in PARTS:
            v = np.array([np.mean([r["sigma_parts"][part] for r in rows
                                   if r["ladder"] == k and nominal(r) == 10.0]) for k in keys])
            print(f"| {data} | {part} | {v.mean():.4f} | {v.std() / v.mean():.2f} | "
                  f"{stats.spearmanr(v, [per[k][4] for k in keys])[0]:+.2f} |")
    print(f"\n| rows | corpus | n | median \\|err\\| | rule (normal quantile, z = {Z:.3f}) | covered | mean half-width "
          "(x median) | rms e/sigma | p90 \\|e\\|/sigma |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rs in sets:
        for data in [*sorted({r["data"] for r in rs}), "all"]:
            g = [r for r in rs if data in ("all", r["data"])]
            e = np.array([np.log(r["actual"] / r["predicted"]) for r in g])
            rel = np.array([r["rel_error"] for r in g])
            head = f"| {name} | {data} | {len(g)} | {float(np.median(np.abs(rel))):.2%} | "
            for rule in RULES:
                print(head + f"{rule} | " + scored(e, np.array([sigma(rule, r, measured[r['ladder']]) for r in g]),
                                                   rel) + " |")
            # the bound: each corpus's rms miss in this set as every one of its rows' sigma
            const = {d: rms([np.log(r["actual"] / r["predicted"]) for r in g if r["data"] == d])
                     for d in {r["data"] for r in g}}
            print(head + "bound: one sigma per corpus, its rms miss | "
                  + scored(e, np.array([const[r["data"]] for r in g]), rel) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
