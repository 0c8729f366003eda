"""`FitResult`: fitted constants with their provenance, saved and loaded as JSON.

A fit result carries everything needed to trust or reproduce a constant: the
law and its version, estimates, bootstrap intervals and samples, the loss
function and optimizer settings, convergence, residual statistics, the
counting conventions, which rows went in (run ids and a content hash), and, for a
calibrated fit, the law's extrapolation error measured on those rows
(`extrapolation`, an `ExtrapolationError`; `analysis.calibrate` measures it).

File format 2 stores that error as its own field; format 1 kept it inside
`settings["extrapolation_error"]`, and such files are still read.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from analysis.laws import Law, get_law

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_V1_SETTINGS_KEY = "extrapolation_error"   # where format 1 kept the extrapolation error


@dataclass(frozen=True)
class ExtrapolationError:
    """How far off the law's forecasts were inside the fitted runs, and how that grew with distance.

    The log error of a forecast at compute factor f = C / C_fit beyond the fitted runs is
    modelled as s t with s^2 = s0^2 + (k ln f)^2 (`analysis.calibrate`) and t Student-t with `dof`
    degrees of freedom, the fitted runs' model sizes less one (None: normal, for a ladder whose every fitted
    run had two or more inits, `inits`, and in fits calibrated before 2026-11-30). `C_fit` is the compute
    scale of the fitted rows, in `C_convention`: "C" (the table's own FLOPs, for a law of C)
    or "6ND"; `C_fit_runs` is the same in the FLOP convention the runs recorded
    (`runs_flop_convention`), which a planned run's config can be counted in.
    """
    law: str
    s0: float                   # scatter of single runs about the fit (std of the log residuals)
    k: float                    # growth of the log error's std per unit of ln(extrapolation factor)
    n_forecasts: int            # backtest forecasts the rate was measured on
    max_extrapolation: float    # the largest factor among them
    C_fit: float = float("nan")
    C_convention: str = "6ND"
    C_fit_runs: float | None = None
    runs_flop_convention: str | None = None
    dof: float | None = None    # degrees of freedom of the interval's quantile (None: normal)
    inits: int = 1              # the fewest inits (seeds) any fitted run was trained from (`fewest_inits`)
    per_run: Any = field(default=None, repr=False, compare=False)   # the backtest errors (not stored)

    def sigma(self, extrapolation) -> np.ndarray:
        """Std of the log error (without the parameter part) at compute factor(s) beyond the fitted runs."""
        x = np.log(np.maximum(np.asarray(extrapolation, dtype=float), 1.0))
        return np.sqrt(self.s0 ** 2 + (self.k * x) ** 2)

    def quantile(self, level: float) -> float:
        """The multiple of sigma that a central interval of `level` spans on each side."""
        q = 0.5 + level / 2
        return float(norm.ppf(q) if self.dof is None else student_t.ppf(q, self.dof))

    def quantile_name(self) -> str:
        """How the interval's quantile is taken, for messages."""
        if self.dof is not None:
            return f"Student-t, {self.dof:g} degrees of freedom (model sizes less one)"
        return f"normal (every fitted run has {self.inits} or more inits)" if self.inits >= 2 else "normal"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_run"}
        dist = "Normal(0, 1)" if self.dof is None else f"Student-t({self.dof:g})"
        return {**d, "model": f"ln(actual/predicted) ~ s t, s^2 = s0^2 + (k ln(C/C_fit))^2, t ~ {dist}"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExtrapolationError":
        try:
            return cls(law=str(d["law"]), s0=_finite(d["s0"], "s0"), k=_finite(d["k"], "k"),
                       n_forecasts=int(d["n_forecasts"]), max_extrapolation=float(d["max_extrapolation"]),
                       C_fit=float(d.get("C_fit", float("nan"))), C_convention=str(d.get("C_convention", "6ND")),
                       C_fit_runs=None if d.get("C_fit_runs") is None else float(d["C_fit_runs"]),
                       runs_flop_convention=d.get("runs_flop_convention"),
                       dof=None if d.get("dof") is None else float(d["dof"]), inits=int(d.get("inits", 1)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"its extrapolation error lacks {e}") from None


def _finite(v, name: str) -> float:
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} is {v}")
    return v


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
    extrapolation: ExtrapolationError | None = None   # measured by `analysis.calibrate`; None: not calibrated

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
        d["extrapolation"] = None if self.extrapolation is None else self.extrapolation.to_dict()
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FitResult":
        """A fit result from its dict (formats 1 and 2); ValueError names what is wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        if version not in READABLE_VERSIONS:
            raise ValueError(f"format_version {version} is not supported (this version reads {list(READABLE_VERSIONS)})")
        if version == 1:   # the extrapolation error lived in the untyped settings
            d["settings"] = dict(d.get("settings") or {})
            d["extrapolation"] = d["settings"].pop(_V1_SETTINGS_KEY, None)
        optional = ("param_names", "extrapolation")
        missing = [f.name for f in fields(cls) if f.name not in d and f.name not in optional]
        if missing:
            raise ValueError(f"missing fields {missing}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        try:
            law = get_law(d["law"])
            if str(d["law_version"]) != law.version:
                raise ValueError(f"this fit is of {law.name} version {d['law_version']}; the testbed now fits version "
                                 f"{law.version} (parameters {list(law.param_names)}): fit the runs again")
            d["params"] = {str(k): float(v) for k, v in d["params"].items()}
            law.as_natural(d["params"])
            bad = [k for k, v in d["params"].items() if not np.isfinite(v)]
            if bad:
                raise ValueError(f"parameter(s) {bad} are not finite numbers ({', '.join(str(d['params'][k]) for k in bad)})")
            d["intervals"] = {k: (float(v[0]), float(v[1])) for k, v in d["intervals"].items()}
            d["samples"] = (None if d["samples"] is None else
                            np.asarray(d["samples"], dtype=np.float64).reshape(-1, len(d["params"])))
        except (TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"malformed parameters, intervals or samples ({e})") from None
        d["param_names"] = tuple(d.get("param_names") or d["params"].keys())
        d["extrapolation"] = None if not d.get("extrapolation") else ExtrapolationError.from_dict(d["extrapolation"])
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
        """Read a fit JSON; every problem is one ValueError (FileNotFoundError) line naming the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"fit result {path} does not exist")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"fit result {path} is not valid JSON ({e}); was it cut short? refit to rewrite it") from None
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"fit result {path}: {e}") from None

    @property
    def versioned_law(self) -> str:
        """"kaplan v1"; an ensemble, whose version lists its laws' ("kaplan@1+schedule@1"), in brackets."""
        return f"{self.law} ({self.law_version})" if self.law_obj.members else f"{self.law} v{self.law_version}"

    def __repr__(self) -> str:
        """One line: law, parameters, points, bootstrap size, convergence, calibration (not the samples)."""
        params = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        boot = 0 if self.samples is None else len(self.samples)
        cal = "" if self.extrapolation is None else (f", extrapolation error s0={self.extrapolation.s0:.3g} "
                                                     f"k={self.extrapolation.k:.3g}")
        return (f"FitResult({self.versioned_law}: {params}; {self.n_points} points, "
                f"{boot} bootstrap samples, {'converged' if self.converged else 'NOT converged'}, "
                f"{len(self.warnings)} warnings{cal})")

    def summary(self) -> str:
        """A few readable lines: estimate [interval] per parameter, objective and convergence."""
        lines = [f"{self.versioned_law}: {self.n_points} points, objective {self.objective:.6g}, "
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
