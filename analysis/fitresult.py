"""`FitResult`: fitted constants with their provenance, saved and loaded as JSON.

A fit result carries everything needed to trust or reproduce a constant: the
law and its version, estimates, bootstrap intervals and samples, the loss
function and optimizer settings, convergence, residual statistics, the
counting conventions, and which rows went in (run ids and a content hash).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from analysis.laws import Law, get_law

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FitResult:
    law: str
    law_version: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]   # percentile bootstrap intervals at `interval_level`
    interval_level: float | None
    samples: np.ndarray | None                   # (B, P) bootstrap parameter sets, natural units, `param_names` order
    objective: float                             # sum of weighted Huber losses of log residuals at the optimum
    converged: bool
    message: str
    residuals: dict[str, float]
    warnings: list[str]
    settings: dict[str, Any]
    convention: dict[str, Any]
    inputs: dict[str, Any]
    n_points: int
    param_names: tuple[str, ...] = field(default=())

    # ---- the law behind the numbers ---------------------------------
    @property
    def law_obj(self) -> Law:
        return get_law(self.law)

    def standard_errors(self) -> dict[str, float]:
        """Bootstrap standard deviation of each parameter (needs samples)."""
        S = self._require_samples()
        return {p: float(v) for p, v in zip(self.param_names, S.std(axis=0, ddof=1))}

    def predict(self, **covariates) -> np.ndarray:
        """Point prediction of the loss at the given covariates (e.g. N=..., D=...)."""
        return self.law_obj.predict(self.params, **covariates)

    def predict_samples(self, **covariates) -> np.ndarray:
        """The loss under every bootstrap parameter set: (B, n)."""
        return self.law_obj.predict(self._require_samples(), **covariates)

    def predict_interval(self, level: float = 0.9, **covariates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(point, lower, upper): point from the fitted parameters, a central percentile band from the bootstrap."""
        point = self.predict(**covariates)
        lo, hi = percentile_band(self.predict_samples(**covariates), level)
        return point, lo, hi

    def _require_samples(self) -> np.ndarray:
        if self.samples is None or len(self.samples) == 0:
            raise ValueError("this fit has no bootstrap samples; refit with bootstrap=B (e.g. 1000) to get intervals")
        return self.samples

    # ---- persistence -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["intervals"] = {k: [v[0], v[1]] for k, v in self.intervals.items()}
        d["samples"] = None if self.samples is None else self.samples.tolist()
        d["param_names"] = list(self.param_names)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FitResult":
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"fit result format_version {version} is not supported (expected {FORMAT_VERSION})")
        missing = [f.name for f in fields(cls) if f.name not in d and f.name != "param_names"]
        if missing:
            raise ValueError(f"fit result is missing fields {missing}")
        d["intervals"] = {k: (float(v[0]), float(v[1])) for k, v in d["intervals"].items()}
        d["samples"] = None if d["samples"] is None else np.asarray(d["samples"], dtype=np.float64).reshape(-1, len(d["params"]))
        d["param_names"] = tuple(d.get("param_names") or d["params"].keys())
        return cls(**d)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        # allow_nan: a residual statistic can be NaN (e.g. R² of a constant target); Python reads it back.
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True))
        tmp.replace(path)
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> "FitResult":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"fit result {path} does not exist")
        return cls.from_dict(json.loads(path.read_text()))

    def summary(self) -> str:
        """A few readable lines: estimate [interval] per parameter, objective and convergence."""
        lines = [f"{self.law} v{self.law_version}: {self.n_points} points, objective {self.objective:.6g}, "
                 f"{'converged' if self.converged else 'NOT converged'} ({self.message})"]
        for p, v in self.params.items():
            iv = self.intervals.get(p)
            band = f"  [{iv[0]:.4g}, {iv[1]:.4g}]" if iv else ""
            lines.append(f"  {p:>8} = {v:.6g}{band}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FitResult):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()
        return _json_equal(a, b)

    __hash__ = None  # mutable-content (arrays, dicts): not hashable


def percentile_band(samples_SxN: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central percentile band of samples along axis 0; NaN samples (e.g. unreachable targets) count as +inf."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    s = np.where(np.isnan(samples_SxN), np.inf, np.asarray(samples_SxN, dtype=np.float64))
    q = 100.0 * (1.0 - level) / 2.0
    finite = np.all(np.isfinite(s), axis=0)
    # linear interpolation between order statistics where all samples are finite; where some
    # are infinite, the order statistic itself (interpolating toward inf means nothing)
    with np.errstate(invalid="ignore"):
        lo, hi = np.percentile(np.where(finite, s, 0.0), [q, 100.0 - q], axis=0)
    if not np.all(finite):
        lo_i, hi_i = np.percentile(s, [q, 100.0 - q], axis=0, method="inverted_cdf")
        lo, hi = np.where(finite, lo, lo_i), np.where(finite, hi, hi_i)
    return lo, hi


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return a == b


__all__ = ["FitResult", "percentile_band"]
