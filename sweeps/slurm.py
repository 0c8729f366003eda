"""SLURM executor through submitit: one array job per wave of runs.

Each array task runs the same command the local executor would (`python -m train
<config.json> --out <run dir>`), so exit codes, resume and the run directory are identical.
Stable WSD runs go in a first array and their branches in a second; a branch task waits
for its parent's checkpoint file before it starts (within the job's time limit).
Rerunning `testbed sweep run ... --executor slurm` resubmits only runs that are not
completed or diverged, and each resumes from its last checkpoint.

`cluster="local"` uses submitit's local executor (for tests and single machines).
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from sweeps.expand import PlannedRun
from sweeps.spec import SlurmDefaults, SweepError
from sweeps.sweepdir import SweepDir, run_state
from train.contract import FINISHED


def train_task(command: list[str], run_dir: str, log_file: str, wait_for: str = "", wait_s: float = 86400.0) -> dict:
    """Body of one array task: wait for the parent's checkpoint if any, then train (or resume)."""
    if wait_for:
        deadline = time.monotonic() + wait_s
        while not Path(wait_for).exists():
            if time.monotonic() > deadline:
                return {"rc": 1, "status": "failed", "error": f"parent checkpoint {wait_for} never appeared"}
            time.sleep(2.0)
    with open(log_file, "a") as log:
        rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    return {"rc": rc, "status": run_state(Path(run_dir))}


def make_executor(folder: Path, opts: SlurmDefaults, cluster: str | None = None, python: str = ""):
    try:
        import submitit
    except ImportError:
        raise SweepError("--executor slurm needs submitit: pip install 'scaling-testbed[slurm]'") from None
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict = {"timeout_min": opts.time_min}
    if opts.gpus_per_job:
        params["gpus_per_node"] = opts.gpus_per_job
    if opts.cpus_per_job:
        params["cpus_per_task"] = opts.cpus_per_job
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    if ex.cluster == "slurm":
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.account:
            params["slurm_account"] = opts.account
        params["slurm_array_parallelism"] = opts.array_parallelism
        params.update({k if k.startswith("slurm_") else f"slurm_{k}": v for k, v in opts.extra.items()})
    ex.update_parameters(**params)
    return ex


def submit(sd: SweepDir, runs: list[PlannedRun], opts: SlurmDefaults, cluster: str | None = None) -> list:
    """Submit every run that is not final; return submitit jobs (parents' array first)."""
    todo = [r for r in runs if run_state(sd.run_dir(r.run_id)) not in FINISHED]
    if not todo:
        return []
    ex = make_executor(sd.root / "slurm", opts, cluster)
    jobs = []
    for wave in ([r for r in todo if not r.parent], [r for r in todo if r.parent]):
        if not wave:
            continue
        with ex.batch():
            for r in wave:
                wait_for = str(sd.parent_ckpt(r)) if r.parent else ""
                job = ex.submit(train_task, sd.command(r), str(sd.run_dir(r.run_id)),
                                str(sd.log_file(r.run_id)), wait_for, opts.time_min * 60.0)
                jobs.append((r, job))
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
