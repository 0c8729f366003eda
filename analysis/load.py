"""The tidy curve table from any source, and the rows a fit or a command uses.

- `load(source)`: a sweep/run directory (`analysis.rundirs.load_runs`) or a published
  CSV/TSV/Parquet table (`analysis.tables.load_table`), as one tidy table: one row per
  (run, eval point) with `run, N, D, C, step, lr, loss, status, final` (and, from run
  directories, `shared`: a WSD branch's rows before its branch step, which are its parent's).
- `n_convention` / `use_n_convention`: the one decision of which parameter count N
  means, used the same way by fit, backtest, report and predict.
- `select_rows`: each run's final point, or every eval point (what a law is fitted on).
- `filter_rows`: the row filters of the command line (fewest tokens, fewest tokens per
  parameter, the first part of each curve, `key=value` conditions); `split_by` groups
  a table holding several datasets or model families.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from analysis.laws import with_derived
from analysis.rundirs import load_runs
from analysis.tables import TABLE_SUFFIXES, load_table
from train.contract import N_CONVENTIONS

SELECTIONS = ("final", "all")


def load(
    source: str | Path | Iterable[str | Path],
    *,
    columns: dict[str, str] | str | None = None,
    n_convention: str | None = None,
    include_failed: bool = False,
    include_partial: bool = False,
) -> pd.DataFrame:
    """The tidy table from a sweep/run directory (or a list of them) or a CSV/Parquet file.

    `n_convention` declares which parameter count N is (see `n_convention`); for a
    published table it says what the table's N counts.
    """
    if n_convention is not None and n_convention not in N_CONVENTIONS:
        raise ValueError(f"--n-convention must be one of {N_CONVENTIONS}, got {n_convention!r}")
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
        table = load_table(path, columns)
        if n_convention:
            table.attrs["n_declared"], table.attrs["n_declared_by"] = n_convention, "--n-convention"
        return table
    raise ValueError(f"cannot load {str(path)!r}: expected a run or sweep directory or a "
                     f"{'/'.join(TABLE_SUFFIXES)} table")


# ---------------------------------------------------------------------------
# what N means

def n_convention(table: pd.DataFrame, law, requested: str | None = None) -> tuple[str, str]:
    """Which parameter count N means for `law` on `table`, and why.

    The one place this is decided; fit, backtest, report and predict all come through
    here. Precedence: `requested` (the `--n-convention` flag), then what the data
    declare (a sweep spec's `n_params`, read from the sweep.json beside the runs, or the
    convention the table was loaded with), then the law's own (Kaplan: non-embedding,
    Chinchilla: total).
    """
    if requested:
        if requested not in N_CONVENTIONS:
            raise ValueError(f"--n-convention must be one of {N_CONVENTIONS}, got {requested!r}")
        return requested, "--n-convention"
    declared = table.attrs.get("n_declared")
    if declared:
        return declared, table.attrs.get("n_declared_by") or "the data"
    return law.n_convention, f"the {law.name} law's own"


def use_n_convention(table: pd.DataFrame, law, requested: str | None = None
                     ) -> tuple[pd.DataFrame, str, str, list[str]]:
    """(a copy of `table` whose N counts the decided convention, the convention, why, notes).

    Tables from run directories carry both counts (`N_total`, `N_non_embedding`). A
    published table has one N: it is taken to count what was decided, unless the table
    says it counts another (then the law's convention is noted as unmet, or a requested
    one refused).
    """
    conv, why = n_convention(table, law, requested)
    out = table.copy()
    col = f"N_{conv}"
    table_conv = table.attrs.get("n_convention")
    if col in table.columns:
        out["N"] = table[col]
        out.attrs["n_convention"] = conv
        return out, conv, why, []
    if table_conv and table_conv != conv:
        if requested or table.attrs.get("n_declared"):
            raise ValueError(f"n_convention={conv!r} requested, but the table's N counts {table_conv!r} "
                             f"parameters and it has no column {col!r}")
        return out, table_conv, "the table's only count", [
            f"law {law.name!r} is defined on {law.n_convention} parameters, but the table's N counts "
            f"{table_conv} parameters"]
    out.attrs["n_convention"] = conv
    return out, conv, why, []


# ---------------------------------------------------------------------------
# which rows

def select_rows(table: pd.DataFrame, select: str) -> pd.DataFrame:
    """The rows a fit with `select` uses: every row ("all") or each run's last eval point ("final").

    "all" leaves out the rows a WSD cooldown branch repeats from its parent (`shared`, before the
    branch point): they are the parent's points, already in the table once."""
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    if select == "all" and "shared" in table.columns:
        return table[~table["shared"].astype(bool)]
    if select == "all" or "run" not in table.columns:
        return table
    if "step" not in table.columns:
        if table["run"].duplicated().any():
            raise ValueError("select='final' needs a 'step' column when a run has several rows")
        return table
    last = table.groupby("run", sort=False)["step"].transform("max")
    return table[table["step"] == last]


