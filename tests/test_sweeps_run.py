"""Running sweeps: dry run, refusal of a foreign directory, SIGKILL of the driver and of a
worker with relaunch (curves equal to an uninterrupted sweep), failures that do not stop
the others, and the submitit round trip. Real tiny runs on CPU."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeps.cli import main
from sweeps.expand import expand
from sweeps.spec import load_spec
from sweeps.status import sweep_status
from train.config import load_config
from train.rundir import read_metrics

TINY = {
    "model": {"kind": "gpt", "width": 32, "depth": 1, "context": 32, "head_dim": 16},
    "data": {"vocab_size": 64},
    "train": {"batch_tokens": 512, "tokens": 32768, "device": "cpu"},
    "eval": {"tokens": 1024, "points": 8},
    "run": {"ckpt_every": 4},
}


def write_spec(path: Path, **kw) -> Path:
    spec = {"name": "tiny", "base": TINY, "family": "grid", "axes": {"run.seed": [0, 1, 2]}, **kw}
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_cmd(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweeps", "run", str(spec), "--out", str(out), *extra]


def workers_of(out: Path) -> list[tuple[int, int]]:
    """(pid, parent pid) of every worker a driver has recorded in out/logs/*.pid."""
    found = []
    for p in (out / "logs").glob("*.pid"):
        try:
            pid = int(p.read_text())
            found.append((pid, int(Path(f"/proc/{pid}/stat").read_text().split()[3])))
        except (OSError, ValueError):
            continue
    return found


def curve(run_dir: Path) -> list[tuple]:
    rows = read_metrics(run_dir / "metrics.jsonl")
    return [(r["kind"], r["step"], r["tokens"], r.get("loss"), r.get("val_loss"), r["lr"]) for r in rows]


def worker_logs(out: Path) -> str:
    """The end of every worker log: what a failed run said, for the assertion message."""
    return "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((out / "logs").glob("*.log")))


def wait_for(pred, timeout=120.0, poll=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError("timed out waiting")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# The SIGKILL test's sweep: two runs on two workers, 32 steps each with a checkpoint every 4. A
# worker process costs seconds of imports; the kills land on the first checkpoints, so more
# steps or runs would only add time.
KILLED = {"axes": {"run.seed": [0, 1]}, "base": {**TINY, "train": {**TINY["train"], "tokens": 16384}}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The SIGKILL test's runs trained uninterrupted, in this process, one thread (as the sweep's workers)."""
    import torch

    from train.api import train_run
    d = tmp_path_factory.mktemp("ref")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = expand(load_spec(write_spec(d / "tiny.yaml", **KILLED)))
        for r in runs:
            assert train_run(r.config, d / r.run_id)["status"] == "completed"
    finally:
        torch.set_num_threads(threads)
    return {x.run_id: curve(d / x.run_id) for x in runs}


@pytest.mark.slow
def test_dry_run_prints_one_runnable_command_per_run(tmp_path, capsys):
    spec = write_spec(tmp_path / "tiny.yaml")
    out = tmp_path / "sweep"
    assert main(["run", str(spec), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    runs = expand(load_spec(spec))
    assert len(lines) == len(runs)
    for line, r in zip(lines, runs):
        argv = shlex.split(line)
        # this interpreter and absolute paths: a scheduler's job starts elsewhere, without our venv on PATH
        assert argv[:3] == [sys.executable, "-m", "train"] and argv[4] == "--out"
        assert Path(argv[3]).is_absolute() and Path(argv[5]) == (out / r.run_id).resolve()
        # the config file the command names is exactly the planned run
        assert load_config(argv[3]).resolved().run_id() == r.run_id
    assert not any((out / r.run_id).exists() for r in runs)  # nothing trained
    assert json.loads((out / "sweep.json").read_text())["runs"][0]["run_id"] == runs[0].run_id
    # a line runs as printed from another directory
    done = subprocess.run(shlex.split(lines[0]), cwd="/", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / runs[0].run_id / "summary.json").read_text())["status"] == "completed"


def test_an_output_dir_holding_another_sweep_is_refused_before_any_run(tmp_path, capsys):
    a = write_spec(tmp_path / "a.yaml")
    b = write_spec(tmp_path / "b.yaml", axes={"run.seed": [5, 6]})
    out = tmp_path / "sweep"
    assert main(["run", str(a), "--out", str(out), "--dry-run"]) == 0
    before = sorted(p.name for p in out.iterdir())
    assert main(["run", str(b), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds another sweep" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_bad_spec_exits_2_naming_the_key(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml", axes={"model.widht": [32]})
    assert main(["run", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "model.widht" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_sigkill_driver_and_worker_then_relaunch_completes_each_run_once(tmp_path, reference):
    spec = write_spec(tmp_path / "tiny.yaml", **KILLED)
    out = tmp_path / "sweep"
    runs = expand(load_spec(spec))

    # 1. SIGKILL the driver once a run has a checkpoint but is not finished
    driver = subprocess.Popen(sweep_cmd(spec, out, "--jobs", "2"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)

    def mid_run():
        for r in runs:
            rd = out / r.run_id
            if list((rd / "ckpt").glob("step_*.pt")) and not (rd / "summary.json").exists():
                return True
        return False

    wait_for(mid_run)
    pids = [int(p.read_text()) for p in (out / "logs").glob("*.pid")]
    assert pids
    driver.kill()
    driver.wait()
    # workers die with the driver (PR_SET_PDEATHSIG): none keeps training in the background
    wait_for(lambda: not any(alive(p) for p in pids), timeout=10)
    status = {r["run_id"]: r["status"] for r in sweep_status(out)["runs"]}
    assert list(status.values()).count("completed") < len(runs)
    # dead at once, whatever the files' age: nothing holds the runs, so none is "running"
    assert "running" not in status.values() and "interrupted" in status.values(), status

    def workers():
        return workers_of(out)

    # 2. relaunch and Ctrl-C it: workers are terminated and waited for, the driver reports and exits 130
    driver = subprocess.Popen(sweep_cmd(spec, out, "--jobs", "2"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    pids = wait_for(lambda: [pid for pid, ppid in workers() if ppid == driver.pid])
    driver.send_signal(signal.SIGINT)
    text, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "sweep interrupted" in text, text + worker_logs(out)
    assert not any(alive(p) for p in pids)

    # 3. relaunch; SIGKILL one worker mid-run: it is retried and resumes from its checkpoint
    driver = subprocess.Popen(sweep_cmd(spec, out, "--jobs", "2", "--retries", "1"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)

    def running_worker_with_progress():
        for p in (out / "logs").glob("*.pid"):
            rd = out / p.stem
            try:
                pid = int(p.read_text())
                ppid = int(Path(f"/proc/{pid}/stat").read_text().split()[3])
            except (OSError, ValueError):
                continue
            if ppid == driver.pid and (rd / "metrics.jsonl").exists() and read_metrics(rd / "metrics.jsonl") \
                    and not (rd / "summary.json").exists():
                return p.stem, pid
        return None

    victim, pid = wait_for(running_worker_with_progress)
    os.kill(pid, signal.SIGKILL)
    text, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, text + worker_logs(out)
    assert f"{victim}: failed (killed by signal 9" in text and "retrying" in text

    # 4. another launch finds everything done and starts nothing
    r3 = subprocess.run(sweep_cmd(spec, out, "--jobs", "2"), capture_output=True, text=True, timeout=120)
    assert r3.returncode == 0 and "started" not in r3.stdout, r3.stdout

    for r in runs:
        summary = json.loads((out / r.run_id / "summary.json").read_text())
        assert summary["status"] == "completed"
        got = curve(out / r.run_id)
        steps = [(k, s) for k, s, *_ in got]
        assert len(steps) == len(set(steps)), "a step was logged twice"
        assert got == reference[r.run_id], f"{r.run_id}: curve differs from the uninterrupted sweep"


@pytest.mark.slow
def test_a_diverging_run_does_not_stop_the_others_and_is_not_retried(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", axes={"optim.lr": [3e-3, 1e3]},
                      base={**TINY, "train": {**TINY["train"], "tokens": 8192}})
    out = tmp_path / "sweep"
    r = subprocess.run(sweep_cmd(spec, out, "--jobs", "2", "--retries", "2"), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    st = {x["run_id"]: x for x in sweep_status(out)["runs"]}
    runs = expand(load_spec(spec))
    good, bad = (x for x in sorted(runs, key=lambda x: x.config.optim.lr))
    assert st[good.run_id]["status"] == "completed"
    assert st[bad.run_id]["status"] == "diverged"
    assert r.stdout.count(f"{bad.run_id}: started") == 1  # divergence is deterministic: no retry
    # status --json on the CLI
    s = subprocess.run([sys.executable, "-m", "sweeps", "status", str(out), "--json"], capture_output=True,
                       text=True, timeout=60)
    assert json.loads(s.stdout)["counts"] == {"completed": 1, "diverged": 1}


@pytest.mark.slow
def test_submitit_local_executor_round_trip(tmp_path):
    pytest.importorskip("submitit")
    spec = write_spec(tmp_path / "s.yaml", axes={"run.seed": [0]},
                      base={**TINY, "train": {**TINY["train"], "tokens": 4096}})
    out = tmp_path / "sweep"
    r = subprocess.run(sweep_cmd(spec, out, "--executor", "slurm", "--cluster", "local"), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted 1 runs" in r.stdout
    for run in expand(load_spec(spec)):
        summary = json.loads((out / run.run_id / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["tokens"] == 4096
    assert list((out / "slurm").iterdir())  # submitit's job folder


@pytest.mark.slow
def test_wsd_branch_waits_for_its_parent_and_equals_a_from_scratch_run(tmp_path):
    import torch

    from train.api import train_run
    base = {**TINY, "train": {**TINY["train"], "tokens": 8192},
            "schedule": {"kind": "wsd", "warmup_steps": 2, "decay_frac": 0.25}, "run": {}}
    spec = tmp_path / "w.yaml"
    spec.write_text(yaml.safe_dump({"name": "w", "base": base, "family": "wsd_branches",
                                    "sizes": [{"width": 32, "depth": 1}], "tokens": [4096, 8192]}))
    out = tmp_path / "sweep"
    r = subprocess.run(sweep_cmd(spec, out, "--jobs", "2"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    parent, branch = expand(load_spec(spec))
    assert branch.parent == parent.run_id and branch.branch_step == 6
    stored = json.loads((out / branch.run_id / "config.json").read_text())
    assert stored["train"]["init_from"].endswith(f"{parent.run_id}/ckpt/step_00000006.pt")
    # the branch's curve after its branch step equals the from-scratch run of its length
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_run(branch.config, tmp_path / "scratch")
    finally:
        torch.set_num_threads(threads)
    tail = [row for row in curve(out / branch.run_id) if row[1] > branch.branch_step]
    scratch = [row for row in curve(tmp_path / "scratch") if row[1] > branch.branch_step]
    assert tail and tail == scratch
    # the branch repeats its parent's eval rows up to the branch step: a fit of every eval point counts them once
    from analysis.load import load, select_rows
    table = load(out)
    b_rows = table[table["run"] == branch.run_id]
    assert b_rows["shared"].tolist() == (b_rows["step"] <= branch.branch_step).tolist() and b_rows["shared"].any()
    fitted = select_rows(table, "all")
    assert not fitted.duplicated(["N", "D", "S1", "S2", "loss"]).any()
    assert len(fitted) == len(table) - int(b_rows["shared"].sum())
    assert not table[table["run"] == parent.run_id]["shared"].any()


def test_workers_split_cpu_threads_and_take_gpus_round_robin(monkeypatch):
    from sweeps.local import _env
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    envs = [_env(slot, jobs=4, n_gpus=2) for slot in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1"]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"2"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert [_env(s, jobs=2, n_gpus=2)["CUDA_VISIBLE_DEVICES"] for s in range(2)] == ["4", "6"]
    # a CPU-only worker leaves the device list as it found it: the user's setting passes through, unset stays unset
    assert _env(0, jobs=1, n_gpus=0)["CUDA_VISIBLE_DEVICES"] == "4,6"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    cpu_only = _env(0, jobs=1, n_gpus=0)
    assert "CUDA_VISIBLE_DEVICES" not in cpu_only and cpu_only["OMP_NUM_THREADS"] == "8"


def test_executor_slurm_without_sbatch_is_a_clear_error_before_anything_runs(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))   # no sbatch anywhere
    spec = write_spec(tmp_path / "s.yaml", axes={"run.seed": [0]})
    for extra in ([], ["--cluster", "slurm"]):
        assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--executor", "slurm", *extra]) == 2
        err = capsys.readouterr().err
        assert "sbatch" in err and "--dry-run" in err and "--cluster local" in err and "Traceback" not in err
        assert not (tmp_path / "o").exists()


FAKE_SBATCH = """#!/bin/sh
# records each submission script and answers as sbatch does
n=$(ls "$RECORD" | wc -l)
cp "$1" "$RECORD/$n.sh"
echo "Submitted batch job $((1000 + n))"
"""


def test_wsd_branches_are_submitted_with_a_slurm_dependency_on_their_parent(tmp_path):
    pytest.importorskip("submitit")
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    base = {**TINY, "train": {**TINY["train"], "tokens": 8192},
            "schedule": {"kind": "wsd", "warmup_steps": 2, "decay_frac": 0.25}, "run": {}}
    spec = tmp_path / "w.yaml"
    spec.write_text(yaml.safe_dump({"name": "w", "base": base, "family": "wsd_branches",
                                    "sizes": [{"width": 32, "depth": 1}], "tokens": [2048, 4096, 8192]}))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record)}
    r = subprocess.run(sweep_cmd(spec, tmp_path / "sweep", "--executor", "slurm", "--no-wait"), capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted 3 runs" in r.stdout
    scripts = [(record / f"{i}.sh").read_text() for i in range(len(list(record.iterdir())))]
    assert len(scripts) == 2                                      # the stable run, then its branches' array
    assert "--dependency" not in scripts[0]
    assert "#SBATCH --dependency=afterany:1000" in scripts[1] and "#SBATCH --array=0-1" in scripts[1]
    assert "#SBATCH --kill-on-invalid-dep=yes" in scripts[1]


@pytest.mark.slow
def test_dry_run_writes_an_sbatch_array_script_that_runs_a_task(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml", base={**TINY, "train": {**TINY["train"], "tokens": 2048}})
    out, script = tmp_path / "sweep", tmp_path / "sweep.sbatch"
    assert main(["run", str(spec), "--out", str(out), "--dry-run", "--sbatch", str(script)]) == 0
    text = script.read_text()
    runs = expand(load_spec(spec))
    assert "#SBATCH --array=0-2" in text and text.count(sys.executable) == 3
    assert str((out / runs[1].run_id).resolve()) in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    task = subprocess.run(["bash", str(script)], cwd="/", env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"},
                          capture_output=True, text=True, timeout=300)
    assert task.returncode == 0, task.stderr
    assert json.loads((out / runs[1].run_id / "summary.json").read_text())["status"] == "completed"
    assert not (out / runs[0].run_id).exists()
