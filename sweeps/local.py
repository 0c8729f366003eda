"""Local executor: one `python -m train` subprocess per run, K at a time.

- Idempotent: a run whose summary.json says completed or diverged is skipped; any other
  run is (re)launched with the same command, and `train` resumes it from its checkpoint.
- A failed run never stops the others; failures are retried `retries` times (a diverged
  run or a config error is deterministic and is not retried).
- WSD branches wait until their parent's checkpoint at the branch step exists.
- CPU threads are split between the K workers (OMP/MKL_NUM_THREADS = cores // K); with
  CUDA, worker slot i sees GPU i mod n_gpus through CUDA_VISIBLE_DEVICES.
- Worker lifetime is tied to the driver: each child asks the kernel for SIGKILL when its
  parent dies (prctl(PR_SET_PDEATHSIG), Linux), so a SIGKILLed driver leaves no orphans
  training in the background; rerunning the same command resumes them. SIGINT/SIGTERM
  to the driver terminate the workers, wait for them and report.
- One driver per sweep directory at a time (an flock on <out>/.lock).

The driver is one thread polling its children: PR_SET_PDEATHSIG fires when the *thread*
that forked the child exits, and `preexec_fn` is only safe without other threads, so no
thread pool and no auto-refreshing display thread are used.
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sweeps.expand import PlannedRun
from sweeps.spec import SweepError
from sweeps.sweepdir import SweepDir, run_state
from train.contract import EXIT_DIVERGED as RC_DIVERGED, FINISHED, NOT_RETRIED
from train.rundir import RunDirBusy, RunLock, lock_holder

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn: the kernel sends SIGKILL to this child when the driver dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: fall back to the SIGINT/SIGTERM cleanup only
        return
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)


def cuda_device_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if not Path("/proc/driver/nvidia").exists() and not Path("/dev/nvidia0").exists():
        return 0  # no NVIDIA driver: skip importing torch (seconds) in the driver
    try:
        import torch
        return torch.cuda.device_count()
    except ImportError:
        return 0


@dataclass
class Worker:
    run: PlannedRun
    proc: subprocess.Popen
    slot: int
    started: float
    log: object


@dataclass
class Outcome:
    state: dict = field(default_factory=dict)     # run_id -> completed | diverged | failed | skipped-... | pending
    attempts: dict = field(default_factory=dict)
    wall: dict = field(default_factory=dict)
    interrupted: bool = False


def lock_sweep_dir(root: str | Path) -> RunLock:
    """The sweep directory's driver lock: the run directory's lock (`train.rundir.RunLock`, an flock
    the kernel drops when the driver dies) on <out>/.lock; a second driver is refused naming the first."""
    try:
        return RunLock(root).acquire()
    except RunDirBusy:
        holder = lock_holder(root)
        who = f"process {holder}" if holder else "another process"
        raise SweepError(f"another driver ({who}) is running the sweep in {str(root)!r}; wait for it to finish "
                         "or stop it first") from None


def worker_threads(jobs: int, requested: int = 0) -> int:
    """CPU threads a worker's torch uses: train.threads when the config sets it, else cores / jobs."""
    return requested or max(1, (os.cpu_count() or 1) // jobs)


def _env(slot: int, jobs: int, n_gpus: int) -> dict:
    env = dict(os.environ)
    threads = str(worker_threads(jobs))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
    if n_gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(n_gpus)]
        env["CUDA_VISIBLE_DEVICES"] = ids[slot % n_gpus]
    return env


