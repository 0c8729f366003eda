"""The sweep directory on disk (torch-free).

    <out>/sweep.json            the spec, its expanded run ids and config hashes (written first)
    <out>/configs/<run_id>.json the resolved config each run is launched with
    <out>/logs/<run_id>.log     each worker's stdout and stderr
    <out>/<run_id>/             the run directory that `python -m train` writes

The run id is a hash of the config, so relaunching the same sweep finds its
finished runs and skips them, and an interrupted run resumes from its checkpoint.
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from sweeps.expand import PlannedRun
from train.contract import ckpt_file
from sweeps.spec import SweepError, SweepSpec
from train.config import config_hash
from train.rundir import atomic_write_json, read_json, read_metrics

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
        """The command that trains (or resumes) one run."""
        return [python or sys.executable, "-m", "train", str(self.config_file(run.run_id)),
                "--out", str(self.run_dir(run.run_id))]

    def shell_command(self, run: PlannedRun) -> str:
        return shlex.join(["python", "-m", "train", str(self.config_file(run.run_id)),
                           "--out", str(self.run_dir(run.run_id))])


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
        (root / "configs").mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot create the sweep directory {str(root)!r}: {e}") from None
    sd = SweepDir(root)
    atomic_write_json(existing, record)
    for r in runs:
        cfg = r.config
        if r.parent:
            cfg = cfg.with_overrides({"train.init_from": str(sd.parent_ckpt(r).resolve())})
        atomic_write_json(sd.config_file(r.run_id), cfg.to_dict())
    return sd


def load_record(out: str | Path) -> dict:
    p = Path(out) / SWEEP_FILE
    if not p.exists():
        raise SweepError(f"{str(out)!r} is not a sweep directory (no {SWEEP_FILE})")
    return read_json(p)


def run_state(run_dir: Path) -> str:
    """completed | diverged | failed from summary.json; pending when there is none yet."""
    summary = run_dir / "summary.json"
    if summary.exists():
        try:
            return str(read_json(summary).get("status", "failed"))
        except (OSError, json.JSONDecodeError):
            return "pending"
    return "pending"


def progress(run_dir: Path) -> dict:
    """Tokens done, last val loss and throughput of a run so far (from metrics.jsonl)."""
    rows = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    out = {"tokens": 0, "step": 0, "val_loss": None, "tokens_per_s": None}
    if rows:
        last = rows[-1]
        out["tokens"], out["step"] = last.get("tokens", 0), last.get("step", 0)
        evals = [r for r in rows if r.get("kind") == "eval"]
        if evals:
            out["val_loss"] = evals[-1].get("val_loss")
        if last.get("time_s"):
            out["tokens_per_s"] = last["tokens"] / last["time_s"]
    summary = run_dir / "summary.json"
    if summary.exists():  # the trainer's own figure (a branch's rows start at its parent's step)
        try:
            out["tokens_per_s"] = read_json(summary).get("tokens_per_s", out["tokens_per_s"])
        except (OSError, json.JSONDecodeError):
            pass
    return out
