"""Load run directories and external tables into the tidy curve table.

The tidy table has one row per (run, eval point) with `run, N, D, C, step, lr,
loss, status, final` plus the run's hyperparameters as columns. Every law, fit,
backtest and plot in `analysis/` works on it, whether the rows come from our own
run directories (`load_runs`) or from published numbers (`load_table`).

Torch-free: run directories are read with `train.rundir` and parameter counts
come from `summary.json` (or `models.counting` for runs still in progress).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from train.contract import N_CONVENTIONS

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
# the columns every tidy table has, in this order
TIDY_COLUMNS = ("run", "N", "D", "C", "step", "lr", "loss", "status", "final")
# numeric columns that must be finite and positive for a fit to make sense
POSITIVE_COLUMNS = ("N", "D", "C", "loss")


# ---------------------------------------------------------------------------
# dispatch

def load(
    source: str | Path | Iterable[str | Path],
    *,
    columns: dict[str, str] | str | None = None,
    n_convention: str = "total",
    include_failed: bool = False,
    include_partial: bool = False,
) -> pd.DataFrame:
    """The tidy table from a sweep/run directory (or a list of them) or a CSV/Parquet file."""
    if isinstance(source, (list, tuple)):
        return load_runs(source, n_convention=n_convention, include_failed=include_failed,
                         include_partial=include_partial)
    path = Path(source)
    if not path.exists():
        raise ValueError(f"input {str(path)!r} does not exist")
    if path.is_dir():
        if columns:
            raise ValueError(f"--columns applies to CSV/Parquet tables, but {str(path)!r} is a directory of runs")
        return load_runs(path, n_convention=n_convention, include_failed=include_failed,
                         include_partial=include_partial)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return load_table(path, columns)
    raise ValueError(f"cannot load {str(path)!r}: expected a run or sweep directory or a "
                     f"{'/'.join(TABLE_SUFFIXES)} table")


# ---------------------------------------------------------------------------
# run directories

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
    n_convention: str = "total",
    include_failed: bool = False,
    include_partial: bool = False,
) -> pd.DataFrame:
    """The tidy curve table of every run under the given directories.

    Diverged/failed runs are left out unless `include_failed`; runs without a
    summary.json (still training, or killed) unless `include_partial`. Each
    exclusion is logged. `n_convention` picks N: "total" (Chinchilla) or
    "non_embedding" (Kaplan).
    """
    if n_convention not in N_CONVENTIONS:
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
    for d in run_dirs:
        frame = _run_frame(d, n_convention)
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
                         f"{'; '.join(skipped)}; pass include_failed/include_partial to keep them)")
    table = pd.concat(frames, ignore_index=True)
    if include_failed:
        table = _drop_nonfinite_unfinished(table)
    check_table(table, source=", ".join(str(p) for p in paths))
    # Both counts travel with the table so a fit can switch convention without reloading.
    table["N_total"] = table["params_total"].astype(float)
    table["N_non_embedding"] = table["params_non_embedding"].astype(float)
    table = add_schedule_features(table)
    table.attrs["n_convention"] = n_convention
    return table


def add_schedule_features(table: pd.DataFrame, decay: float = 0.999) -> pd.DataFrame:
    """Add the `schedule` law's covariates S1 (forward area) and S2 (annealing area) to every row.

    Both come from each run's per-step lr (`lr_schedules`) through
    `analysis.laws.schedule_features` (Tissue et al. 2024, Eqs. 1-3), in
    peak-lr-equivalent tokens (each step counts `batch_tokens`), so runs with
    different peak lr or batch size share one axis.
    """
    from analysis.laws import schedule_features

    curves = lr_schedules(table)
    s1 = np.empty(len(table))
    s2 = np.empty(len(table))
    steps = table["step"].to_numpy()
    for run, idx in table.groupby("run", sort=False).indices.items():
        first = table.iloc[idx[0]]
        s1[idx], s2[idx] = schedule_features(curves[run], steps[idx], decay,
                                             tokens_per_step=float(first["batch_tokens"]))
    out = table.copy()
    out["S1"], out["S2"] = s1, s2
    return out


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
    for k, v in hp.items():
        frame[k] = v
    frame["path"] = str(run_dir)
    frame.attrs["status"] = status
    return frame


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


def lr_schedule_for_run(config: dict) -> np.ndarray:
    """The lr used at optimizer steps 1..total_steps of a run, from its config dict.

    Element i is the lr of step i + 1 (`train.schedules.lr_curve`'s convention).
    The `schedule` law turns this into its annealing-area features.
    """
    from train.config import RunConfig
    from train.schedules import lr_curve

    cfg = RunConfig.from_dict(config)
    return np.asarray(lr_curve(cfg.steps, cfg.optim.lr, cfg.schedule), dtype=np.float64)


def lr_schedules(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """run -> its per-step lr curve, rebuilt from the table's schedule columns (no file access)."""
    from train.config import ScheduleConfig
    from train.schedules import lr_curve

    need = ("lr_peak", "schedule", "warmup_steps", "final_frac", "decay_frac", "decay_shape", "timescale", "total_steps")
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"per-step learning rates need the run columns {missing}, which the table lacks "
                         "(only tables loaded from run directories carry a schedule)")
    curves = {}
    for row in table.drop_duplicates("run").itertuples(index=False):
        sched = ScheduleConfig(kind=row.schedule, warmup_steps=int(row.warmup_steps), final_frac=float(row.final_frac),
                               decay_frac=float(row.decay_frac), decay_shape=row.decay_shape, timescale=int(row.timescale))
        curves[row.run] = np.asarray(lr_curve(int(row.total_steps), float(row.lr_peak), sched), dtype=np.float64)
    return curves