def run_local(sd: SweepDir, runs: list[PlannedRun], jobs: int = 1, retries: int = 0, display=None,
              poll_s: float = 0.2, pack: int = 1) -> Outcome:
    """Train every run not yet final; return each run's state. Needs `lock_sweep_dir` held.

    pack > 1: compatible runs train K at a time in one process (`train.packed`, see
    sweeps/packing.py); a worker slot then holds a pack, and its members' states are read
    from their own run directories, which look exactly as without packing.
    """
    if jobs < 1 or retries < 0:
        raise SweepError("--jobs must be >= 1 and --retries >= 0")
    out = Outcome()
    by_id = {r.run_id: r for r in runs}
    for stale in (sd.root / "logs").glob("*.pid"):  # left by a driver that was killed (we hold the lock)
        stale.unlink()
    queue: list[PlannedRun] = []
    for r in runs:
        s = run_state(sd.run_dir(r.run_id))
        out.state[r.run_id] = s if s in FINISHED else "pending"
        if s not in FINISHED:
            queue.append(r)
        out.attempts[r.run_id] = 0
    packs: dict[str, list[PlannedRun]] = {}
    if pack > 1:
        from sweeps.packing import plan_packs
        packs = {p[0].run_id: p for p in plan_packs(queue, pack)}
        queue = [p[0] for p in packs.values()]
    n_gpus = cuda_device_count()
    workers: dict[int, Worker] = {}
    stop = {"sig": 0}

    def on_signal(signum, _frame):
        stop["sig"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while (queue or workers) and not stop["sig"]:
            _reap(sd, workers, out, queue, retries, display, packs)
            _launch(sd, by_id, workers, out, queue, jobs, n_gpus, display, packs)
            if display:
                display.update(out, workers)
            time.sleep(poll_s)
        if stop["sig"]:
            out.interrupted = True
            _terminate(workers)
            _reap(sd, workers, out, [], 0, display, packs)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for w in workers.values():
            w.log.close()
    if display:
        display.update(out, {})
    return out


def _parent_ready(sd: SweepDir, r: PlannedRun, queue, workers) -> str:
    """ready | wait | broken for a branch (a plain run is always ready)."""
    if not r.parent:
        return "ready"
    if sd.parent_ckpt(r).exists():
        return "ready"
    parent_live = any(q.run_id == r.parent for q in queue) or any(w.run.run_id == r.parent for w in workers.values())
    return "wait" if parent_live else "broken"


def _launch(sd, by_id, workers, out, queue, jobs, n_gpus, display, packs=None) -> None:
    for r in list(queue):
        if len(workers) >= jobs:
            return
        ready = _parent_ready(sd, r, queue, workers)
        if ready == "wait":
            continue
        queue.remove(r)
        if ready == "broken":
            out.state[r.run_id] = "failed"
            if display:
                display.event(r, f"failed: parent {r.parent} ended ({out.state.get(r.parent)}) without the "
                                 f"checkpoint of step {r.branch_step}")
            continue
        slot = min(set(range(jobs)) - set(workers))
        log = open(sd.log_file(r.run_id), "a")
        pid = os.getpid()
        members = (packs or {}).get(r.run_id, [r])
        if len(members) > 1:
            from sweeps.packing import pack_command
            cmd = pack_command(sd, members)
        else:
            cmd = sd.command(r)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=_env(slot, jobs, n_gpus), preexec_fn=functools.partial(_die_with_parent, pid))
        for m in members:
            sd.pid_file(m.run_id).write_text(str(proc.pid))
            out.attempts[m.run_id] += 1
            out.state[m.run_id] = "running"
        workers[slot] = Worker(r, proc, slot, time.monotonic(), log)
        if display:
            display.event(r, f"started (attempt {out.attempts[r.run_id]}, pid {proc.pid})")


def _reap(sd, workers, out, queue, retries, display, packs=None) -> None:
    for slot, w in list(workers.items()):
        rc = w.proc.poll()
        if rc is None:
            continue
        members = (packs or {}).get(w.run.run_id, [w.run])
        if len(members) > 1:
            del workers[slot]
            w.log.close()
            for m in members:
                sd.pid_file(m.run_id).unlink(missing_ok=True)
            _reap_pack(sd, w, members, rc, out, queue, retries, display)
            continue
        del workers[slot]
        w.log.close()
        rid = w.run.run_id
        sd.pid_file(rid).unlink(missing_ok=True)
        out.wall[rid] = out.wall.get(rid, 0.0) + time.monotonic() - w.started
        state = run_state(sd.run_dir(rid))
        if rc == 0 and state == "completed":
            out.state[rid] = "completed"
        elif rc == RC_DIVERGED or state == "diverged":
            out.state[rid] = "diverged"
        else:
            out.state[rid] = "failed"
            why = f"exit {rc}" if rc >= 0 else f"killed by signal {-rc}"
            retry = rc not in NOT_RETRIED and out.attempts[rid] <= retries
            if retry:
                queue.insert(0, w.run)
                out.state[rid] = "pending"
            if display:
                display.event(w.run, f"failed ({why}; log {sd.log_file(rid)})" + ("; retrying" if retry else ""))
            continue
        if display:
            display.event(w.run, out.state[rid])


def _reap_pack(sd, w, members, rc, out, queue, retries, display) -> None:
    """A packed worker ended: each member's state comes from its own run directory; the
    pack is relaunched (its finished members are skipped) while retries remain."""
    for m in members:
        out.wall[m.run_id] = out.wall.get(m.run_id, 0.0) + time.monotonic() - w.started
        state = run_state(sd.run_dir(m.run_id))
        out.state[m.run_id] = state if state in ("completed", "diverged") else "failed"
        if display:
            display.event(m, out.state[m.run_id])
    failed = [m for m in members if out.state[m.run_id] == "failed"]
    if failed and rc not in NOT_RETRIED and out.attempts[w.run.run_id] <= retries:
        queue.insert(0, w.run)
        for m in failed:
            out.state[m.run_id] = "pending"


def _terminate(workers: dict, grace_s: float = 15.0) -> None:
    for w in workers.values():
        if w.proc.poll() is None:
            w.proc.terminate()
    deadline = time.monotonic() + grace_s
    for w in workers.values():
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
