"""`run_sweep`: train every run of a sweep that is not finished yet (the library entry point).

    from sweeps import run_sweep
    outcome = run_sweep("cpu_demo_ladder", "runs/ladder", jobs=2)
    outcome.state        # {run_id: "completed" | "diverged" | "failed" | "pending"}
    outcome.exit_code    # 0 all completed, 1 some did not, 130 interrupted

The order is the one every caller needs: expand the spec (a bad spec fails here, before
anything is written), check the executor can run here, lock the sweep directory, write
sweep.json and the run configs, build each text corpus's token cache once (before any
worker starts, so workers never tokenize side by side), then launch the local pool or
submit to SLURM. `testbed sweep run` is this function plus printing.
"""
from __future__ import annotations

import errno
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sweeps.expand import PlannedRun, expand
from sweeps.spec import SweepError, SweepSpec, load_spec, spec_from_dict
from train.contract import COMPLETED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

EXECUTORS = ("local", "slurm")
CLUSTERS = ("slurm", "local", "debug")


@dataclass
class SweepOutcome:
    """What `run_sweep` did. `state` maps every run id to its state after the call."""
    name: str
    out: Path
    runs: list[PlannedRun]
    state: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    dry_run: bool = False
    dropped: list[str] = field(default_factory=list)     # design combos the expansion left out, with why
    warnings: list[str] = field(default_factory=list)    # about the data (vocabulary, epochs)
    commands: list[str] = field(default_factory=list)    # dry run: one shell line per worker
    sbatch_files: list[Path] = field(default_factory=list)
    wall: dict[str, float] = field(default_factory=dict)  # local: seconds each run's worker ran, start-up included
    submitted: int = 0                                   # slurm: runs submitted
    waited: bool = True                                  # slurm: False when submitted without waiting

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.state.values():
            out[s] = out.get(s, 0) + 1
        return out

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.dry_run or not self.waited:
            return EXIT_OK
        return EXIT_OK if all(s == COMPLETED for s in self.state.values()) else EXIT_FAILED


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _as_spec(spec: SweepSpec | dict | str | Path) -> SweepSpec:
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, dict):
        return spec_from_dict(spec)
    return load_spec(spec)


def check_executor(executor: str, cluster: str | None, pack: int) -> None:
    """Refuse an executor that cannot run here, before anything is written."""
    if executor not in EXECUTORS:
        raise SweepError(f"--executor must be one of {EXECUTORS}, got {executor!r}")
    if pack < 1 or (pack > 1 and executor != "local"):
        raise SweepError("--pack must be >= 1 and applies to the local executor only")
    if cluster is not None and cluster not in CLUSTERS:
        raise SweepError(f"--cluster must be one of {CLUSTERS}, got {cluster!r}")
    if executor != "slurm":
        if cluster is not None:
            raise SweepError("--cluster applies to --executor slurm only")
        return
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SweepError("--executor slurm needs submitit: pip install 'scaling-testbed[slurm]'") from None
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if cluster in (None, "slurm") and missing:
        raise SweepError(f"--executor slurm: there is no SLURM here ({' and '.join(missing)} not on PATH); use --dry-run "
                         "(optionally with --sbatch FILE) to get the commands for another machine, or "
                         "--cluster local to run them through submitit on this machine")


# The cache is built in a child process: the driver stays small (tokenizing a 100 MB shard
# takes ~800 MB) and single-threaded (the tokenizer's thread pool would otherwise live on in
# the process that forks the workers; see sweeps/local.py). Its progress goes to our stderr.
_PREPARE = """
import errno, json, sys
from train.config import ConfigError, from_dict
from train.data.config import DataConfig
from train.data.text import prepare_text
try:
    _, meta, _ = prepare_text(from_dict(DataConfig, json.loads(sys.argv[1]), prefix="data."), quiet=sys.argv[2] == "1")
except ConfigError as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(2)
except OSError as e:
    if e.errno != errno.ENOSPC:
        raise
    print(json.dumps({"no_space": True, "error": f"no space left on device writing {e.filename} (the token "
                      "cache); free some space or point data.cache_dir elsewhere, and run the same command again"}))
    sys.exit(2)
print(json.dumps({"meta": meta}))
"""