def run_configs(table: pd.DataFrame) -> dict[str, dict]:
    """run -> its config.json, for tables loaded from run directories (needs the `path` column)."""
    if "path" not in table.columns:
        raise ValueError("the table has no `path` column: run configs exist only for tables loaded from run directories")
    firsts = table.drop_duplicates("run")
    return {run: _read_json(Path(p) / "config.json") for run, p in zip(firsts["run"], firsts["path"])}


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


# ---------------------------------------------------------------------------
# external tables

# tidy name -> names accepted without an explicit mapping (compared case-insensitively)
_ALIASES = {
    "N": ("n", "params", "parameters", "model size", "model_size", "n_params"),
    "D": ("d", "tokens", "training tokens", "n_tokens"),
    "C": ("c", "flops", "flop", "training flop", "training flops", "compute"),
    "loss": ("loss", "val_loss", "final_loss"),
}


def parse_columns(spec: dict[str, str] | str | None) -> dict[str, str]:
    """Column mapping tidy name -> source column, from a dict or 'N=Model Size,C=Training FLOP,loss=loss'."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        mapping = dict(spec)
    else:
        mapping = {}
        for item in str(spec).split(","):
            if "=" not in item:
                raise ValueError(f"column mapping item {item.strip()!r} must look like N=\"Model Size\"")
            k, v = item.split("=", 1)
            mapping[k.strip()] = v.strip().strip("'\"")
    allowed = ("run", "N", "D", "C", "step", "lr", "loss")
    unknown = [k for k in mapping if k not in allowed]
    if unknown:
        raise ValueError(f"column mapping names unknown tidy column(s) {unknown}; allowed: {list(allowed)}")
    return mapping


def load_table(path: str | Path, columns: dict[str, str] | str | None = None) -> pd.DataFrame:
    """A published table (CSV/TSV/Parquet) as a tidy table, one run per row unless mapped.

    `columns` maps tidy names to the file's columns, e.g.
    `N="Model Size",C="Training FLOP",loss=loss`. Unmapped tidy names are found by
    common aliases. Of N, D, C at least two are needed; the third follows from
    C = 6·N·D (Kaplan et al. 2020, Table 1, without the attention term), which
    is how such tables are usually published.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"table {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            raw = pd.read_parquet(path)
        else:
            raw = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except Exception as e:  # pandas raises many parser types; one clear message is what the user needs
        raise ValueError(f"cannot read table {str(path)!r}: {e}") from None
    return tidy_from_frame(raw, parse_columns(columns), source=str(path))


