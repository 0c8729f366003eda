"""The SLURM executor (sweeps.slurm) against a recording stand-in for submitit: what reaches the scheduler
(cluster parameters, dependencies), which runs a rerun submits, and how failed jobs are reported.
No scheduler, no subprocess, no training."""
from __future__ import annotations

import contextlib
import json
import sys
import types

import pytest

from sweeps import slurm
from sweeps.expand import expand
from sweeps.spec import SlurmDefaults, spec_from_dict
from sweeps.sweepdir import SweepDir

BASE = {"model": {"kind": "gpt", "width": 32, "depth": 1, "context": 32, "head_dim": 16},
        "data": {"vocab_size": 64}, "train": {"batch_tokens": 512, "tokens": 8192}}


class FakeJob:
    def __init__(self, job_id: str, outcome):
        self.job_id = job_id
        self.outcome = outcome

    def result(self):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class FakeExecutor:
    """Records every submission with the parameters in force when it was made, as submitit's executor has them."""
    instances: list["FakeExecutor"] = []

    def __init__(self, folder: str, cluster: str):
        self.folder, self.cluster, self.params, self.submitted = folder, cluster, {}, []
        FakeExecutor.instances.append(self)

    def update_parameters(self, **params):
        self.params.update(params)

    @contextlib.contextmanager
    def batch(self):
        yield

    def submit(self, fn, *args):
        job = FakeJob(str(1000 + len(self.submitted)), {"rc": 0, "status": "completed"})
        self.submitted.append({"fn": fn, "args": args, "params": json.loads(json.dumps(self.params)), "job": job})
        return job


@pytest.fixture
def fake_submitit(monkeypatch):
    FakeExecutor.instances = []
    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=FakeExecutor))
    return FakeExecutor


def branches_sweep(tmp_path):
    base = {**BASE, "schedule": {"kind": "wsd", "warmup_steps": 2, "decay_frac": 0.25}}
    runs = expand(spec_from_dict({"name": "w", "base": base, "family": "wsd_branches",
                                  "sizes": [{"width": 32, "depth": 1}], "tokens": [2048, 4096, 8192]}))
    return SweepDir(tmp_path / "sweep"), runs


def test_the_sweeps_cluster_parameters_reach_submitit(fake_submitit, tmp_path):
    """Mutation slurm_partition_dropped: every SLURM setting of the spec is passed under submitit's name for it."""
    opts = SlurmDefaults(partition="gpu", gpus_per_job=2, cpus_per_job=8, mem_gb=32.0, time_min=90,
                         array_parallelism=16, account="proj", extra={"qos": "high", "slurm_constraint": "h100"})
    ex = slurm.make_executor(tmp_path, opts)
    assert ex.cluster == "slurm" and ex.folder == str(tmp_path)
    assert ex.params == {"timeout_min": 90, "gpus_per_node": 2, "cpus_per_task": 8, "mem_gb": 32.0,
                         "slurm_partition": "gpu", "slurm_account": "proj", "slurm_array_parallelism": 16,
                         "slurm_qos": "high", "slurm_constraint": "h100"}
    # submitit's local cluster knows no partitions or accounts: only the resources go
    local = slurm.make_executor(tmp_path, opts, cluster="local")
    assert local.params == {"timeout_min": 90, "gpus_per_node": 2, "cpus_per_task": 8, "mem_gb": 32.0}
    # unset settings are left to the cluster's defaults
    assert slurm.make_executor(tmp_path, SlurmDefaults()).params == {"timeout_min": 60, "slurm_array_parallelism": 256}


