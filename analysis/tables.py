"""Published tables (CSV/TSV/Parquet of N, D or C, and loss) as the tidy curve table, and its checks.

The tidy table has one row per (run, eval point) with `run, N, D, C, step, lr,
loss, status, final` plus whatever else the source holds. Every law, fit, backtest
and plot in `analysis/` works on it, whether the rows come from run directories
(`analysis.rundirs`) or from published numbers (here).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
# the columns every tidy table has, in this order
TIDY_COLUMNS = ("run", "N", "D", "C", "step", "lr", "loss", "status", "final")
# numeric columns that must be finite and positive for a fit to make sense
POSITIVE_COLUMNS = ("N", "D", "C", "loss")

# ---------------------------------------------------------------------------
# external tables

# tidy name -> names accepted without an explicit mapping (compared case-insensitively)
_ALIASES = {
    "N": ("n", "params", "parameters", "model size", "model_size", "n_params"),
    "D": ("d", "tokens", "training tokens", "n_tokens"),
    "C": ("c", "flops", "flop", "training flop", "training flops", "compute"),
    "loss": ("loss", "val_loss", "final_loss"),
    # a tidy table written to CSV (curves: several rows per run) loads back with its runs and steps
    "run": ("run", "run_id"),
    "step": ("step",),
    "lr": ("lr",),
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
    """A published table (CSV/TSV/Parquet) as a tidy table, one run per row unless it has a `run` column or
    one is mapped (a tidy curve table written to CSV loads back as the same runs).

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
    if "run" in out:
        out["run"] = out["run"].astype(str)
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


def load_targets(path: str | Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A CSV of forecast targets (columns N and D, or C; others kept): (the table, the target arrays).

    Every problem is one ValueError naming the file (`testbed predict --targets`).
    """
    path = Path(path)
    where = f"--targets {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{where} does not exist")
    try:
        targets = pd.read_csv(path)
    except Exception as e:   # pandas raises many parser types; the user needs one line naming the file
        raise ValueError(f"{where} is not a readable CSV ({str(e).splitlines()[0]})") from None
    cols = {str(c).strip(): c for c in targets.columns}
    asked = [k for k in ("N", "D", "C") if k in cols]
    if sorted(asked) not in (["D", "N"], ["C"]):
        raise ValueError(f"{where} needs columns N and D, or C alone; it has {list(targets.columns)}")
    if targets.empty:
        raise ValueError(f"{where} has no rows")
    values = {}
    for k in asked:
        v = pd.to_numeric(targets[cols[k]], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            raise ValueError(f"{where}: column {k} has {int(bad.sum())} value(s) that are not positive numbers "
                             f"(first on line {int(np.argmax(bad)) + 2})")
        values[k] = v
    return targets, values
