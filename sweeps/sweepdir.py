"""The sweep directory on disk (torch-free).

    <out>/sweep.json            the spec, its expanded run ids and config hashes (written first)
    <out>/configs/<run_id>.json the resolved config each run is launched with
    <out>/logs/<run_id>.log     each worker's stdout and stderr
    <out>/<run_id>/             the run directory that `python -m train` writes

The run id is a hash of the config, so relaunching the same sweep finds its
finished runs and skips them, and an interrupted run resumes from its checkpoint.
"""
from __future__ import annotations

import errno
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from sweeps.expand import PlannedRun
from train.contract import ckpt_file
from sweeps.spec import SweepError, SweepSpec
from train.config import config_hash
from train.contract import METRICS, SUMMARY
from train.rundir import atomic_write_json, read_json, salvage_metrics

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepDir:
    root: Path

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def config_file(self, run_id: str) -> Path:
        return self.root / "configs" / f"{run_id}.json"

    def log_file(self, run_id: str) -> Path:
        return self.root / "logs" / f"{run_id}.log"

    def pid_file(self, run_id: str) -> Path:
        return self.root / "logs" / f"{run_id}.pid"

    def parent_ckpt(self, run: PlannedRun) -> Path:
        return ckpt_file(self.run_dir(run.parent), run.branch_step)

    def command(self, run: PlannedRun, python: str = "") -> list[str]:
        """The command that trains (or resumes) one run: this interpreter and absolute paths, so the
        line runs from any directory (a scheduler's job starts in its own)."""
        return [python or sys.executable, "-m", "train", str(self.config_file(run.run_id).resolve()),
                "--out", str(self.run_dir(run.run_id).resolve())]

    def shell_command(self, run: PlannedRun) -> str:
        return shlex.join(self.command(run))


def sweep_record(spec: SweepSpec, runs: list[PlannedRun]) -> dict:
    return {
        "name": spec.name,
        "family": spec.family,
        "spec": spec.source,
        "runs": [{"run_id": r.run_id, "config_hash": config_hash(r.config), "parent": r.parent,
                  "branch_step": r.branch_step, "tokens": r.tokens, "N": r.n_params, "flops": r.flops,
                  "tags": r.tags} for r in runs],
    }


def prepare(out: str | Path, spec: SweepSpec, runs: list[PlannedRun]) -> SweepDir:
    """Write sweep.json and the per-run configs; refuse a directory holding another sweep.

    Another sweep means a different set of runs (ids or config hashes). Nothing is written
    before that check, so a wrong --out never mixes two sweeps.
    """
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise SweepError(f"--out {str(root)!r} is a file, not a directory")
    record = sweep_record(spec, runs)
    existing = root / SWEEP_FILE
    if existing.exists():
        old = read_json(existing)
        old_set = {(r["run_id"], r["config_hash"]) for r in old.get("runs", [])}
        new_set = {(r["run_id"], r["config_hash"]) for r in record["runs"]}
        if old_set != new_set:
            extra = sorted(r for r, _ in new_set - old_set)[:3]
            raise SweepError(f"{str(root)!r} holds another sweep ({old.get('name')!r}, {len(old_set)} runs; "
                             f"this spec has {len(new_set)} runs, e.g. new {extra}): choose another --out")
    elif root.exists() and any(p.name != ".lock" for p in root.iterdir()):
        raise SweepError(f"{str(root)!r} is not empty and holds no {SWEEP_FILE}: choose another --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
        # sweep.json first: a directory holding it is this sweep's, so a run of the same command
        # after a failure here (a full disk) picks up where this one stopped
        atomic_write_json(existing, record)
        (root / "configs").mkdir(exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        sd = SweepDir(root)
        for r in runs:
            cfg = r.config
            if r.parent:
                cfg = cfg.with_overrides({"train.init_from": str(sd.parent_ckpt(r).resolve())})
            atomic_write_json(sd.config_file(r.run_id), cfg.to_dict())
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
        raise SweepError(f"cannot write the sweep directory {str(root)!r}: {e.strerror or e}") from None
    return sd


def load_record(out: str | Path) -> dict:
    p = Path(out) / SWEEP_FILE
    if not p.exists():
        raise SweepError(f"{str(out)!r} is not a sweep directory (no {SWEEP_FILE})")
    try:
        return read_json(p)
    except (OSError, ValueError) as e:
        raise SweepError(f"{p}: cannot be read ({e})") from None


def read_summary(run_dir: Path) -> tuple[dict | None, str | None]:
    """(summary or None, what is wrong with it or None)."""
    summary = run_dir / SUMMARY
    if not summary.exists():
        return None, None
    try:
        d = read_json(summary)
    except (OSError, ValueError) as e:
        return None, f"{SUMMARY} unreadable ({type(e).__name__})"
    if not isinstance(d, dict):
        return None, f"{SUMMARY} is not a JSON object"
    return d, None


def run_state(run_dir: Path) -> str:
    """completed | diverged | failed from summary.json; pending when there is none (or it cannot be read,
    so the executor relaunches the run and the trainer rewrites it)."""
    d, _ = read_summary(run_dir)
    return str(d.get("status", "failed")) if d is not None else "pending"


def progress(run_dir: Path) -> dict:
    """Tokens done, last val loss, throughput and any damage of a run so far (from its files)."""
    try:
        rows, damaged = salvage_metrics(run_dir / METRICS)   # never raises for the file's content
    except OSError as e:
        rows, damaged = [], []
        problem = f"{METRICS} unreadable ({e.strerror or e})"
    else:
        problem = (f"{METRICS} line{'s' if len(damaged) > 1 else ''} {', '.join(map(str, damaged[:3]))}"
                   f"{' ...' if len(damaged) > 3 else ''} damaged") if damaged else None
    out = {"tokens": 0, "step": 0, "val_loss": None, "tokens_per_s": None, "problem": problem}
    nums = [r for r in rows if isinstance(r.get("step"), int) and isinstance(r.get("tokens"), (int, float))]
    if nums:
        last = nums[-1]
        out["tokens"], out["step"] = last["tokens"], last["step"]
        evals = [r for r in nums if r.get("kind") == "eval" and isinstance(r.get("val_loss"), (int, float))]
        if evals:
            out["val_loss"] = evals[-1]["val_loss"]
        if isinstance(last.get("time_s"), (int, float)) and last["time_s"] > 0:
            out["tokens_per_s"] = last["tokens"] / last["time_s"]
    summary, sproblem = read_summary(run_dir)
    if summary is not None and isinstance(summary.get("tokens_per_s"), (int, float)):
        out["tokens_per_s"] = summary["tokens_per_s"]  # the trainer's own figure (a branch's rows start late)
    if sproblem:
        out["problem"] = "; ".join(p for p in (out["problem"], sproblem) if p)
    return out