def test_branch_jobs_wait_for_their_parents_job_and_check_its_checkpoint(fake_submitit, tmp_path):
    """Mutation slurm_branch_dependency_afterok: a WSD branch is queued with afterany on its parent's job (a parent
    killed at its time limit after writing the branch checkpoint still releases it) and, when it starts, checks the
    parent checkpoint it starts from."""
    sd, runs = branches_sweep(tmp_path)
    parent = next(r for r in runs if not r.parent)
    branches = [r for r in runs if r.parent]
    assert len(branches) == 2
    jobs = slurm.submit(sd, runs, SlurmDefaults(partition="cpu"))
    (ex,) = fake_submitit.instances
    assert [r.run_id for r, _ in jobs] == [parent.run_id] + [b.run_id for b in branches]      # parents first
    first, *rest = ex.submitted
    assert "slurm_additional_parameters" not in first["params"]
    assert first["args"][:2] == (sd.command(parent), str(sd.run_dir(parent.run_id)))
    for sub, b in zip(rest, branches):
        extra = sub["params"]["slurm_additional_parameters"]
        assert extra == {"dependency": f"afterany:{first['job'].job_id}", "kill_on_invalid_dep": "yes"}
        assert sub["params"]["slurm_partition"] == "cpu"
        command, run_dir, log, wait_for, wait_s = sub["args"]
        assert (command, run_dir, log) == (sd.command(b), str(sd.run_dir(b.run_id)), str(sd.log_file(b.run_id)))
        assert wait_for == str(sd.run_dir(parent.run_id) / "ckpt" / f"step_{b.branch_step:08d}.pt") and wait_s == 0.0


def test_without_slurm_dependencies_a_branch_task_waits_for_the_checkpoint(fake_submitit, tmp_path):
    sd, runs = branches_sweep(tmp_path)
    slurm.submit(sd, runs, SlurmDefaults(time_min=7), cluster="local")
    (ex,) = fake_submitit.instances
    for sub in ex.submitted[1:]:
        assert "slurm_additional_parameters" not in sub["params"]
        assert sub["args"][4] == 7 * 60.0


def test_a_branch_whose_parent_is_done_is_submitted_without_a_dependency(fake_submitit, tmp_path):
    sd, runs = branches_sweep(tmp_path)
    parent = next(r for r in runs if not r.parent)
    sd.run_dir(parent.run_id).mkdir(parents=True)
    (sd.run_dir(parent.run_id) / "summary.json").write_text(json.dumps({"status": "completed"}))
    jobs = slurm.submit(sd, runs, SlurmDefaults())
    assert {r.run_id for r, _ in jobs} == {r.run_id for r in runs if r.parent}
    (ex,) = fake_submitit.instances
    assert all(sub["params"].get("slurm_additional_parameters") == {} for sub in ex.submitted)


def test_a_rerun_submits_only_runs_that_are_not_completed_or_diverged(fake_submitit, tmp_path):
    """Mutation slurm_resubmits_everything: completed and diverged runs are final; failed and never-started runs go
    again. Nothing to do submits nothing (no executor is even made)."""
    runs = expand(spec_from_dict({"name": "g", "base": BASE, "family": "grid", "axes": {"run.seed": [0, 1, 2, 3]}}))
    sd = SweepDir(tmp_path / "sweep")
    for r, status in zip(runs, ("completed", "diverged", "failed")):
        sd.run_dir(r.run_id).mkdir(parents=True)
        (sd.run_dir(r.run_id) / "summary.json").write_text(json.dumps({"status": status}))
    jobs = slurm.submit(sd, runs, SlurmDefaults())
    assert [r.run_id for r, _ in jobs] == [runs[2].run_id, runs[3].run_id]
    for r in runs[2:]:
        sd.run_dir(r.run_id).mkdir(parents=True, exist_ok=True)
        (sd.run_dir(r.run_id) / "summary.json").write_text(json.dumps({"status": "completed"}))
    fake_submitit.instances.clear()
    assert slurm.submit(sd, runs, SlurmDefaults()) == []
    assert fake_submitit.instances == []


def test_wait_reports_a_job_that_failed_as_a_failed_run(fake_submitit, tmp_path, capsys):
    """Mutation slurm_wait_failure_hidden: a job submitit reports as failed (node crash, time limit) is a failed run,
    and the job id and error are printed; a job's own answer is taken as it is."""
    runs = expand(spec_from_dict({"name": "g", "base": BASE, "family": "grid", "axes": {"run.seed": [0, 1, 2]}}))
    jobs = [(runs[0], FakeJob("7", {"rc": 0, "status": "completed"})),
            (runs[1], FakeJob("8", RuntimeError("Job 8 (task: 0) failed during processing\nTraceback ..."))),
            (runs[2], FakeJob("9", {"rc": 3, "status": "diverged"}))]
    assert slurm.wait(jobs) == {runs[0].run_id: "completed", runs[1].run_id: "failed", runs[2].run_id: "diverged"}
    out = capsys.readouterr().out
    assert f"{runs[1].run_id}: job 8 failed: RuntimeError: Job 8 (task: 0) failed during processing" in out
    assert "Traceback" not in out