def prepare_data(runs: list[PlannedRun], quiet: bool = False) -> list[str]:
    """Build the token cache of every text corpus the runs use, once each; return data warnings."""
    from train.config import to_dict
    from train.data.text import data_warnings, val_shortfall, val_tokens_needed
    by_data: dict[str, tuple[Any, int]] = {}
    evals: dict[str, PlannedRun] = {}       # per corpus, the run whose eval reads the most validation windows
    for r in runs:
        d = r.config.data
        if d.source == "synthetic":
            continue
        key = repr(d)
        by_data[key] = (d, max(by_data.get(key, (d, 0))[1], r.tokens))
        e = evals.get(key)
        need = val_tokens_needed(r.config.eval.tokens, r.config.model.context)
        if e is None or need > val_tokens_needed(e.config.eval.tokens, e.config.model.context):
            evals[key] = r
    warnings = []
    for key, (d, most_tokens) in by_data.items():
        r = subprocess.run([sys.executable, "-c", _PREPARE, json.dumps(to_dict(d)), "1" if quiet else "0"],
                           stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        lines = r.stdout.strip().splitlines()
        got = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        if "meta" not in got:
            error = got.get("error") or f"preparing the data {d.source!r} failed (exit {r.returncode})"
            raise SweepNoSpace(error) if got.get("no_space") else SweepError(error)
        # a held-out split too small for the eval fails every run at its first eval: say so before any trains
        r = evals[key]
        problem = val_shortfall(d, r.config.eval.tokens, r.config.model.context, int(got["meta"]["val_tokens"]))
        if problem:
            raise SweepError(f"run {r.run_id}: {problem}")
        warnings += data_warnings(d, got["meta"], most_tokens)
    return warnings


class SweepNoSpace(SweepError):
    """A write of the sweep directory failed on a full disk (exit code EXIT_NO_SPACE)."""


def _no_space(e: OSError, out: Path) -> SweepNoSpace:
    where = next((p for p in (out, *out.resolve().parents) if p.exists()), Path("/"))
    free_kb = shutil.disk_usage(where).free / 1024
    return SweepNoSpace(f"no space left on device writing {e.filename or str(out)} ({free_kb:,.0f} kB free); "
                        f"free some space and run the same command again (nothing half-written was left)")


def run_sweep(spec: SweepSpec | dict | str | Path, out: str | Path, executor: str = "local", jobs: int = 0,
              pack: int = 1, dry_run: bool = False, *, retries: int = -1, cluster: str | None = None,
              wait: bool = True, sbatch: str | Path | None = None, quiet: bool = False, display: Any = None,
              log: Callable[[str], None] | None = _stderr) -> SweepOutcome:
    """Train (or, with dry_run, list) every run of `spec` not yet finished in sweep directory `out`.

    spec: a SweepSpec, a spec mapping, a YAML/JSON path or a preset name. jobs: local runs at
    once (0: the spec's executor.jobs). retries: extra attempts for a failed run (-1: the
    spec's). pack: local only, train up to K runs of one shape as one packed model.
    cluster: slurm only, submitit's cluster (slurm | local | debug). wait: slurm only, wait
    for the jobs. sbatch: dry run only, also write an sbatch array script there.
    display: a progress display (`sweeps.progress.make_progress`); default: made here unless
    quiet. log: where data warnings and notes go (default stderr; None: nowhere).

    Raises SweepError (a bad spec, flag or directory, a missing executor, a full disk) before
    anything trains. Interrupts (SIGINT/SIGTERM) stop the workers and return interrupted=True.
    """
    spec = _as_spec(spec)
    outcome = SweepOutcome(spec.name, Path(out), [], dry_run=dry_run)
    outcome.runs = expand(spec, outcome.dropped)
    jobs = jobs or spec.executor.jobs
    retries = spec.executor.retries if retries < 0 else retries
    if jobs < 1 or retries < 0:
        raise SweepError("--jobs must be >= 1 and --retries >= 0")
    if not dry_run:
        check_executor(executor, cluster, pack)
    if sbatch and not dry_run:
        raise SweepError("--sbatch writes a script for a dry run: add --dry-run")
    say = log or (lambda _msg: None)
    from sweeps.local import lock_sweep_dir
    from sweeps.sweepdir import prepare
    try:
        lock = lock_sweep_dir(out)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _no_space(e, Path(out)) from None
        raise SweepError(f"cannot create the sweep directory {str(out)!r}: {e.strerror or e}") from None
    try:
        sd = prepare(out, spec, outcome.runs)
        if dry_run:
            _dry_run(sd, outcome, pack, sbatch, spec)
            return outcome
        outcome.warnings = prepare_data(outcome.runs, quiet=quiet)
        for w in outcome.warnings:
            say(f"warning: {w}")
        if executor == "slurm":
            _slurm(sd, outcome, spec, cluster, wait)
        else:
            _local(sd, outcome, jobs, retries, pack, quiet, display)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _no_space(e, Path(out)) from None
        raise
    finally:
        lock.release()
    return outcome


def _dry_run(sd, outcome: SweepOutcome, pack: int, sbatch, spec: SweepSpec) -> None:
    from sweeps.packing import pack_command, plan_packs
    from sweeps.sweepdir import run_state
    groups = plan_packs(outcome.runs, pack) if pack > 1 else [[r] for r in outcome.runs]
    outcome.commands = [shlex.join(pack_command(sd, members)) for members in groups]
    outcome.state = {r.run_id: run_state(sd.run_dir(r.run_id)) for r in outcome.runs}
    if sbatch:
        from sweeps.slurm import write_sbatch
        outcome.sbatch_files = write_sbatch(sd, outcome.runs, spec.executor.slurm, Path(sbatch))


def _slurm(sd, outcome: SweepOutcome, spec: SweepSpec, cluster: str | None, wait: bool) -> None:
    from sweeps import slurm
    from sweeps.sweepdir import run_state
    submitted = slurm.submit(sd, outcome.runs, spec.executor.slurm, cluster=cluster or "slurm")
    outcome.submitted = len(submitted)
    outcome.state = {r.run_id: run_state(sd.run_dir(r.run_id)) for r in outcome.runs}
    if not wait:
        outcome.waited = False
        return
    outcome.state.update(slurm.wait(submitted))


def _local(sd, outcome: SweepOutcome, jobs: int, retries: int, pack: int, quiet: bool, display) -> None:
    from sweeps.local import run_local
    from sweeps.progress import make_progress
    own = display is None
    display = make_progress(outcome.runs, quiet=quiet) if own else display
    try:
        done = run_local(sd, outcome.runs, jobs=jobs, retries=retries, display=display, pack=pack)
    finally:
        if own:
            display.close()
    outcome.state, outcome.interrupted, outcome.wall = done.state, done.interrupted, done.wall
