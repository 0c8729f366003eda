"""`testbed sweep status DIR`: where every run of a sweep stands (torch-free).

A run is
- running      when a live process holds its run directory's lock (`train.rundir.lock_holder`)
               or a local sweep worker training it is alive;
- completed, diverged or failed when its summary.json says so and nothing is writing it;
- interrupted  when it started (metrics or checkpoints exist) but no live process writes it
               and it has no final summary: a killed worker, a stopped driver, a copied
               directory; the next `sweep run` resumes it from its checkpoint;
- pending      when it has not started.

Liveness comes from the lock and the process table, never from how recently a file
changed. One damaged run never hides the others: its row says what is wrong (a damaged
metrics line, an unreadable summary) in `problem`.
"""
from __future__ import annotations

import os
from pathlib import Path

from sweeps.sweepdir import SweepDir, load_record, progress, read_summary
from train.contract import CKPT_DIR, METRICS, STATUSES
from train.rundir import lock_holder

INTERRUPTED = "interrupted"


def _worker_pid(pid_file: Path, run_dir: Path) -> int | None:
    """The pid a local sweep driver recorded for this run, if that process is alive and is training it.

    The command line is checked so that a pid reused by an unrelated process after a crash
    does not count (Linux /proc; elsewhere a live pid is taken at its word)."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.exists():
        try:
            if str(run_dir.resolve()) not in cmdline.read_bytes().decode(errors="replace").replace("\0", " "):
                return None
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":   # exited, not yet reaped
                return None
        except OSError:
            return None
    return pid


def run_status(sd: SweepDir, run_id: str) -> dict:
    """One row of the status table; never raises for a run's damaged files."""
    run_dir = sd.run_dir(run_id)
    prog = progress(run_dir)
    summary, _ = read_summary(run_dir)
    try:
        holder = lock_holder(run_dir)
    except OSError:
        holder = None
    pid = holder if holder is not None else _worker_pid(sd.pid_file(run_id), run_dir)
    final = summary.get("status") if summary is not None else None
    if pid is not None:
        state = "running"
    elif final in STATUSES:
        state = final
    elif (run_dir / METRICS).exists() or (run_dir / CKPT_DIR).exists():
        state = INTERRUPTED
    else:
        state = "pending"
    return {"run_id": run_id, "status": state, "pid": pid, "tokens_done": prog["tokens"],
            "val_loss": prog["val_loss"], "tokens_per_s": prog["tokens_per_s"], "problem": prog["problem"]}


def sweep_status(out: str | Path) -> dict:
    record = load_record(out)
    sd = SweepDir(Path(out))
    rows = []
    for r in record.get("runs", []):
        rid = str(r.get("run_id", "?"))
        try:
            row = run_status(sd, rid)
        except Exception as e:  # a run directory damaged in a way not foreseen above: say so, go on
            row = {"run_id": rid, "status": "unknown", "pid": None, "tokens_done": 0, "val_loss": None,
                   "tokens_per_s": None, "problem": f"cannot be read: {type(e).__name__}: {e}"}
        row.update(tokens=r.get("tokens", 0), N=r.get("N"), parent=r.get("parent", ""))
        rows.append(row)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {"name": record.get("name", "?"), "family": record.get("family", "?"), "runs": rows, "counts": counts}
