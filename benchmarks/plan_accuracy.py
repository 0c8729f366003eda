"""How close `testbed sweep plan`'s time estimate comes to the real sweep on this machine.

Estimates every run of a spec as `sweep plan` does (measured here with the threads each of
`--jobs` workers gets, start-up and evaluations included), then trains the sweep with
`run_sweep` into a temporary directory and prints, per run, the estimate beside the
worker's wall time (process start to exit), and the estimated against the real wall time
of the whole sweep.

  python benchmarks/plan_accuracy.py cpu_demo_ladder --jobs 2
  python benchmarks/plan_accuracy.py SPEC.yaml --jobs 1 --keep runs/plan-check
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sweeps import run_sweep
from sweeps.estimate import measure_rates, schedule
from sweeps.expand import expand
from sweeps.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--jobs", type=int, default=0, help="workers (default: the spec's executor.jobs)")
    ap.add_argument("--keep", help="sweep directory to keep (default: a temporary one)")
    ns = ap.parse_args()
    spec = load_spec(ns.spec)
    jobs = ns.jobs or spec.executor.jobs
    runs = expand(spec)
    t0 = time.perf_counter()
    rates = measure_rates(runs, jobs=jobs)
    plan_s = time.perf_counter() - t0
    est = {r.run_id: rates.parts(r) for r in runs}
    with tempfile.TemporaryDirectory(prefix="plan-accuracy-") as tmp:
        out = Path(ns.keep or tmp) / spec.name
        t0 = time.perf_counter()
        outcome = run_sweep(spec, out, jobs=jobs, quiet=True)
        wall = time.perf_counter() - t0
    if outcome.exit_code != 0:
        raise SystemExit(f"the sweep did not complete: {outcome.counts}")
    print(f"spec {spec.name}: {len(runs)} runs, {jobs} job(s); {rates.how}; planning took {plan_s:.1f}s\n")
    print("| run | N | steps | est. start-up | est. train | est. eval | est. total | actual | actual / est. |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        p = est[r.run_id]
        total = sum(p.values())
        actual = outcome.wall[r.run_id]
        print(f"| {r.run_id} | {r.n_params:,} | {r.config.steps} | {p['startup']:.1f}s | {p['train']:.1f}s | "
              f"{p['eval']:.1f}s | {total:.1f}s | {actual:.1f}s | {actual / total:.2f} |")
    serial_est = sum(sum(p.values()) for p in est.values())
    parallel_est = schedule([sum(est[r.run_id].values()) for r in runs], jobs)
    serial_actual = sum(outcome.wall.values())
    print(f"\n| total | estimate | actual | actual / estimate |\n|---|---|---|---|\n"
          f"| sum of run times | {serial_est:.0f}s | {serial_actual:.0f}s | {serial_actual / serial_est:.2f} |\n"
          f"| sweep wall time ({jobs} job(s)) | {parallel_est:.0f}s | {wall:.0f}s | {wall / parallel_est:.2f} |")


if __name__ == "__main__":
    main()