def filter_rows(table: pd.DataFrame, *, min_tokens: float | None = None, min_tokens_per_param: float | None = None,
                skip_first: float | None = None, where: Iterable[str] | None = None) -> pd.DataFrame:
    """The rows kept by the command line's row filters; an error names the flag that is wrong or left nothing.

    min_tokens: rows with at least this many tokens D (`--min-tokens`).
    min_tokens_per_param: rows with D / N at least this (`--min-tokens-per-param`).
    skip_first: drop the first fraction of each run's curve, by tokens (`--skip-first 0.2`: the
        eval points before 20% of the run's final tokens); a run's final point always stays.
    where: `key=value` conditions on table columns, all of which must hold (`--where dataset=c4`);
        a value compares as a number when the column is numeric.
    """
    keep = np.ones(len(table), bool)
    for flag, value, cols in (("--min-tokens", min_tokens, ("D",)), ("--min-tokens-per-param", min_tokens_per_param,
                                                                       ("D", "N")),
                              ("--skip-first", skip_first, ("D", "run"))):
        if value is None:
            continue
        if not value >= 0 or (flag == "--skip-first" and not value < 1):
            bound = "in [0, 1)" if flag == "--skip-first" else "a non-negative number"
            raise ValueError(f"{flag} must be {bound}, got {value}")
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise ValueError(f"{flag} needs column(s) {missing}, which the table lacks")
        D = table["D"].to_numpy(float)
        if flag == "--min-tokens":
            keep &= D >= value
        elif flag == "--min-tokens-per-param":
            keep &= with_derived({"N": table["N"].to_numpy(float), "D": D}, ("M",))["M"] >= value
        else:
            d_end = table.groupby("run", sort=False)["D"].transform("max").to_numpy(float)
            keep &= (D >= value * d_end) | (D == d_end)
    for cond in where or ():
        keep &= _condition(table, cond)
    if not keep.any():
        raise ValueError("the row filters (--min-tokens, --min-tokens-per-param, --skip-first, --where) leave no rows")
    return table[keep] if not keep.all() else table


def _condition(table: pd.DataFrame, cond: str) -> np.ndarray:
    key, sep, value = str(cond).partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise ValueError(f"--where {cond!r} must look like key=value (e.g. dataset=c4)")
    if key not in table.columns:
        raise ValueError(f"--where {cond!r}: the table has no column {key!r}; it has {list(table.columns)}")
    col = table[key]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        try:
            return col.to_numpy(float) == float(value)
        except ValueError:
            raise ValueError(f"--where {cond!r}: column {key!r} is numeric, {value!r} is not a number") from None
    return (col.astype(str) == value).to_numpy()


def split_by(table: pd.DataFrame, by: str | None) -> list[tuple[str, pd.DataFrame]]:
    """[(group label, rows)]: one group per value of column `by` (`--by dataset`), or the whole table."""
    if not by:
        return [("", table)]
    if by not in table.columns:
        raise ValueError(f"--by {by!r}: the table has no column {by!r}; it has {list(table.columns)}")
    return [(f"{by}={value}", rows) for value, rows in table.groupby(by, sort=True)]
