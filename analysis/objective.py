"""What a fit minimizes: the rows as arrays (`FitData`, `prepare`) and the robust objective.

Shared by the fitting engine (`analysis.fitting`: start grid and L-BFGS-B) and the
bootstrap (`analysis.uncertainty`: every replicate refitted at once), so neither
imports the other. The objective is the one Hoffmann et al. 2022 (Appendix D.2)
describe and Besiroglu et al. 2024 re-ran:

    sum_i w_i * Huber_delta(log L̂(x_i; theta) - log L_i),   delta = 1e-3,

the SUM over points (not the mean): the value, 0.0010183 on the 240 published
Chinchilla points, that Besiroglu et al.'s procedure reaches.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from analysis.laws import Law, get_law
from analysis.load import select_rows, use_n_convention
from analysis.plateau import PLATEAU_STEPS, fitted_on_plateau


@dataclass(frozen=True)
class FitData:
    """The rows a fit uses, as arrays: covariates, log loss, weights and the run of every row."""
    covariates: dict[str, np.ndarray]
    loss: np.ndarray
    weights: np.ndarray
    runs: np.ndarray              # run id of each row (str)
    run_codes: np.ndarray         # 0..R-1 index of each row's run
    n_convention: str
    flop_convention: str | None
    content_hash: str
    notes: tuple[str, ...] = ()   # caveats found while preparing (become FitResult warnings)
    ranges: dict = None           # [min, max] of N, D and C over the fitted rows, where the table has them
    n_source: str = ""            # why N counts what it counts (`analysis.load.n_convention`)

    @property
    def log_loss(self) -> np.ndarray:
        return np.log(self.loss)

    @property
    def n(self) -> int:
        return self.loss.size

    @property
    def n_runs(self) -> int:
        return int(self.run_codes.max()) + 1 if self.n else 0


def prepare(table: pd.DataFrame, law: str | Law, *, select: str | None = None, weights=None,
            n_convention: str | None = None, plateau_steps: float | None = None) -> FitData:
    """Validate the tidy table for `law` and turn the selected rows into arrays.

    `select`: "final" (each run's last eval point) or "all"; default: the rows the law
    describes (`Law.fitted_on`). N counts what `analysis.load.n_convention` decides.
    `plateau_steps`: the early plateau measured for these runs (default `analysis.plateau.PLATEAU_STEPS`);
    fitted points within 3x it are noted.
    Raises ValueError naming the problem: missing columns, NaN/inf, non-positive values,
    too few points, a single model size.
    """
    law = get_law(law)
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    table, n_conv, n_source, notes = use_n_convention(table, law, n_convention)
    if weights is not None and not isinstance(weights, str):
        w_all = np.asarray(weights, dtype=np.float64)
        if w_all.shape != (len(table),):
            raise ValueError(f"weights must have one entry per table row ({len(table)}), got shape {w_all.shape}")
        table["__weight"] = w_all
        weights = "__weight"
    needed = sorted(set(law.source_columns(table.columns)) | {"loss"} | ({weights} if weights else set()))
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"law {law.name!r} needs table columns {needed}; missing {missing}")
    rows = select_rows(table, select or law.fitted_on)
    if len(rows) == 0:
        raise ValueError("the table has no rows")
    for c in needed:
        v = pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(v)):
            name = "weights" if c == "__weight" else f"column {c!r}"
            raise ValueError(f"{name} has NaN, inf or non-numeric values in {int((~np.isfinite(v)).sum())} rows")
        if c == "S2" or c == weights:
            label = "weights" if c == "__weight" else f"weights column {c!r}"
            if c == weights and (np.any(v < 0) or not v.sum() > 0):
                raise ValueError(f"{label} must be non-negative with a positive sum")
        elif np.any(v <= 0):
            raise ValueError(f"column {c!r} must be positive; {int((v <= 0).sum())} rows are zero or negative")
    cov = law.covariate_arrays({c: rows[c].to_numpy(np.float64) for c in law.source_columns(rows.columns)})
    loss = rows["loss"].to_numpy(np.float64)
    w = rows[weights].to_numpy(np.float64) if weights else np.ones(len(rows))
    runs = rows["run"].astype(str).to_numpy() if "run" in rows.columns else np.array([f"row{i}" for i in rows.index])
    _, run_codes = np.unique(runs, return_inverse=True)
    if "N" in rows.columns and ("N" in law.covariates or "M" in law.covariates):
        if rows["N"].nunique() < 2:
            raise ValueError(f"law {law.name!r} needs several model sizes; column 'N' has a single value {rows['N'].iloc[0]:g}")
    if "step" in rows.columns:
        plateau = fitted_on_plateau(pd.to_numeric(rows["step"], errors="coerce").fillna(0).to_numpy(), runs,
                                    PLATEAU_STEPS if plateau_steps is None else plateau_steps)
        if plateau:
            notes.append(plateau)
    flop_conv = table.attrs.get("flop_convention")
    if flop_conv is None and "flop_convention" in rows.columns:
        kinds = sorted(set(rows["flop_convention"].astype(str)) - {""})
        flop_conv = kinds[0] if len(kinds) == 1 else ("mixed: " + ", ".join(kinds) if kinds else None)
        if len(kinds) > 1 and "C" in law.covariates:
            notes.append(f"the runs count FLOPs under different conventions ({', '.join(kinds)}); C is not comparable across them")
    ranges = {c: [float(rows[c].min()), float(rows[c].max())] for c in ("N", "D", "C")
              if c in rows.columns and pd.api.types.is_numeric_dtype(rows[c])}
    return FitData(covariates=cov, loss=loss, weights=w, runs=runs, run_codes=run_codes,
                   n_convention=n_conv, flop_convention=flop_conv,
                   content_hash=_content_hash(runs, cov, loss, w), notes=tuple(notes), ranges=ranges,
                   n_source=n_source)


def _content_hash(runs: np.ndarray, cov: Mapping[str, np.ndarray], loss: np.ndarray, w: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update("\x1f".join(runs.tolist()).encode())
    for name in sorted(cov):
        h.update(name.encode())
        h.update(np.ascontiguousarray(cov[name], dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(loss, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(w, dtype="<f8").tobytes())
    return "sha256:" + h.hexdigest()


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: r²/2 inside |r| <= delta, delta (|r| - delta/2) outside (as scipy.special.huber)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def objective(law: Law, theta_SxP: np.ndarray, data: FitData, delta: float,
              weights_Sxn: np.ndarray | None = None, need_grad: bool = True):
    """Sum of weighted Huber losses of log residuals for S parameter sets: (S,), and its gradient (S, P)."""
    logL_Sxn, J_SxnxP = law.log_predict_grad(theta_SxP, data.covariates, need_grad)
    r_Sxn = logL_Sxn - data.log_loss
    w = data.weights if weights_Sxn is None else weights_Sxn
    obj_S = (w * huber(r_Sxn, delta)).sum(axis=-1)
    if not need_grad:
        return obj_S, None
    psi_Sxn = w * np.clip(r_Sxn, -delta, delta)       # Huber'(r)
    return obj_S, (psi_Sxn[:, None, :] @ J_SxnxP)[:, 0, :]


def single_threaded_blas():
    """Limit BLAS to one thread while a solver runs.

    L-BFGS-B calls BLAS on vectors of a handful of entries, and the bootstrap's batched
    products are thin (P x n by n x P per replicate); multithreaded OpenBLAS spin-waits its
    threads on every call, which on a busy machine made one polish 10-20x slower.
    threadpoolctl is the maintained way to set that limit at run time; without it the fit
    is still correct, only slower on oversubscribed machines.
    """
    controller = _blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


@functools.cache
def _blas_controller():
    """One threadpoolctl controller per process: building one scans every loaded shared library (about
    7 ms; built per fit it cost 8% of the time of small fits, `benchmarks/startup_costs.py`). It is built
    at the first fit, when numpy's and scipy's BLAS, the ones a fit calls, are loaded."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()
