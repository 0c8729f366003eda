"""How accurate are the testbed's forecasts, and how well calibrated are their intervals?

The checked forecast of `testbed demo`, repeated: for every seed (data.seed and
run.seed varied together) ONE ladder is trained (every size at every token
budget, as the demo does) and one target per compute ratio (the demo's
`target_config`: its tokens make its compute `ratio` x the largest ladder
run's). Every law is then fitted on that ladder and scored on the same targets,
so comparing laws costs no extra training:

- chinchilla: L = E + A/N^alpha + B/D^beta on final losses;
- kaplan: L = [(Nc/N)^(aN/aD) + Dc/D]^aD on final losses;
- kaplan-schedule: Kaplan's form in the schedule's forward area S1, minus Tissue et al.'s
  annealing term C S2, fitted on every eval point from the scale's `fit_min_tokens` on;
- schedule: the whole-curve law (Tissue et al. 2024 plus a size term), fitted on the same points;
- chinchilla, E = floor (oracle): E fixed at the data's exact loss floor, which a
  real corpus never gives; it shows what knowing the irreducible loss would buy.

The fit and the forecast are the demo's own code (`testbed.demo.make_forecast`), so the
benchmark scores what `testbed demo` reports. Every forecast (point, 90% interval, whole
curve) is written to `<out>/seed<k>/forecasts.json` before that seed's targets train,
then scored with `testbed.demo.check_forecast`. Two intervals are scored: the
calibrated interval the demo reports (`analysis.calibrate`: bootstrap spread plus
the extrapolation error measured by backtests inside the ladder) and the bootstrap
band alone (parameter uncertainty over runs). The whole-curve ARE is the mean
|pred - actual| / actual over the target's forecast eval points; the final-loss laws
read D = tokens seen at each step there (a proxy: those laws describe a run's
final loss under a schedule tuned to its length).

Per-case rows go to `<out>/cases.json`; the table is printed. Reruns reuse
finished ladders and targets.

    python benchmarks/forecast.py --out /tmp/forecast-bench --seeds 0,1,2 --ratios 10:64,30:96
    python benchmarks/forecast.py --out /tmp/forecast-bench-cpu --seeds 0,1,2,3,4,5 --ratios 10:96 --demo-cpu

One target width per ratio per output directory; to compare target shapes at one ratio, run
once per width with its own --out (a copy of the first one's seed*/ladder directories saves
retraining the ladders), then pool the outputs, per shape and all together:

    python benchmarks/forecast.py --summarize /tmp/fcb/w96 /tmp/fcb/w64 /tmp/fcb/w128
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEVEL = 0.9
METHOD = 4      # how forecasts are made; saved forecasts of another method are redone (ladders and targets are kept)


@dataclass(frozen=True)
class LawSpec:
    """One way to forecast: a law, which ladder rows it is fitted on, and parameters held fixed."""
    label: str
    law: str
    select: str = "final"
    fix_floor: bool = False         # hold E at the data's exact loss floor (an oracle; see the module doc)


LAW_SPECS = {
    "chinchilla": LawSpec("chinchilla", "chinchilla"),
    "kaplan": LawSpec("kaplan", "kaplan"),
    "kaplan-schedule": LawSpec("kaplan-schedule (eval points)", "kaplan-schedule", select="all"),
    "schedule": LawSpec("schedule (eval points)", "schedule", select="all"),
    "chinchilla-floor": LawSpec("chinchilla, E = floor (oracle)", "chinchilla", fix_floor=True),
}


@dataclass(frozen=True)
class BenchScale:
    """The cheap CPU ladder and targets; every seed uses the same shapes and budgets."""
    context: int = 32
    vocab: int = 256
    batch_tokens: int = 1024
    lr: float = 3e-3
    eval_points: int = 12
    val_tokens: int = 16384
    widths: tuple = (16, 24, 32, 48)
    depth: int = 2
    tokens: tuple = (102_400, 204_800, 409_600)   # 100, 200, 400 optimizer steps
    target_width: dict = None                      # compute ratio -> target width
    bootstrap: int = 200
    demo_cpu: bool = False                         # use the demo's own `cpu` scale (ladder, LR rule) instead


def demo_scale(bs: BenchScale, seed: int, jobs: int):
    """The demo's DemoScale for one seed: the demo's own base config at the benchmark's size."""
    import copy
    from dataclasses import replace

    from testbed.demo import SCALES, DemoScale, _base

    if bs.demo_cpu:
        cpu = SCALES["cpu"]
        base = copy.deepcopy(cpu.base)
        base["data"]["seed"] = seed
        base["run"]["seed"] = seed
        return replace(cpu, name=f"forecast-bench-cpu-s{seed}", base=base, bootstrap=bs.bootstrap, level=LEVEL,
                       jobs=jobs)

    base = _base(context=bs.context, batch_tokens=bs.batch_tokens, lr=bs.lr, points=bs.eval_points,
                 val_tokens=bs.val_tokens, device="cpu", vocab=bs.vocab, head_dim=8)
    base["data"]["seed"] = seed
    base["run"]["seed"] = seed
    # pinned: ignored on CPU, but part of the run id, so a change of its default cannot orphan finished runs
    base["optim"]["fused"] = False
    return DemoScale(name=f"forecast-bench-s{seed}", base=base,
                     sizes=tuple({"width": w, "depth": bs.depth} for w in bs.widths), tokens=bs.tokens,
                     target={"width": max(bs.target_width.values()), "depth": bs.depth,
                             "compute_ratio": min(bs.target_width)},
                     n_params="non_embedding", law="chinchilla", bootstrap=bs.bootstrap, level=LEVEL, jobs=jobs,
                     fit_min_tokens=min(bs.tokens) // 2)


# ---------------------------------------------------------------------------
# forecasts


def fit_and_forecast(spec: LawSpec, table, targets: dict, scale) -> dict:
    """Fit one law on the ladder table as the demo does and forecast every target: {ratio: forecast dict}.

    The fit (with the extrapolation error measured on the ladder) and the forecast are the
    demo's own code (`testbed.demo.fit_scale`, `testbed.demo.make_forecast`), with this spec's
    law and rows; eval points before the scale's `fit_min_tokens` are left out of whole-curve fits.
    """
    from dataclasses import replace

    from testbed.demo import fit_scale, make_forecast

    sc = replace(scale, law=spec.law, select=spec.select)
    fixed = {"E": float(table["loss_floor"].iloc[0])} if spec.fix_floor else None
    t0 = time.perf_counter()
    result = fit_scale(table, sc, fixed=fixed)
    fit_s = time.perf_counter() - t0
    out = {}
    for ratio, cfg in targets.items():
        fc = make_forecast(sc, result, table, cfg)
        fc["label"] = spec.label
        fc["fit"]["seconds"] = fit_s
        out[ratio] = fc
    return out


# ---------------------------------------------------------------------------
# training


def train_targets(jobs_list: list, jobs: int) -> None:
    """Train every (run dir, config) with `python -m train`, `jobs` at a time, largest compute first.

    Finished runs are skipped; a failed one stops the benchmark with the path of its log.
    """
    from models.counting import flops_per_token
    from train.rundir import read_json

    todo = []
    for d, cfg in jobs_list:
        summ = d / "summary.json"
        if summ.exists() and read_json(summ).get("status") == "completed":
            continue
        d.mkdir(parents=True, exist_ok=True)
        (d.parent / f"{d.name}.json").write_text(json.dumps(cfg.to_dict()))
        todo.append((flops_per_token(cfg.model, cfg.run.flop_convention) * cfg.train.tokens, d))
    # longest first, so the last jobs to finish are short ones and both workers stay busy
    todo = [d for _, d in sorted(todo, key=lambda x: -x[0])]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}
    running: list = []
    while todo or running:
        while todo and len(running) < jobs:
            d = todo.pop(0)
            log = open(d.parent / f"{d.name}.log", "w")
            running.append((d, log, subprocess.Popen([sys.executable, "-m", "train", str(d.parent / f"{d.name}.json"),
                                                      "--out", str(d)], stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(0.5)
        for item in list(running):
            d, log, proc = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if proc.returncode != 0:
                    raise RuntimeError(f"target {d} exited with {proc.returncode}; see {d.parent / (d.name + '.log')}")


# ---------------------------------------------------------------------------
# one seed, the table


@dataclass(frozen=True)
class SeedPlan:
    seed: int
    targets: dict           # ratio -> resolved RunConfig
    dirs: dict              # ratio -> target run dir
    forecasts: dict         # law -> {ratio: forecast} or {"error": message}
    c_ladder_max: float
    ladder_s: float


def prepare_seed(seed: int, bs: BenchScale, out: Path, laws: list, jobs: int) -> SeedPlan:
    """Train (or reuse) the seed's ladder, fit every law and write the forecasts before any target trains."""
    from analysis.load import load_runs
    from testbed.demo import run_ladder, target_config
    from train.rundir import atomic_write_json, read_json

    scale = demo_scale(bs, seed, jobs)
    seed_dir = out / f"seed{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ladder_dir = run_ladder(seed_dir, scale, quiet=True)
    ladder_s = time.perf_counter() - t0
    table = load_runs(ladder_dir, n_convention=scale.n_params)
    targets = {r: target_config(scale, {"width": w, "depth": bs.depth, "compute_ratio": r})
               for r, w in sorted(bs.target_width.items())}

    fc_path = seed_dir / "forecasts.json"
    ids = {f"{r:g}": cfg.run_id() for r, cfg in targets.items()}
    saved = read_json(fc_path) if fc_path.exists() else None
    if (saved is None or saved.get("targets") != ids or saved.get("method") != METHOD
            or sorted(saved.get("forecasts", {})) != sorted(laws)):
        forecasts = {}
        for name in laws:
            try:
                per_ratio = fit_and_forecast(LAW_SPECS[name], table, targets, scale)
                forecasts[name] = {f"{r:g}": f for r, f in per_ratio.items()}
            except (ValueError, RuntimeError) as e:
                forecasts[name] = {"error": str(e).splitlines()[0]}
        atomic_write_json(fc_path, {"targets": ids, "method": METHOD, "forecasts": forecasts})
    return SeedPlan(seed=seed, targets=targets, dirs={r: seed_dir / f"target-x{r:g}" for r in targets},
                    forecasts=read_json(fc_path)["forecasts"],
                    c_ladder_max=float(table.loc[table["final"], "C"].max()), ladder_s=ladder_s)


def score_seed(plan: SeedPlan, laws: list) -> list[dict]:
    """Every law's forecasts of the seed's trained targets, scored: one row per (law, ratio)."""
    from testbed.demo import check_forecast
    from train.rundir import read_json

    rows = []
    for name in laws:
        for r, cfg in plan.targets.items():
            fc = plan.forecasts[name].get(f"{r:g}")
            if fc is None:
                rows.append({"seed": plan.seed, "law": name, "ratio": r, "error": plan.forecasts[name].get("error")})
                continue
            got = check_forecast({**fc, "target": {"run_id": cfg.run_id()}}, plan.dirs[r])
            summary = read_json(plan.dirs[r] / "summary.json")
            a = got["actual"]
            rows.append({
                "seed": plan.seed, "law": name, "label": fc["label"], "ratio": r,
                "compute_ratio": float(summary["tokens"]) * float(summary["flops_per_token"]) / plan.c_ladder_max,
                "target_width": cfg.model.width, "target_depth": cfg.model.depth, "target_tokens": summary["tokens"],
                "target_N": float(summary["params_non_embedding"]), "target_wall_s": summary.get("wall_time_s"),
                "actual": a, "predicted": got["predicted"], "lower": got["lower"], "upper": got["upper"],
                "rel_error": (got["predicted"] - a) / a, "abs_rel_error": got["abs_rel_error"],
                "inside": got["inside_interval"],
                "interval_kind": fc["interval"]["kind"], "sigma": fc["interval"].get("sigma"),
                "extrapolation_error": fc["interval"].get("extrapolation_error"),
                "bootstrap_lower": fc["bootstrap_lower"], "bootstrap_upper": fc["bootstrap_upper"],
                "inside_bootstrap": bool(fc["bootstrap_lower"] <= a <= fc["bootstrap_upper"]),
                "curve_are": got["curve"]["are"], "curve_note": got["curve"]["note"],
                "loss_floor": got["loss_floor"], "fit": fc["fit"], "ladder_s": plan.ladder_s,
            })
    return rows


def print_table(rows: list[dict], by_target: bool = False) -> None:
    """One row per (law, ratio); with `by_target`, one per target shape too, then all shapes pooled."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"forecast accuracy: final val loss of the target, {LEVEL:.0%} intervals")
    for col in ("law", "ratio", "target", "cases", "median |rel err|", "max |rel err|", "mean curve ARE",
                "coverage (calibrated)", "coverage (bootstrap)", "mean width (calibrated)", "mean width (bootstrap)"):
        t.add_column(col, justify="right")
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["law"], r["ratio"]), []).append(r)
    for (law, ratio), group in groups.items():
        label = LAW_SPECS[law].label
        shapes = sorted({(r["target_width"], r["target_tokens"]) for r in group})
        parts = [(f"w{w} {d / 1e6:.2f}M", [r for r in group if (r["target_width"], r["target_tokens"]) == (w, d)])
                 for w, d in shapes] if by_target and len(shapes) > 1 else []
        pooled = "all shapes" if parts else (f"w{shapes[0][0]}" if len(shapes) == 1 else "mixed")
        for target, rs in parts + [(pooled, group)]:
            done = [r for r in rs if "actual" in r]
            if not done:
                err = next((r.get("error") for r in rs if r.get("error")), "no trained target")
                t.add_row(label, f"{ratio:g}x", target, "0", f"failed: {err}", "", "", "", "", "", "")
                continue
            e = np.array([r["abs_rel_error"] for r in done])
            width = np.mean([(r["upper"] - r["lower"]) / r["actual"] for r in done])
            bwidth = np.mean([(r["bootstrap_upper"] - r["bootstrap_lower"]) / r["actual"] for r in done])
            t.add_row(label, f"{np.mean([r['compute_ratio'] for r in done]):.1f}x", target, str(len(done)),
                      f"{np.median(e):.2%}", f"{e.max():.2%}", f"{np.mean([r['curve_are'] for r in done]):.2%}",
                      f"{sum(r['inside'] for r in done)}/{len(done)}",
                      f"{sum(r['inside_bootstrap'] for r in done)}/{len(done)}", f"{width:.2%}", f"{bwidth:.2%}")
    Console(width=190).print(t)


def summarize(paths: list[str]) -> int:
    """The table over several benchmark outputs' cases.json (e.g. one per target shape), per shape and pooled."""
    rows = []
    for p in paths:
        path = Path(p)
        path = path / "cases.json" if path.is_dir() else path
        if not path.is_file():
            raise SystemExit(f"--summarize: {str(path)!r} is not a cases.json file or a benchmark --out directory")
        rows += json.loads(path.read_text())
    unknown = sorted({r["law"] for r in rows} - set(LAW_SPECS))
    if unknown:
        raise SystemExit(f"--summarize: rows of unknown laws {unknown}")
    print_table(rows, by_target=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="output directory (a rerun reuses finished runs)")
    ap.add_argument("--summarize", nargs="+", metavar="OUT",
                    help="train nothing: print the table over these outputs' cases.json, per target shape and pooled")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ratios", default="10:64,30:96",
                    help="compute ratio:target width pairs (depth as the ladder's)")
    ap.add_argument("--laws", default=",".join(LAW_SPECS), help=f"from {list(LAW_SPECS)}")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    ap.add_argument("--demo-cpu", action="store_true",
                    help="use the demo's cpu scale (its ladder, batch and LR rule); give --ratios for its depth-2 targets")
    args = ap.parse_args(argv)
    if args.summarize:
        return summarize(args.summarize)
    if not args.out:
        ap.error("--out is required (or --summarize OUT ...)")

    laws = [s for s in args.laws.split(",") if s]
    bad = [s for s in laws if s not in LAW_SPECS]
    if bad:
        ap.error(f"--laws: unknown {bad}; choose from {list(LAW_SPECS)}")
    try:
        pairs = [p.split(":") for p in args.ratios.split(",")]
        target_width = {float(r): int(w) for r, w in pairs}
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error("--ratios is RATIO:WIDTH[,RATIO:WIDTH...] and --seeds is INT[,INT...]")
    if any(r <= 1 for r in target_width) or args.bootstrap < 20 or args.jobs < 1:
        ap.error("ratios must exceed 1, --bootstrap must be >= 20 and --jobs >= 1")
    bs = BenchScale(target_width=target_width, bootstrap=args.bootstrap, demo_cpu=args.demo_cpu)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    plans = []
    for seed in seeds:
        plans.append(prepare_seed(seed, bs, out, laws, args.jobs))
        print(f"seed {seed}: ladder and forecasts done ({time.perf_counter() - t0:.0f} s)", flush=True)
    train_targets([(p.dirs[r], p.targets[r]) for p in plans for r in p.targets], args.jobs)
    print(f"targets done ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = [row for p in plans for row in score_seed(p, laws)]
    (out / "cases.json").write_text(json.dumps(rows, indent=1))
    print_table(rows)
    print(f"per-case rows: {out / 'cases.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
