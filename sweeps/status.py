"""`testbed sweep status DIR`: where every run of a sweep stands (torch-free).

A run is completed, diverged or failed when its summary.json says so; running when a
local worker's pid is alive (or, under SLURM, its metrics were written in the last
`RECENT_S` seconds); pending otherwise (tokens > 0 means it will resume from a checkpoint).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from sweeps.sweepdir import SweepDir, load_record, progress, run_state

RECENT_S = 120.0


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def sweep_status(out: str | Path) -> dict:
    record = load_record(out)
    sd = SweepDir(Path(out))
    rows = []
    for r in record["runs"]:
        rid = r["run_id"]
        run_dir = sd.run_dir(rid)
        state = run_state(run_dir)
        prog = progress(run_dir)
        if state == "pending":
            metrics = run_dir / "metrics.jsonl"
            recent = metrics.exists() and time.time() - metrics.stat().st_mtime < RECENT_S
            if _alive(sd.pid_file(rid)) or recent:
                state = "running"
        rows.append({"run_id": rid, "status": state, "tokens_done": prog["tokens"], "tokens": r["tokens"],
                     "val_loss": prog["val_loss"], "tokens_per_s": prog["tokens_per_s"], "N": r["N"],
                     "parent": r.get("parent", "")})
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {"name": record["name"], "family": record["family"], "runs": rows, "counts": counts}
