"""SLURM executor through submitit: one array job per wave of runs.

Each array task runs the same command the local executor would (`python -m train
<config.json> --out <run dir>`), so exit codes, resume and the run directory are identical.
Runs without a parent go in one array. A WSD branch starts from its parent's checkpoint,
so its job gets a SLURM dependency on the parent's job (`afterany`: it is queued, holding
no allocation, until the parent ends, then checks that the checkpoint it needs exists).
Under submitit's `local`/`debug` clusters, which know no dependencies, a branch task waits
for the checkpoint file instead. Rerunning `testbed sweep run ... --executor slurm`
resubmits only runs that are not completed or diverged, and each resumes from its last
checkpoint.

`write_sbatch` writes the same runs as plain sbatch array scripts, for a cluster where
submitit is not wanted (`testbed sweep run --dry-run --sbatch FILE`).
"""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from sweeps.expand import PlannedRun
from sweeps.spec import SlurmDefaults, SweepError
from sweeps.sweepdir import SweepDir, run_state
from train.contract import FINISHED


def train_task(command: list[str], run_dir: str, log_file: str, wait_for: str = "", wait_s: float = 0.0) -> dict:
    """Body of one array task: check (or, with wait_s > 0, wait for) the parent's checkpoint, then train."""
    if wait_for:
        deadline = time.monotonic() + wait_s
        while not Path(wait_for).exists():
            if time.monotonic() >= deadline:
                return {"rc": 1, "status": "failed",
                        "error": f"parent checkpoint {wait_for} does not exist (the parent ended before that step)"}
            time.sleep(2.0)
    with open(log_file, "a") as log:
        rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    return {"rc": rc, "status": run_state(Path(run_dir))}


def _slurm_params(opts: SlurmDefaults) -> dict:
    params: dict = {"timeout_min": opts.time_min}
    if opts.gpus_per_job:
        params["gpus_per_node"] = opts.gpus_per_job
    if opts.cpus_per_job:
        params["cpus_per_task"] = opts.cpus_per_job
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    return params


def make_executor(folder: Path, opts: SlurmDefaults, cluster: str = "slurm"):
    try:
        import submitit
    except ImportError:
        raise SweepError("--executor slurm needs submitit: pip install 'scaling-testbed[slurm]'") from None
    # the cluster is always named: submitit's automatic choice silently runs everything locally
    # when it finds no sbatch
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params = _slurm_params(opts)
    if ex.cluster == "slurm":
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.account:
            params["slurm_account"] = opts.account
        params["slurm_array_parallelism"] = opts.array_parallelism
        params.update({k if k.startswith("slurm_") else f"slurm_{k}": v for k, v in opts.extra.items()})
    ex.update_parameters(**params)
    return ex


def submit(sd: SweepDir, runs: list[PlannedRun], opts: SlurmDefaults, cluster: str = "slurm") -> list:
    """Submit every run that is not final; return (run, submitit job) pairs, parents first."""
    todo = [r for r in runs if run_state(sd.run_dir(r.run_id)) not in FINISHED]
    if not todo:
        return []
    ex = make_executor(sd.root / "slurm", opts, cluster)
    jobs: list = []
    plain = [r for r in todo if not r.parent]
    if plain:
        with ex.batch():
            for r in plain:
                jobs.append((r, ex.submit(train_task, sd.command(r), str(sd.run_dir(r.run_id)),
                                          str(sd.log_file(r.run_id)))))
    job_of = {r.run_id: job for r, job in jobs}
    by_parent: dict[str, list[PlannedRun]] = {}
    for r in todo:
        if r.parent:
            by_parent.setdefault(r.parent, []).append(r)
    base_extra = dict(opts.extra.get("slurm_additional_parameters") or opts.extra.get("additional_parameters") or {})
    for parent, branches in by_parent.items():
        parent_job = job_of.get(parent)
        wait_s = 0.0
        if ex.cluster == "slurm":
            extra = dict(base_extra)
            if parent_job is not None:
                extra.update(dependency=f"afterany:{parent_job.job_id}", kill_on_invalid_dep="yes")
            ex.update_parameters(slurm_additional_parameters=extra)
        elif parent_job is not None:
            wait_s = opts.time_min * 60.0   # no dependencies here: the task waits for the checkpoint
        with ex.batch():
            for r in branches:
                jobs.append((r, ex.submit(train_task, sd.command(r), str(sd.run_dir(r.run_id)),
                                          str(sd.log_file(r.run_id)), str(sd.parent_ckpt(r)), wait_s)))
    return jobs


def wait(jobs: list) -> dict[str, str]:
    """Block until every job ends; run id -> status (failed when the job itself failed)."""
    out = {}
    for r, job in jobs:
        try:
            out[r.run_id] = job.result()["status"]
        except Exception as e:  # submitit raises the job's failure (node crash, time limit)
            out[r.run_id] = "failed"
            print(f"{r.run_id}: job {job.job_id} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return out


def _sbatch_script(sd: SweepDir, runs: list[PlannedRun], opts: SlurmDefaults, name: str) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --array=0-{len(runs) - 1}"
             + (f"%{opts.array_parallelism}" if opts.array_parallelism else ""),
             f"#SBATCH --time={opts.time_min}",
             f"#SBATCH --output={(sd.root / 'logs').resolve()}/%x-%A_%a.out"]
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.account:
        lines.append(f"#SBATCH --account={opts.account}")
    if opts.gpus_per_job:
        lines.append(f"#SBATCH --gpus-per-node={opts.gpus_per_job}")
    if opts.cpus_per_job:
        lines.append(f"#SBATCH --cpus-per-task={opts.cpus_per_job}")
    if opts.mem_gb:
        lines.append(f"#SBATCH --mem={int(opts.mem_gb * 1024)}M")
    for k, v in opts.extra.items():
        lines.append(f"#SBATCH --{k.removeprefix('slurm_').replace('_', '-')}={v}")
    lines += ["", "# one run per array task; each line resumes its run if it was interrupted",
              'case "$SLURM_ARRAY_TASK_ID" in']
    for i, r in enumerate(runs):
        log = shlex.quote(str(sd.log_file(r.run_id).resolve()))
        lines.append(f"  {i}) exec {sd.shell_command(r)} >> {log} 2>&1 ;;")
    lines += ['  *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac", ""]
    return "\n".join(lines)


def write_sbatch(sd: SweepDir, runs: list[PlannedRun], opts: SlurmDefaults, path: Path) -> list[Path]:
    """Write `path` (runs without a parent) and, when the sweep has WSD branches, `path`.branches
    (to be submitted with --dependency=afterany on the first). Returns the files written."""
    from train.rundir import atomic_write_text
    plain = [r for r in runs if not r.parent]
    branches = [r for r in runs if r.parent]
    name = sd.root.resolve().name
    written = []
    for p, group, suffix in ((path, plain, ""), (path.with_name(path.name + ".branches"), branches, "-branches")):
        if not group:
            continue
        try:
            atomic_write_text(p, _sbatch_script(sd, group, opts, name + suffix))
        except OSError as e:
            raise SweepError(f"--sbatch: cannot write {str(p)!r}: {e.strerror or e}") from None
        p.chmod(0o755)
        written.append(p)
    return written
