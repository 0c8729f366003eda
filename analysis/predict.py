"""Forecasts from a fitted law, each with an interval.

- `forecast(result, at)`: THE forecast behind `testbed predict`, the report and the demo:
  the loss at a point (`at={"N": .., "D": ..}`), at compute C under the compute-optimal
  allocation (`at={"C": ..}`), or along a planned run's eval curve (`at=` its run config),
  with one interval rule: the calibrated interval when the fit carries a measured
  extrapolation error (`testbed fit --calibrate`), else the bootstrap band; a forecast
  that can have neither raises ValueError saying why. Arrays of points are forecast at once.
- `loss_at(result, N=..., D=...)` (or C=..., M=... for the laws that read them)
- `n_opt(result, C)`, `d_opt(result, C)`, `compute_optimal(result, C)`: the
  allocation minimizing the loss at compute C with D = C / (k N) (k = 6 by
  default, the 6N convention; pass the FLOPs per parameter per token of your
  convention); each law owns its closed form (`Law.n_opt`).
- `tokens_to_reach(result, target, N)`: D with L(N, D) = target (error if the
  target is at or below what N can reach with infinite data).

These return a `Prediction`: point (from the fitted parameters), lower and upper
(central percentile band over the bootstrap parameter sets; NaN when the fit has no
samples).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from analysis.calibrate import stored_interval
from analysis.fitresult import FitResult, percentile_band


@dataclass(frozen=True)
class Prediction:
    quantity: str
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float | None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def __array__(self, dtype=None, copy=None):
        """In numeric code a prediction stands for its point estimate."""
        return np.asarray(self.point, dtype=dtype)

    def as_dict(self) -> dict:
        f = lambda a: np.asarray(a, dtype=float).tolist()  # noqa: E731
        return {"quantity": self.quantity, "point": f(self.point), "lower": f(self.lower), "upper": f(self.upper),
                "level": self.level, "note": self.note, **{k: f(v) for k, v in self.extra.items()}}


def _with_band(result: FitResult, fn, level: float, quantity: str, note: str = "") -> Prediction:
    """Apply fn(params_SxP) -> (S, n) to the point estimate and to every bootstrap sample."""
    law = result.law_obj
    # a bootstrap set with an exponent at its bound (e.g. beta = 0) has no finite optimum: its inf or
    # NaN is counted by `percentile_band` (as +inf), so numpy's warnings about it say nothing more
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        point = fn(law.as_natural(result.params)[None, :])[0]
        samples = None if result.samples is None or len(result.samples) == 0 else fn(result.samples)
    if samples is None:
        nan = np.full_like(point, np.nan, dtype=float)
        return Prediction(quantity, point, nan, nan, None, note)
    lo, hi = percentile_band(samples, level)
    return Prediction(quantity, point, lo, hi, level, note)


# ---------------------------------------------------------------------
# loss at given covariates, the compute-optimal allocation, tokens to a target


def loss_at(result: FitResult, level: float = 0.9, *, flops_per_param_token: float = 6.0, **covariates) -> Prediction:
    """Loss at the given covariates (N, D for chinchilla/kaplan; C for compute; N, D or C, M for overtrain).

    A law of C given N and D gets C = k N D (k = flops_per_param_token, 6 by default).
    """
    law = result.law_obj
    arrays = law.covariate_arrays(covariates, flops_per_param_token)
    return _with_band(result, lambda P: law.predict(P, **arrays), level, "loss")


def n_opt(result: FitResult, C, *, flops_per_param_token: float = 6.0, level: float = 0.9) -> Prediction:
    """Compute-optimal model size at compute C (array ok), with D = C / (k N)."""
    law = result.law_obj
    return _with_band(result, lambda P: law.n_opt(P, C, flops_per_param_token), level, "N_opt")


def d_opt(result: FitResult, C, *, flops_per_param_token: float = 6.0, level: float = 0.9) -> Prediction:
    """Compute-optimal token count at compute C: D_opt = C / (k N_opt)."""
    law = result.law_obj
    Cn = np.atleast_1d(np.asarray(C, dtype=np.float64))
    k = flops_per_param_token
    return _with_band(result, lambda P: Cn / (k * law.n_opt(P, Cn, k)), level, "D_opt")


def loss_at_compute(result: FitResult, C, *, flops_per_param_token: float = 6.0, level: float = 0.9) -> Prediction:
    """Loss at compute C under the compute-optimal allocation (or the frontier itself for `compute`)."""
    law = result.law_obj
    Cn = np.atleast_1d(np.asarray(C, dtype=np.float64))
    k = flops_per_param_token
    if law.covariates == ("C",):
        return _with_band(result, lambda P: law.predict(P, C=Cn), level, "loss")

    def fn(P):
        N = law.n_opt(P, Cn, k)                    # (S, n): each parameter set at its own optimum
        D = Cn / (k * N)
        return law.loss(P, N=N, D=D, C=k * N * D)
    return _with_band(result, fn, level, "loss", note=f"compute-optimal allocation, D = C / ({k:g} N)")


@dataclass(frozen=True)
class Allocation:
    C: np.ndarray
    N_opt: Prediction
    D_opt: Prediction
    loss: Prediction
    tokens_per_param: np.ndarray


def compute_optimal(result: FitResult, C, *, flops_per_param_token: float = 6.0, level: float = 0.9) -> Allocation:
    """N_opt, D_opt and the loss at compute C, each with a band, plus the point tokens-per-parameter ratio."""
    kw = dict(flops_per_param_token=flops_per_param_token, level=level)
    N = n_opt(result, C, **kw)
    D = d_opt(result, C, **kw)
    return Allocation(np.atleast_1d(np.asarray(C, float)), N, D, loss_at_compute(result, C, **kw), D.point / N.point)


def tokens_to_reach(result: FitResult, target: float, N, *, level: float = 0.9) -> Prediction:
    """Tokens D a model of size N needs to reach `target` loss.

    Raises ValueError when the fitted law says N cannot reach it even with infinite data.
    Bootstrap samples that cannot reach it count as infinitely many tokens in the band.
    """
    law = result.law_obj
    if not (np.isfinite(target) and target > 0):
        raise ValueError(f"target loss must be a positive number, got {target}")
    pred = _with_band(result, lambda P: law.tokens_to_reach(P, target, N), level, "D")
    if np.any(np.isnan(pred.point)):
        Ns = np.atleast_1d(np.asarray(N, float))
        floor = law.loss(result.params, N=Ns, D=np.full_like(Ns, np.inf))[0]
        raise ValueError(f"target loss {target} is unreachable at N = {Ns.tolist()} (the fitted law's "
                         f"infinite-data loss there is {floor.tolist()})")
    return pred


# ---------------------------------------------------------------------
# the forecast


@dataclass(frozen=True)
class Forecast:
    """A forecast at one or more points (or along a planned run's eval steps), with its interval.

    `lower`/`upper` is the headline interval, of kind `interval`: "calibrated" (bootstrap
    spread, run scatter and the extrapolation error measured on the fitted runs;
    `analysis.calibrate`) or "bootstrap" (the parameter band alone); the bootstrap band is
    always kept too. `shown` is False at eval points before the fewest tokens the law was
    fitted on (the law says nothing there).
    """
    law: str
    level: float
    loss: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    interval: str
    bootstrap_lower: np.ndarray
    bootstrap_upper: np.ndarray
    inputs: dict[str, np.ndarray]                  # what was asked: N and D, or C
    derived: dict[str, np.ndarray]                 # N and D of the allocation at C, or of a planned run
    extrapolation: np.ndarray | None = None        # C / C_fit (calibrated only)
    sigma: np.ndarray | None = None                # total std of the log forecast (calibrated only)
    parts: dict[str, np.ndarray] | None = None     # sigma's parts (calibrated only; analysis.calibrate.interval_parts)
    note: str = ""
    steps: np.ndarray | None = None                # a planned run's eval steps
    tokens: np.ndarray | None = None
    shown: np.ndarray | None = None

    def point(self, i: int = 0) -> dict[str, Any]:
        """Point i as `testbed predict --json` prints it."""
        out = {"loss": float(self.loss[i]), "lower": float(self.lower[i]), "upper": float(self.upper[i]),
               "interval": self.interval, **{k: float(v[i]) for k, v in self.derived.items()}}
        if self.extrapolation is not None:
            out.update(extrapolation=float(self.extrapolation[i]), sigma=float(self.sigma[i]),
                       **{f"sigma_{k}": float(v[i]) for k, v in self.parts.items()})
        return out

    def run(self) -> dict[str, Any]:
        """A planned run's forecast: its final point and its curve (None where not forecast)."""
        keep = self.shown

        def listed(a):
            return [float(v) if k and np.isfinite(v) else None for v, k in zip(a, keep)]

        extra = {} if self.extrapolation is None else {"extrapolation": float(self.extrapolation[-1]),
                                                      "sigma": float(self.sigma[-1]),
                                                      "sigma_parts": {k: float(v[-1]) for k, v in self.parts.items()}}
        return {"loss": float(self.loss[-1]), "lower": listed(self.lower)[-1], "upper": listed(self.upper)[-1],
                "interval": self.interval, "bootstrap_lower": listed(self.bootstrap_lower)[-1],
                "bootstrap_upper": listed(self.bootstrap_upper)[-1], "N": float(self.derived["N"][0]),
                "D": float(self.tokens[-1]), **extra, "note": self.note,
                "curve": {"steps": self.steps.tolist(), "tokens": self.tokens.tolist(), "loss": listed(self.loss),
                          "lower": listed(self.lower), "upper": listed(self.upper)}}


def forecast(result: FitResult, at, *, level: float = 0.9) -> Forecast:
    """The forecast at `at`: {"N": .., "D": ..}, {"C": ..} (arrays allowed) or a planned run's config.

    A planned run (a `train.config.RunConfig` or its dict) is forecast at its eval steps,
    with N under the fit's convention and S1/S2 from its lr schedule
    (`analysis.schedule.run_schedule_features`, as the fit's table had them); its distance
    C / C_fit counts FLOPs as the fitted runs did. At compute C the allocation is each
    parameter set's own optimum (`compute_optimal`), and the derived N and D are returned.

    Raises ValueError when the question does not fit the law (a law of the lr schedule
    asked at N and D) or when no interval can be given (no bootstrap samples and no
    measured error; or an interval of zero width, calibrated or bootstrap, which a design
    with no more runs than parameters, or runs without noise, gives).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if _is_run_config(at):
        return _forecast_run(result, at, level)
    if not isinstance(at, Mapping):
        raise ValueError(f"forecast at must be {{'N': .., 'D': ..}}, {{'C': ..}} or a run config, got {type(at).__name__}")
    law = result.law_obj
    given = {k: np.atleast_1d(np.asarray(v, float)) for k, v in at.items() if v is not None}
    for k, v in given.items():
        if k not in ("N", "D", "C"):
            raise ValueError(f"unknown forecast input {k!r}: give N and D, or C")
        if not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"{k} must be a positive number, got {v.tolist() if v.size > 1 else float(v[0])}")
    if "S1" in law.covariates:
        raise ValueError(f"the {result.law} law reads the planned run's lr schedule, not N and D alone: "
                         "use --run CONFIG [key=value ...] (a planned run's config)")
    derived: dict[str, np.ndarray] = {}
    if set(given) == {"N", "D"}:
        pred = loss_at(result, level=level, N=given["N"], D=given["D"])
        cov = {"N": given["N"], "D": given["D"]}
    elif set(given) == {"C"}:
        if tuple(law.covariates) == ("C",):
            pred = loss_at_compute(result, given["C"], level=level)
            cov = {"C": given["C"]}
        else:
            alloc = compute_optimal(result, given["C"], level=level)
            pred = alloc.loss
            derived = {"N": np.asarray(alloc.N_opt.point, float), "D": np.asarray(alloc.D_opt.point, float)}
            cov = dict(derived)
    else:
        raise ValueError("give N and D (loss at a model size and token count) or C alone "
                         "(loss at the compute-optimal allocation)")
    lo, hi, kind, extra = _interval(result, np.asarray(pred.point, float), pred.lower, pred.upper, level, cov)
    return Forecast(result.law, level, np.asarray(pred.point, float), lo, hi, kind, np.asarray(pred.lower, float),
                    np.asarray(pred.upper, float), given, derived, **extra)


def _interval(result, point, b_lo, b_hi, level, cov, model=None, tokens=None, check=slice(None)):
    """The one interval rule: calibrated when the fit stores an extrapolation error, else the bootstrap band.

    `check`: the points whose band must exist (a run's final point; every point asked about).
    """
    b_lo, b_hi = np.asarray(b_lo, float), np.asarray(b_hi, float)
    calibrated = stored_interval(result, level=level, model=model, tokens=tokens, **cov)
    if calibrated is not None:
        lo, hi = np.asarray(calibrated.lower, float), np.asarray(calibrated.upper, float)
        if _zero_width(lo, hi, point, check):
            err = result.extrapolation
            raise ValueError(f"no interval: the {result.law} fit's measured extrapolation error is zero "
                             f"(run scatter s0 = {err.s0:.2g}, growth k = {err.k:.2g}) and its bootstrap band has "
                             "no width: the law passes through every run, so the data cannot say how uncertain "
                             "the forecast is")
        return lo, hi, "calibrated", {"extrapolation": calibrated.extrapolation, "sigma": calibrated.sigma,
                                      "parts": calibrated.parts}
    if not np.all(np.isfinite(b_lo[check]) & np.isfinite(b_hi[check])):
        raise ValueError(f"no interval: the {result.law} fit has no bootstrap samples and no measured extrapolation "
                         "error; refit with --bootstrap B (B >= 200; in Python, fit(..., bootstrap=B)) or --calibrate")
    if _zero_width(b_lo, b_hi, point, check):
        raise ValueError(f"no interval: every bootstrap refit of the {result.law} fit gives the same forecast "
                         f"({result.n_points} points, {result.inputs.get('n_runs', '?')} runs for "
                         f"{len(result.params)} parameters); the data cannot say how uncertain it is")
    return b_lo, b_hi, "bootstrap", {}


def _zero_width(lo: np.ndarray, hi: np.ndarray, point: np.ndarray, check) -> bool:
    """A band narrower than a millionth of the loss is rounding, not uncertainty: refits that all pass
    through every point (no more rows or runs than parameters), or data without noise."""
    return bool(np.any(hi[check] - lo[check] <= 1e-6 * np.abs(point[check])))


def _is_run_config(at) -> bool:
    from train.config import RunConfig
    return isinstance(at, RunConfig) or (isinstance(at, Mapping) and "model" in at)


def run_covariates(result: FitResult, config) -> tuple[dict[str, np.ndarray], np.ndarray, int, str, Any]:
    """(covariates, eval steps, tokens per step, note, resolved config) of a planned run, for `result`'s law.

    N is the model's parameter count under the fit's N convention (`models.counting`,
    torch-free); the steps are the trainer's eval points (`train.contract.eval_steps`).
    Laws of (N, S1, S2) read the run's schedule features; (N, D) laws read D = tokens
    seen at each step, a proxy that is only exact at the final step.
    """
    from analysis.schedule import run_schedule_features
    from models.counting import param_counts
    from train.config import RunConfig
    from train.contract import eval_steps

    cfg = (config if isinstance(config, RunConfig) else RunConfig.from_dict(dict(config))).resolved()
    law = result.law_obj
    counts = param_counts(cfg.model)
    conv = result.convention.get("N") or law.n_convention
    if conv not in counts:
        raise ValueError(f"the fit's N convention {conv!r} is not one of {sorted(counts)}")
    steps = np.asarray(eval_steps(cfg.steps, cfg.eval.points), dtype=int)
    tokens_per_step = cfg.train.batch_tokens
    N = np.full(steps.shape, float(counts[conv]))
    if law.covariates == ("N", "S1", "S2"):
        S1, S2 = run_schedule_features(cfg, steps)
        return {"N": N, "S1": S1, "S2": S2}, steps, tokens_per_step, f"{law.name} law: S1/S2 from the planned lr curve", cfg
    if law.covariates == ("N", "D"):
        return ({"N": N, "D": steps.astype(float) * tokens_per_step}, steps, tokens_per_step,
                f"{law.name}: D = tokens seen at each step (a final-loss law read along the curve; "
                "only the last point is what the law describes)", cfg)
    raise ValueError(f"a planned run's curve needs a law of (N, S1, S2) or of (N, D), not {law.name!r}")


def _forecast_run(result: FitResult, config, level: float) -> Forecast:
    cov, steps, tokens_per_step, note, cfg = run_covariates(result, config)
    tokens = steps * tokens_per_step
    d_min = (result.inputs.get("ranges") or {}).get("D", [0.0])[0]
    if tokens[-1] < d_min:
        raise ValueError(f"the planned run ends at {tokens[-1]:,.0f} tokens, before the fewest the {result.law} law "
                         f"was fitted on ({d_min:,.0f}): the law says nothing there")
    point = np.asarray(result.predict(**cov), float)
    if result.samples is not None and len(result.samples):
        b_lo, b_hi = percentile_band(np.asarray(result.predict_samples(**cov), float), level)
    else:
        b_lo = b_hi = np.full_like(point, np.nan)
    lo, hi, kind, extra = _interval(result, point, b_lo, b_hi, level, cov, model=cfg.model, tokens=tokens,
                                    check=slice(-1, None))
    shown = tokens >= d_min
    if not shown.all():
        note += f"; points before {d_min:,.0f} tokens (the fewest the law was fitted on) are not forecast"
    return Forecast(result.law, level, point, lo, hi, kind, b_lo, b_hi, {"run": cfg.run_id()},
                    {"N": cov["N"][:1]}, note=note, steps=steps, tokens=tokens, shown=shown,
                    **extra)
