"""Run directories (config.json, metrics.jsonl, summary.json) as the tidy curve table.

One row per (run, eval point) with `run, N, D, C, step, lr, loss, status, final`,
the run's hyperparameters as columns, both parameter counts (`N_total`,
`N_non_embedding`; which one a law reads as N is decided in
`analysis.load.n_convention`), and the lr schedule's features S1 and S2
(`analysis.schedule.run_schedule_features`, the function a forecast of a planned run
uses too).

Torch-free: run directories are read with `train.rundir` and parameter counts come
from `summary.json` (or `models.counting` for runs still in progress).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from analysis.schedule import run_schedule_features
from analysis.tables import check_table
from train.contract import N_CONVENTIONS

log = logging.getLogger(__name__)
SWEEP_FILE = "sweep.json"   # written by `sweeps` beside the run directories: the spec, with its n_params


def find_run_dirs(path: str | Path) -> list[Path]:
    """Run directories (those holding config.json) at or below `path`, sorted.

    A run directory is not searched further (its ckpt/ holds no runs), so a
    sweep directory, a folder of sweeps and a single run all work.
    """
    root = Path(path)
    if not root.exists():
        raise ValueError(f"run directory {str(root)!r} does not exist")
    if (root / "config.json").is_file():
        return [root]
    found: list[Path] = []
    stack = [root]
    while stack:
        d = stack.pop()
        for child in sorted(p for p in d.iterdir() if p.is_dir()):
            if (child / "config.json").is_file():
                found.append(child)
            elif child.name != "ckpt":
                stack.append(child)
    return sorted(found)


def load_runs(
    path_or_paths: str | Path | Iterable[str | Path],
    n_convention: str | None = None,
    include_failed: bool = False,
    include_partial: bool = False,
) -> pd.DataFrame:
    """The tidy curve table of every run under the given directories.

    Diverged/failed runs are left out unless `include_failed`; runs without a
    summary.json (still training, or killed) unless `include_partial`. Each
    exclusion is logged. `n_convention` ("total" or "non_embedding") declares which
    count N is, as a sweep spec's `n_params` does (read from the sweep.json beside the
    runs); without either, the `N` column counts total parameters and each law reads its
    own count (`analysis.load.n_convention`).
    """
    if n_convention is not None and n_convention not in N_CONVENTIONS:
        raise ValueError(f"n_convention must be one of {N_CONVENTIONS}, got {n_convention!r}")
    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    if not paths:
        raise ValueError("no run directories given")
    run_dirs: list[Path] = []
    for p in paths:
        found = find_run_dirs(p)
        if not found:
            raise ValueError(f"no runs found under {str(p)!r} (no directory with a config.json)")
        run_dirs += found

    frames, skipped = [], []
    declared, declared_by = (n_convention, "the caller") if n_convention else _spec_n_convention(run_dirs)
    for d in run_dirs:
        frame = _run_frame(d, declared or "total")
        status = frame.attrs["status"]
        if status in ("diverged", "failed") and not include_failed:
            skipped.append(f"{d.name} ({status})")
            continue
        if status == "running" and not include_partial:
            skipped.append(f"{d.name} (no summary.json: still running or killed)")
            continue
        if frame.empty:
            skipped.append(f"{d.name} ({status}, no eval rows)")
            continue
        frames.append(frame)
    if skipped:
        log.warning("left out %d run(s): %s", len(skipped), "; ".join(skipped))
    if not frames:
        where = ", ".join(str(p) for p in paths)
        raise ValueError(f"no usable runs found under {where} ({len(run_dirs)} run dir(s), all left out: "
                         f"{'; '.join(skipped)}; keep them with --include-failed / --include-partial, "
                         "in Python include_failed=True / include_partial=True)")
    table = pd.concat(frames, ignore_index=True)
    if include_failed:
        table = _drop_nonfinite_unfinished(table)
    check_table(table, source=", ".join(str(p) for p in paths))
    # Both counts travel with the table so a fit can switch convention without reloading.
    table["N_total"] = table["params_total"].astype(float)
    table["N_non_embedding"] = table["params_non_embedding"].astype(float)
    table.attrs["n_convention"] = declared or "total"
    if declared:
        table.attrs["n_declared"], table.attrs["n_declared_by"] = declared, declared_by
    return table


def _spec_n_convention(run_dirs: list[Path]) -> tuple[str | None, str]:
    """The `n_params` the sweep specs of these runs declare (sweep.json beside each run), if they agree."""
    declared = set()
    for parent in {d.parent for d in run_dirs}:
        record = parent / SWEEP_FILE
        if record.is_file():
            spec = (_read_json(record).get("spec") or {})
            if spec.get("n_params"):
                declared.add(str(spec["n_params"]))
    if len(declared) > 1:
        log.warning("the sweep specs declare different N conventions %s; each law reads its own", sorted(declared))
    if len(declared) == 1 and next(iter(declared)) in N_CONVENTIONS:
        return declared.pop(), "the sweep spec's n_params"
    return None, ""


def _run_frame(run_dir: Path, n_convention: str) -> pd.DataFrame:
    """The eval rows of one run directory with its hyperparameters attached."""
    from train.rundir import read_metrics  # torch-free

    config = _read_json(run_dir / "config.json")
    summary = _read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
    metrics_path = run_dir / "metrics.jsonl"
    rows = read_metrics(metrics_path) if metrics_path.is_file() else []
    status = summary.get("status", "failed") if summary else "running"

    evals = [r for r in rows if r.get("kind") == "eval"]
    missing = sorted({k for r in evals for k in ("step", "tokens", "flops", "lr", "val_loss") if k not in r})
    if missing:
        raise ValueError(f"{metrics_path}: eval rows lack {missing}")
    hp = run_hyperparameters(config, summary)
    # A resumed run may log an eval step twice (once before the interruption,
    # once after); the later row is the one the finished curve continues from.
    # Step 0 (the initial loss, no tokens seen) lies on no scaling curve, so it is skipped.
    by_step = {int(r["step"]): r for r in evals if int(r["step"]) > 0}
    steps = sorted(by_step)
    n = hp["params_total"] if n_convention == "total" else hp["params_non_embedding"]
    frame = pd.DataFrame({
        "run": run_dir.name,
        "N": float(n),
        "D": [float(by_step[s]["tokens"]) for s in steps],
        "C": [float(by_step[s]["flops"]) for s in steps],
        "step": np.asarray(steps, dtype=np.int64),
        "lr": [float(by_step[s]["lr"]) for s in steps],
        "loss": [_float(by_step[s]["val_loss"]) for s in steps],
        "status": status,
    })
    # `final` marks the end of the run's schedule; an unfinished run has none.
    frame["final"] = (frame["step"] == frame["step"].max()) & (
        (status == "completed") | (frame["step"] >= hp["total_steps"]))
    # A WSD cooldown branch starts from its parent's checkpoint and its metrics repeat the parent's
    # eval rows up to there: the same model, so the same (N, D, S1, S2, loss). They are the parent's
    # points; `shared` marks them so a fit of every eval point does not count them twice.
    frame["shared"] = frame["step"] <= _branch_step(config)
    for k, v in hp.items():
        frame[k] = v
    frame["path"] = str(run_dir)
    # the lr schedule's features at each eval step, by the function a forecast of a planned run uses
    frame["S1"], frame["S2"] = run_schedule_features(config, frame["step"].to_numpy())
    frame.attrs["status"] = status
    return frame


def _branch_step(config: dict) -> int:
    """The step of the parent checkpoint a branch run starts from (`train.init_from`); 0 for other runs."""
    from train.contract import CKPT_PATTERN

    init = (config.get("train") or {}).get("init_from") or ""
    m = CKPT_PATTERN.match(Path(init).name) if init else None
    return int(m.group(1)) if m else 0


def run_hyperparameters(config: dict, summary: dict | None) -> dict:
    """The hyperparameter columns of one run, from its resolved config and summary."""
    try:
        m, t, o, s, r = (config[k] for k in ("model", "train", "optim", "schedule", "run"))
        heads = m["heads"] or (m["width"] // m["head_dim"] if m.get("kind") == "gpt" else 0)
        hp = {
            "kind": m["kind"], "width": m["width"], "depth": m["depth"], "heads": heads,
            "context": m["context"], "vocab_size": m["vocab_size"],
            "parametrization": m.get("parametrization", "sp"),
            "lr_peak": float(o["lr"]), "weight_decay": float(o["weight_decay"]),
            "schedule": s["kind"], "warmup_steps": s["warmup_steps"], "decay_frac": float(s["decay_frac"]),
            "final_frac": float(s["final_frac"]), "decay_shape": s.get("decay_shape", "linear"),
            "timescale": s.get("timescale", 0),
            "batch_tokens": t["batch_tokens"], "tokens_budget": t["tokens"],
            "total_steps": max(1, math.ceil(t["tokens"] / t["batch_tokens"])),
            "seed": r["seed"], "sweep": r.get("sweep", ""), "data_seed": config.get("data", {}).get("seed", 0),
        }
    except (KeyError, TypeError) as e:
        raise ValueError(f"config.json lacks the key {e} (expected a resolved run config)") from None
    if summary is not None and "params_total" in summary:
        counts = {k: summary[k] for k in ("params_total", "params_non_embedding")}
        fpt, conv, floor = summary.get("flops_per_token"), summary.get("flop_convention"), summary.get("loss_floor")
    else:
        # Unfinished runs have no summary yet: count from the config (torch-free).
        from models.config import ModelConfig
        from models.counting import flops_per_token, param_counts

        mc = ModelConfig(**m)
        pc = param_counts(mc)
        conv = r.get("flop_convention", "exact")
        counts = {"params_total": pc["total"], "params_non_embedding": pc["non_embedding"]}
        fpt, floor = flops_per_token(mc, conv), None
    hp.update({k: int(v) for k, v in counts.items()})
    hp["flops_per_token"] = float(fpt) if fpt is not None else np.nan
    hp["flop_convention"] = conv or ""
    hp["loss_floor"] = float(floor) if floor is not None else np.nan
    return hp


def _drop_nonfinite_unfinished(table: pd.DataFrame) -> pd.DataFrame:
    """A diverged run's last evals may be NaN/inf: drop those rows (and say so)."""
    bad = ~np.isfinite(table["loss"].to_numpy(dtype=float)) & (table["status"] != "completed")
    if bad.any():
        log.warning("dropped %d non-finite eval row(s) of diverged/failed/unfinished runs", int(bad.sum()))
        table = table[~bad].reset_index(drop=True)
    return table


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None


def _float(x) -> float:
    return float("nan") if x is None else float(x)