def tidy_from_frame(raw: pd.DataFrame, mapping: dict[str, str], source: str = "table") -> pd.DataFrame:
    """Rename, derive and validate: the shared core of `load_table`."""
    if raw.empty:
        raise ValueError(f"{source}: the table has no rows")
    missing = [src for src in mapping.values() if src not in raw.columns]
    if missing:
        raise ValueError(f"{source}: column(s) {missing} not found; the table has {list(raw.columns)}")
    lower = {str(c).lower(): c for c in raw.columns}
    resolved = dict(mapping)
    for tidy, aliases in _ALIASES.items():
        if tidy not in resolved:
            hit = next((lower[a] for a in aliases if a in lower), None)
            if hit is not None:
                resolved[tidy] = hit
    if "loss" not in resolved:
        raise ValueError(f"{source}: no loss column (map one with loss=<column>); the table has {list(raw.columns)}")
    have = [k for k in ("N", "D", "C") if k in resolved]
    if len(have) < 2:
        raise ValueError(f"{source}: need two of N, D, C but found {have or 'none'} "
                         f"(map them, e.g. N=\"Model Size\",C=\"Training FLOP\"); the table has {list(raw.columns)}")

    out = pd.DataFrame(index=raw.index)
    for tidy, src in resolved.items():
        out[tidy] = raw[src]
    for k in ("N", "D", "C", "loss"):
        if k in out:
            out[k] = pd.to_numeric(out[k], errors="coerce").astype(float)
    check_table(out, source=source, columns=[k for k in POSITIVE_COLUMNS if k in out])
    # Derive the missing one of N, D, C with C = 6ND.
    if "D" not in out:
        out["D"] = out["C"] / (6.0 * out["N"])
    if "C" not in out:
        out["C"] = 6.0 * out["N"] * out["D"]
    if "N" not in out:
        out["N"] = out["C"] / (6.0 * out["D"])
    if "run" not in out:
        out["run"] = [f"row{i}" for i in range(len(out))]
    if "step" not in out:
        out["step"] = 0
    if "lr" not in out:
        out["lr"] = np.nan
    out["status"] = "completed"
    # a run's final point is its last one (most tokens); with one row per run, every row
    out["final"] = out.groupby("run")["D"].transform("max") == out["D"]
    extra = [c for c in raw.columns if c not in resolved.values() and c not in out.columns]
    out = pd.concat([out[list(TIDY_COLUMNS)], raw[extra]], axis=1).reset_index(drop=True)
    out["flop_convention"] = "6N" if "C" not in resolved else "given"
    return out


# ---------------------------------------------------------------------------
# validation

def check_table(table: pd.DataFrame, source: str = "table", columns: Iterable[str] = POSITIVE_COLUMNS) -> None:
    """Raise ValueError naming the column and the number of bad rows (NaN, inf or <= 0)."""
    columns = list(columns)
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise ValueError(f"{source}: missing column(s) {absent}; the table has {list(table.columns)}")
    for c in columns:
        values = pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float)
        nonfinite = int((~np.isfinite(values)).sum())
        if nonfinite:
            raise ValueError(f"{source}: column {c!r} has {nonfinite} NaN/inf/non-numeric value(s) of {len(values)}")
        nonpos = int((values <= 0).sum())
        if nonpos:
            raise ValueError(f"{source}: column {c!r} has {nonpos} zero or negative value(s) of {len(values)}")
