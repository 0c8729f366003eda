"""The forecast matrix: how accurate are the demo's forecasts, on targets, seeds and data it was not tuned on?

For every seed (data.seed and run.seed set together) the preset's ladder is trained
once (`sweeps.run_sweep`, as `testbed demo` does); every forecasting method (a law,
or `auto`: the law `analysis.select` chooses by backtests inside the ladder) is
fitted on it with the demo's own code (`testbed.demo.fit_ladder`), and every target is
forecast with `analysis.checked.forecast_record`. The forecasts are written to
`<out>/seed<k>/forecasts.json` *before* any target trains. Then the targets train (one
sweep per seed) and each forecast is scored (`analysis.checked.check`).

A target is RATIO:wWIDTHdDEPTH: the preset's base config at that shape, with the ladder's
per-size rules, and tokens for RATIO x the largest ladder run's compute
(`testbed.preset.targets_spec`). The matrix's shapes, for a ladder of widths 16-48 at depth 2:
long and narrow (w64 d2), balanced (w96 d2), wide and short (w128/w160 d2) and another depth
(w64 d4). `--long` adds 100x targets (each 10x shape at twice the width). Runtime: by the
measured 30x targets (471-852 s each, two at a time on the 2-core box; a 100x target is 3.3x
their compute) about 26-47 min per 100x target on a quiet machine, 4-5 hours for four shapes x
three seeds on top of the 10x set. Measured once (benchmarks/recipe/README.md, section (18)):
w192 d2 at 100x, 7.31M tokens, took 83 min on a core shared with three other training jobs.

    python benchmarks/forecast.py --preset cpu --out /tmp/fm/synth --seeds 0,1,2 \\
        --targets 10:w64d2,10:w96d2,10:w128d2,10:w64d4 --laws auto,kaplan,kaplan-schedule,chinchilla,schedule
    python benchmarks/forecast.py --preset text-cpu --data 'corpus/*.txt.zst' --out /tmp/fm/wiki ...
    python benchmarks/forecast.py --summarize /tmp/fm/synth /tmp/fm/wiki --fresh-from 3

Per-case rows go to `<out>/cases.json` and the table is printed: per data, ratio and law,
each target shape and all shapes pooled, with the seeds the recipe was chosen on
(< --fresh-from) and the fresh ones reported apart. Reruns reuse finished ladder runs,
forecasts (when the method, the targets and the ladder's runs are unchanged) and targets: a rerun
with a preset whose ladder has grown (`replicates`, more sizes) trains only the new ladder runs and
forecasts again (benchmarks/recipe/README.md, section (27), scored the second init this way on
copies of finished seeds, whose targets had already trained). `--score-only` trains nothing and
scores each seed's saved forecasts against the targets that finished (for a matrix stopped early).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

LEVEL = 0.9
METHOD = 5   # how forecasts are made; saved forecasts of another method are redone (runs are kept)
TARGET = re.compile(r"^(\d+(?:\.\d+)?):w(\d+)d(\d+)$")


def seed_preset(preset, seed: int, jobs: int):
    """The preset with data.seed = run.seed = `seed`, its ladder trained `jobs` at a time."""
    import copy
    ladder = copy.deepcopy(preset.ladder)
    base = ladder.setdefault("base", {})
    base.setdefault("data", {})["seed"] = seed
    base.setdefault("run", {})["seed"] = seed
    return replace(preset, name=f"{preset.name}-s{seed}", ladder={**ladder, "name": f"{ladder.get('name', 'ladder')}-s{seed}"}
                   ).with_jobs(jobs)


def shape_key(t: dict) -> str:
    return f"{t['compute_ratio']:g}x w{t['width']} d{t['depth']}"


def forecast_seed(preset, targets: list[dict], laws: list[str], seed_dir: Path, bootstrap: int) -> dict:
    """Train (or reuse) the ladder, fit every method, forecast every target; forecasts.json before training."""
    from analysis.load import load_runs
    from testbed.demo import run_ladder
    from train.rundir import atomic_write_json, read_json

    seed_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ladder_dir = run_ladder(seed_dir, preset, quiet=True)
    ladder_s = time.perf_counter() - t0
    table = load_runs(ladder_dir)
    runs = target_runs(preset, targets)
    ids = {shape_key(t): r.run_id for t, r in zip(targets, runs, strict=True)}
    fc_path = seed_dir / "forecasts.json"
    saved = read_json(fc_path) if fc_path.exists() else {}
    fitted_on = sorted(table["run"].unique().tolist())   # a ladder grown since (more inits or sizes) is refitted
    if (saved.get("method") != METHOD or saved.get("targets") != ids or saved.get("ladder_runs") != fitted_on
            or sorted(saved.get("forecasts", {})) != sorted(laws)):
        forecasts = forecast_targets(preset, table, targets, runs, laws, bootstrap)
        atomic_write_json(fc_path, {"method": METHOD, "targets": ids, "ladder_runs": fitted_on, "ladder_s": ladder_s,
                                    "forecasts": forecasts})
    return read_json(fc_path)


def target_runs(preset, targets: list[dict]) -> list:
    """The planned target runs (`sweeps.expand.PlannedRun`), in `targets` order."""
    from sweeps.expand import expand
    from testbed.preset import _spec, targets_spec
    return expand(_spec(targets_spec(preset, targets, name=f"{preset.name}-targets")))


def forecast_targets(preset, table, targets: list[dict], runs: list, laws: list[str], bootstrap: int) -> dict:
    """{law: {shape: forecast record}}: each method fitted on the ladder's `table` with the demo's own code,
    every target forecast from its planned config (a law that cannot be fitted gets {"error": ...})."""
    from analysis.checked import forecast_record
    from analysis.select import params_at_bound
    from testbed.demo import fit_ladder, fitted_rows

    forecasts = {}
    for law in laws:
        p = replace(preset, fit=replace(preset.fit, law=law, select=None, bootstrap=bootstrap, level=LEVEL))
        t1 = time.perf_counter()
        try:
            result = fit_ladder(table, p)
        except (ValueError, RuntimeError) as e:
            forecasts[law] = {"error": str(e).splitlines()[0]}
            continue
        fit_s = time.perf_counter() - t1
        per = {}
        for t, r in zip(targets, runs, strict=True):
            try:
                rec = forecast_record(result, table, r.config, level=LEVEL, fitted=fitted_rows(table, p))
            except ValueError as e:
                rec = {"error": str(e).splitlines()[0]}
            rec["fit_seconds"], rec["at_bound"] = fit_s, params_at_bound(result)
            per[shape_key(t)] = rec
        forecasts[law] = per
    return forecasts


def train_targets(preset, targets: list[dict], seed_dir: Path) -> Path:
    from sweeps import run_sweep
    from testbed.preset import targets_spec
    spec = targets_spec(preset, targets, name=f"{preset.name}-targets")
    spec["executor"] = dict(preset.ladder.get("executor", {}), retries=0)
    outcome = run_sweep(spec, seed_dir / "targets", quiet=True)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return seed_dir / "targets"


def score(saved: dict, targets_dir: Path, seed: int, data: str) -> list[dict]:
    from analysis.checked import check
    rows = []
    for law, per in saved["forecasts"].items():
        for shape, run_id in saved["targets"].items():
            rec = per.get(shape) if "error" not in per else None
            base = {"seed": seed, "data": data, "law": law, "shape": shape, "ratio": float(shape.split("x")[0])}
            if rec is None or "error" in rec:
                rows.append({**base, "error": (rec or per).get("error", "no forecast")})
                continue
            try:
                got = check(rec, targets_dir / run_id)
            except (RuntimeError, FileNotFoundError) as e:
                rows.append({**base, "error": str(e).splitlines()[0]})
                continue
            a = got["actual"]
            rows.append({**base, "chosen_law": got["law"], "actual": a, "predicted": got["predicted"],
                         "lower": got["lower"], "upper": got["upper"], "rel_error": (got["predicted"] - a) / a,
                         "abs_rel_error": got["abs_rel_error"], "inside": got["inside_interval"],
                         "interval_kind": got["interval"]["kind"],
                         "inside_bootstrap": bool(got["bootstrap_lower"] <= a <= got["bootstrap_upper"]),
                         "bootstrap_half_width": (got["bootstrap_upper"] - got["bootstrap_lower"]) / 2 / a,
                         "half_width": (got["upper"] - got["lower"]) / 2 / a, "compute_ratio": got["compute_ratio"],
                         "sigma": got["interval"].get("sigma"), "sigma_parts": got["interval"].get("sigma_parts"),
                         "quantile": got["interval"].get("quantile"), "curve_are": got["curve"]["are"],
                         "outside_ladder": got.get("outside_ladder", []),
                         "at_bound": rec.get("at_bound", []), "target_tokens": got["target"]["D"],
                         "target_N": got["target"]["N"], "target_wall_s": got["target"].get("wall_time_s"),
                         "ladder_s": saved.get("ladder_s")})
    return rows


def table_rows(rows: list[dict], fresh_from: int | None) -> list[list[str]]:
    """Rows of the printed table: per (data, ratio, law, seed group), every shape and all shapes pooled."""
    groups: dict = {}
    for r in rows:
        part = ("all seeds" if fresh_from is None else
                f"seeds < {fresh_from} (recipe chosen)" if r["seed"] < fresh_from else f"seeds >= {fresh_from} (fresh)")
        groups.setdefault((r["data"], r["ratio"], r["law"], part), []).append(r)
    out = []
    for (data, ratio, law, part), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        shapes = sorted({r["shape"] for r in group})
        for shape, rs in [(s, [r for r in group if r["shape"] == s]) for s in shapes] + [("all shapes", group)]:
            done = [r for r in rs if "actual" in r]
            failed = len(rs) - len(done)
            if not done:
                out.append([data, f"{ratio:g}x", law, part, shape, "0", f"failed: {rs[0].get('error', '')[:60]}"] + [""] * 6)
                continue
            e = np.array([r["abs_rel_error"] for r in done])
            med = float(np.median(e))
            half = float(np.mean([r["half_width"] for r in done]))
            bound = sum(bool(r["at_bound"]) for r in done)
            out.append([data, f"{ratio:g}x", law, part, shape, f"{len(done)}" + (f" (+{failed} failed)" if failed else ""),
                        f"{med:.2%}", f"{e.max():.2%}", f"{np.mean([r['rel_error'] for r in done]):+.2%}",
                        f"{sum(r['inside'] for r in done)}/{len(done)}", f"±{half:.2%}" + (f" ({half / med:.1f}x)" if med else ""),
                        f"{sum(r['inside_bootstrap'] for r in done)}/{len(done)}", f"{bound}/{len(done)}"])
    return out


HEADER = ["data", "ratio", "law", "seeds", "target", "cases", "median |err|", "max |err|", "mean signed err",
          "calibrated 90% covers", "mean half-width (x median)", "bootstrap 90% covers", "fit at a bound"]


def print_table(rows: list[dict], fresh_from: int | None, markdown: bool = False) -> None:
    from analysis.console import print_table as print_cells
    print_cells(HEADER, table_rows(rows, fresh_from),
                f"forecast matrix: final val loss of each target, {LEVEL:.0%} intervals", markdown=markdown)


def load_cases(paths: list[str]) -> list[dict]:
    rows = []
    for p in paths:
        path = Path(p) / "cases.json" if Path(p).is_dir() else Path(p)
        if not path.is_file():
            raise SystemExit(f"--summarize: {str(path)!r} is not a cases.json file or a benchmark --out directory")
        rows += json.loads(path.read_text())
    return rows


def parse_targets(text: str) -> list[dict]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        m = TARGET.match(item)
        if not m or float(m.group(1)) <= 1:
            raise ValueError(f"--targets: {item!r} is not RATIO:wWIDTHdDEPTH with RATIO > 1 (e.g. 10:w96d2)")
        out.append({"compute_ratio": float(m.group(1)), "width": int(m.group(2)), "depth": int(m.group(3))})
    if not out:
        raise ValueError("--targets: give at least one target")
    return out


def with_long(targets: list[dict]) -> list[dict]:
    """`--long`: the targets plus a 100x target of each 10x shape at twice the width, unless already asked for."""
    long = [{**t, "compute_ratio": 100.0, "width": 2 * t["width"]} for t in targets if t["compute_ratio"] == 10]
    return targets + [t for t in long if t not in targets]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="output directory (a rerun reuses finished work)")
    ap.add_argument("--preset", default="cpu", help="the demo preset whose recipe is measured (name or YAML)")
    ap.add_argument("--data", default=None, help="run the recipe on this corpus instead of the preset's data")
    ap.add_argument("--data-label", default=None, help="the data's name in the table (default: synthetic or the path)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--targets", default="10:w64d2,10:w96d2,10:w128d2,10:w64d4",
                    help="RATIO:wWIDTHdDEPTH,... (tokens follow from the ratio)")
    ap.add_argument("--long", action="store_true", help="add 100x targets of the same shapes' widths doubled")
    ap.add_argument("--laws", default="auto,kaplan,kaplan-schedule,chinchilla,schedule")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    ap.add_argument("--summarize", nargs="+", metavar="OUT", help="train nothing: the table over these outputs")
    ap.add_argument("--fresh-from", type=int, default=None,
                    help="report seeds >= this apart (the recipe was chosen on the seeds below it)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--score-only", action="store_true",
                    help="train nothing: score each seed's saved forecasts against the targets that finished "
                         "(a matrix stopped early; unfinished targets are listed as failed)")
    args = ap.parse_args(argv)
    if args.summarize:
        print_table(load_cases(args.summarize), args.fresh_from, args.markdown)
        return 0
    if not args.out:
        ap.error("--out is required (or --summarize OUT ...)")
    from testbed.preset import DemoError, load_preset, targets_spec
    try:
        targets = parse_targets(args.targets)
        if args.long:
            targets = with_long(targets)
        seeds = [int(s) for s in args.seeds.split(",")]
        preset = load_preset(args.preset)
        if args.data:
            preset = preset.with_data(args.data)
        targets_spec(preset, targets)   # the targets' own checks (a target given twice), before anything trains
    except (ValueError, DemoError) as e:
        ap.error(str(e).replace("targets:", "--targets:", 1) if str(e).startswith("targets:") else str(e))
    laws = [s for s in args.laws.split(",") if s]
    data = args.data_label or ("synthetic" if not args.data else args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    if args.score_only:
        from train.rundir import read_json
        for seed in seeds:
            seed_dir = out / f"seed{seed}"
            if not (seed_dir / "forecasts.json").exists():
                raise SystemExit(f"--score-only: {seed_dir / 'forecasts.json'} does not exist (no forecasts to score)")
            rows += score(read_json(seed_dir / "forecasts.json"), seed_dir / "targets", seed, data)
        (out / "cases.json").write_text(json.dumps(rows, indent=1))
        print_table(rows, args.fresh_from, args.markdown)
        print(f"per-case rows: {out / 'cases.json'}")
        return 0
    for seed in seeds:
        p = seed_preset(preset, seed, args.jobs)
        seed_dir = out / f"seed{seed}"
        saved = forecast_seed(p, targets, laws, seed_dir, args.bootstrap)
        print(f"seed {seed}: ladder and forecasts written ({time.perf_counter() - t0:.0f} s)", flush=True)
        targets_dir = train_targets(p, targets, seed_dir)
        print(f"seed {seed}: targets trained ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows += score(saved, targets_dir, seed, data)
        (out / "cases.json").write_text(json.dumps(rows, indent=1))
    print_table(rows, args.fresh_from, args.markdown)
    print(f"per-case rows: {out / 'cases.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
