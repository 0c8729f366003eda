"""`testbed sweep plan|run|status ...` (also `python -m sweeps ...`).

    testbed sweep plan SPEC [--json] [--throughput measure|none|FLOP/s] [--prior besiroglu|tpp20] [--plateau-steps STEPS]
    testbed sweep run SPEC --out DIR [--executor local|slurm [--cluster slurm|local|debug]] [--jobs K]
                      [--retries R] [--pack K] [--dry-run [--sbatch FILE]]
    testbed sweep status DIR [--json]

SPEC is a YAML file or the name of a preset in sweeps/presets/. Exit codes: 0 every run
completed, 1 some run failed or diverged, 2 a bad spec, flag or sweep directory (nothing
ran), 4 the disk holding the sweep directory is full (free space, rerun), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from sweeps.run import CLUSTERS, EXECUTORS, SweepNoSpace, run_sweep
from sweeps.spec import SweepError, load_spec
from train.contract import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NO_SPACE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed sweep", description="plan, run and inspect sweeps")
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("plan", help="list the runs, their cost and design diagnostics")
    pl.add_argument("spec")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.add_argument("--throughput", default="measure",
                    help="time estimate: measure (time a few steps here), none, or a FLOP/s number")
    pl.add_argument("--prior", default="besiroglu", choices=("besiroglu", "tpp20"),
                    help="compute-optimal prior for the isoFLOP bracketing check")
    pl.add_argument("--plateau-steps", type=float, default=None, metavar="STEPS",
                    help="length of the early plateau in optimizer steps, measured for this setup "
                         "(default: analysis.plateau.PLATEAU_STEPS, measured at CPU scale); runs shorter "
                         "than 3x it are flagged")
    pl.add_argument("--jobs", type=int, default=0, help="parallel runs for the wall-time total (default: spec)")
    ru = sub.add_parser("run", help="train every run not yet finished",
                        epilog="--executor slurm submits array jobs through submitit and needs sbatch on this "
                               "machine; --cluster local runs the same jobs through submitit on this machine "
                               "(and debug in this process), for trying a SLURM set-up without SLURM. Elsewhere, "
                               "--dry-run prints one command per run (this interpreter, absolute paths) for any "
                               "scheduler, and --sbatch FILE also writes them as an sbatch array script.")
    ru.add_argument("spec")
    ru.add_argument("--out", required=True, help="sweep directory")
    ru.add_argument("--executor", default="local", choices=EXECUTORS,
                    help="local: a pool of worker processes here; slurm: SLURM array jobs (needs sbatch)")
    ru.add_argument("--jobs", type=int, default=0, help="local: runs at once (default: the spec's executor.jobs)")
    ru.add_argument("--retries", type=int, default=-1, help="extra attempts for failed runs (default: spec)")
    ru.add_argument("--pack", type=int, default=1,
                    help="local: train up to K compatible runs (same shape, data, batch) in one process as one packed model")
    ru.add_argument("--dry-run", action="store_true", help="write the configs, print one command per run, exit")
    ru.add_argument("--sbatch", metavar="FILE", help="with --dry-run: also write an sbatch array script to FILE")
    ru.add_argument("--cluster", default=None, choices=CLUSTERS,
                    help="with --executor slurm: where submitit runs the jobs: slurm (default; needs sbatch), "
                         "local (subprocesses on this machine) or debug (in this process)")
    ru.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    ru.add_argument("--quiet", action="store_true")
    st = sub.add_parser("status", help="per-run status of a sweep directory")
    st.add_argument("dir")
    st.add_argument("--json", action="store_true")
    return p


def _expand(spec):
    from sweeps.expand import expand
    warnings: list[str] = []
    runs = expand(spec, warnings)
    return runs, warnings


def _fmt_s(sec: float) -> str:
    return f"{sec:.0f}s" if sec < 120 else (f"{sec / 60:.1f}m" if sec < 7200 else f"{sec / 3600:.1f}h")


def _console():
    from rich.console import Console
    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the table into 80 columns
        console = Console(width=200)
    return console


def cmd_plan(ns) -> int:
    from sweeps.plan import diagnostics, plan_rows, totals
    spec = load_spec(ns.spec)
    runs, warnings = _expand(spec)
    jobs = ns.jobs or spec.executor.jobs
    if ns.throughput == "none":
        rates = None
    elif ns.throughput == "measure":
        from sweeps.estimate import measure_rates
        rates = measure_rates(runs, jobs=jobs)
    else:
        from sweeps.estimate import fixed_rate
        try:
            rates = fixed_rate(float(ns.throughput))
        except ValueError:
            raise SweepError(f"--throughput must be measure, none or a FLOP/s number, got {ns.throughput!r}") from None
    rows = plan_rows(runs, rates)
    tot = totals(rows, jobs)
    diags = diagnostics(runs, spec.family, ns.prior, plateau_steps=ns.plateau_steps)
    if ns.json:
        print(json.dumps({"name": spec.name, "family": spec.family, "runs": rows, "totals": tot,
                          "diagnostics": diags, "dropped": warnings,
                          "throughput": rates.how if rates else None}, indent=2, default=str))
        return 0
    from rich.table import Table
    console = _console()
    seeds = len({(r["seed"], r["data_seed"]) for r in rows}) > 1
    data_seeds = len({r["data_seed"] for r in rows}) > 1
    t = Table(title=f"sweep {spec.name} ({spec.family}): {len(rows)} runs")
    cols = ["run id", "shape", "N", "D", "D/N", "C (FLOPs)", "steps", "lr"]
    cols += ["seed (run/data)" if data_seeds else "seed"] if seeds else []
    for col in cols + ["est. time"]:
        t.add_column(col, justify="left" if col in ("run id", "shape") else "right")
    for r in rows:
        cells = [r["run_id"] + (" ↳" if r["parent"] else ""), r["shape"], f"{r['N']:,}", f"{r['D']:,}",
                 f"{r['tokens_per_param']:.3g}", f"{r['C']:.3g}", str(r["steps"]), f"{r['lr']:.3g}"]
        if seeds:
            cells.append(f"{r['seed']}/{r['data_seed']}" if data_seeds else str(r["seed"]))
        t.add_row(*cells, _fmt_s(r["est_seconds"]) if "est_seconds" in r else "-")
    console.print(t)
    line = f"total compute {tot['C']:.3g} FLOPs"
    if "est_seconds_serial" in tot:
        line += (f"; estimated time {_fmt_s(tot['est_seconds_serial'])} serial, "
                 f"~{_fmt_s(tot['est_seconds_parallel'])} with {tot['jobs']} jobs ({rates.how})")
    console.print(line)
    for w in warnings:
        console.print(f"[yellow]dropped:[/] {w}")
    for d in diags:
        console.print(f"[bold yellow]warning:[/] {d}")
    if not diags:
        console.print("design checks: ok")
    return 0


def cmd_run(ns) -> int:
    o = run_sweep(ns.spec, ns.out, executor=ns.executor, jobs=ns.jobs, pack=ns.pack, dry_run=ns.dry_run,
                  retries=ns.retries, cluster=ns.cluster, wait=not ns.no_wait, sbatch=ns.sbatch, quiet=ns.quiet)
    for w in o.dropped:
        print(f"dropped: {w}", file=sys.stderr)
    if ns.dry_run:
        print("\n".join(o.commands))
        for f in o.sbatch_files:
            print(f"wrote {f}", file=sys.stderr)
        if len(o.sbatch_files) > 1:
            print(f"submit with: jid=$(sbatch --parsable {shlex.quote(str(o.sbatch_files[0]))}) && sbatch "
                  f"--dependency=afterany:$jid {shlex.quote(str(o.sbatch_files[1]))}", file=sys.stderr)
        return o.exit_code
    if ns.executor == "slurm":
        print(f"submitted {o.submitted} runs ({len(o.runs) - o.submitted} already finished)")
        if not o.waited:
            return o.exit_code
    bad = [k for k, v in o.state.items() if v != "completed"]
    print("sweep " + ("interrupted" if o.interrupted else "finished") + ": "
          + ", ".join(f"{v} {k}" for k, v in sorted(o.counts.items())) + f" -> {ns.out}"
          + (f" (not completed: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''})" if bad else ""))
    return o.exit_code


def cmd_status(ns) -> int:
    from sweeps.status import sweep_status
    st = sweep_status(ns.dir)
    if ns.json:
        print(json.dumps(st, indent=2))
        return 0
    from rich.table import Table
    t = Table(title=f"sweep {st['name']}: " + ", ".join(f"{v} {k}" for k, v in sorted(st["counts"].items())))
    problems = any(r["problem"] for r in st["runs"])
    cols = ("run id", "status", "tokens done", "of", "val loss", "tokens/s") + (("problem",) if problems else ())
    for col in cols:
        t.add_column(col, justify="left" if col in ("run id", "status", "problem") else "right")
    for r in st["runs"]:
        cells = [r["run_id"], r["status"] + (f" (pid {r['pid']})" if r["pid"] and r["pid"] > 0 else ""),
                 f"{r['tokens_done']:,}", f"{r['tokens']:,}",
                 "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}",
                 "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:,.0f}"]
        t.add_row(*cells, *((r["problem"] or "",) if problems else ()))
    _console().print(t)
    if st["counts"].get("interrupted"):
        print("interrupted runs resume from their last checkpoint on the next `testbed sweep run` of this sweep")
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return {"plan": cmd_plan, "run": cmd_run, "status": cmd_status}[ns.cmd](ns)
    except SweepNoSpace as e:
        print(f"sweep error: {e}", file=sys.stderr)
        return EXIT_NO_SPACE
    except SweepError as e:
        print(f"sweep error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # before the executor took over signals: nothing was started
        print("sweep interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
