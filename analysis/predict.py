"""Forecasts from a fitted law, each with a bootstrap interval.

- `loss_at(result, N=..., D=...)` (or C=..., M=... for the laws that read them)
- `n_opt(result, C)`, `d_opt(result, C)`, `compute_optimal(result, C)`: the
  allocation minimizing the loss at compute C with D = C / (k N) (k = 6 by
  default, the 6N convention; pass the FLOPs per parameter per token of your
  convention). Closed form for chinchilla (Hoffmann et al. 2022 Eq. 4):
  N_opt = G (C/k)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)).
- `tokens_to_reach(result, target, N)`: D with L(N, D) = target (error if the
  target is at or below what N can reach with infinite data, E + A / N^alpha).
- `predict_curve(result, ...)`: a whole loss curve of a planned run; for the
  `schedule` law from its lr schedule, for chinchilla/kaplan the curve that
  puts D = tokens seen at each step (a proxy: those laws describe the final
  loss of a run whose schedule was tuned to its length); `predict_run(result,
  run_config)` does the same from a planned run's config.

Every function returns a `Prediction`: point (from the fitted parameters),
lower and upper (central percentile band over the bootstrap parameter sets;
NaN when the fit has no samples).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.fitresult import FitResult, percentile_band
from analysis.laws import Law, schedule_features


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
    point = fn(law.as_natural(result.params)[None, :])[0]
    if result.samples is None or len(result.samples) == 0:
        nan = np.full_like(point, np.nan, dtype=float)
        return Prediction(quantity, point, nan, nan, None, note)
    lo, hi = percentile_band(fn(result.samples), level)
    return Prediction(quantity, point, lo, hi, level, note)


def _p(law: Law, params_SxP: np.ndarray, name: str) -> np.ndarray:
    return params_SxP[:, law.param_names.index(name), None]


# ---------------------------------------------------------------------
# loss at given covariates


def loss_at(result: FitResult, level: float = 0.9, *, flops_per_param_token: float = 6.0, **covariates) -> Prediction:
    """Loss at the given covariates (N, D for chinchilla/kaplan; C for compute; N, D or C, M for overtrain).

    A law of C given N and D gets C = k N D (k = flops_per_param_token, 6 by default).
    """
    law = result.law_obj
    cov = dict(covariates)
    if "C" in law.covariates and "C" not in cov and {"N", "D"} <= cov.keys():
        cov["C"] = flops_per_param_token * np.asarray(cov["N"], float) * np.asarray(cov["D"], float)
    arrays = law.covariate_arrays(cov)
    return _with_band(result, lambda P: law.predict(P, **arrays), level, "loss")


# ---------------------------------------------------------------------
# compute-optimal allocation


def _n_opt_params(law: Law, P: np.ndarray, C: np.ndarray, k: float) -> np.ndarray:
    """N_opt (S, n) for parameter sets P (S, P) at compute C (n,), with D = C / (k N)."""
    C = np.atleast_1d(np.asarray(C, dtype=np.float64))
    if law.name == "chinchilla":
        # dL/dN = 0 with D = C/(kN): alpha A N^-alpha = beta B D^-beta (Hoffmann et al. 2022 Eq. 4)
        A, B, a, b = (_p(law, P, n) for n in ("A", "B", "alpha", "beta"))
        G = (a * A / (b * B)) ** (1.0 / (a + b))
        return G * (C / k) ** (b / (a + b))
    if law.name == "overtrain":
        # (a M^eta + b M^-eta) is smallest at M* = (b/a)^(1/(2 eta)); N = sqrt(C / (k M*))
        a, b, eta = (_p(law, P, n) for n in ("a", "b", "eta"))
        M = (b / a) ** (1.0 / (2.0 * eta))
        return np.sqrt(C / (k * M))
    if law.name == "kaplan":
        return _n_opt_numeric(law, P, C, k)
    raise ValueError(f"law {law.name!r} has no compute-optimal allocation here (it needs N and D as covariates: "
                     "chinchilla, kaplan or overtrain)")


def _n_opt_numeric(law: Law, P: np.ndarray, C: np.ndarray, k: float) -> np.ndarray:
    """Minimize L(N, C/(kN)) over log N on a dense grid, then one parabolic refinement."""
    out = np.empty((len(P), C.size))
    for j, c in enumerate(C):
        # tokens per parameter from 1e-3 to 1e7 brackets every sensible optimum
        lnN = np.linspace(np.log(np.sqrt(c / k / 1e7)), np.log(np.sqrt(c / k / 1e-3)), 2001)
        N = np.exp(lnN)
        y = law.log_predict(P, N=N, D=c / (k * N))                   # (S, G)
        i = np.clip(np.argmin(y, axis=1), 1, lnN.size - 2)
        rows = np.arange(len(P))
        y0, y1, y2 = y[rows, i - 1], y[rows, i], y[rows, i + 1]
        denom = y0 - 2 * y1 + y2
        shift = np.where(denom > 0, 0.5 * (y0 - y2) / np.where(denom > 0, denom, 1.0), 0.0)
        out[:, j] = np.exp(lnN[i] + shift * (lnN[1] - lnN[0]))
    return out


def n_opt(result: FitResult, C, *, flops_per_param_token: float = 6.0, level: float = 0.9) -> Prediction:
    """Compute-optimal model size at compute C (array ok), with D = C / (k N)."""
    law = result.law_obj
    return _with_band(result, lambda P: _n_opt_params(law, P, C, flops_per_param_token), level, "N_opt")


def d_opt(result: FitResult, C, *, flops_per_param_token: float = 6.0, level: float = 0.9) -> Prediction:
    """Compute-optimal token count at compute C: D_opt = C / (k N_opt)."""
    law = result.law_obj
    Cn = np.atleast_1d(np.asarray(C, dtype=np.float64))
    k = flops_per_param_token
    return _with_band(result, lambda P: Cn / (k * _n_opt_params(law, P, Cn, k)), level, "D_opt")


def loss_at_compute(result: FitResult, C, *, flops_per_param_token: float = 6.0, level: float = 0.9) -> Prediction:
    """Loss at compute C under the compute-optimal allocation (or the frontier itself for `compute`)."""
    law = result.law_obj
    Cn = np.atleast_1d(np.asarray(C, dtype=np.float64))
    k = flops_per_param_token
    if law.covariates == ("C",):
        return _with_band(result, lambda P: law.predict(P, C=Cn), level, "loss")

    def fn(P):
        N = _n_opt_params(law, P, Cn, k)                    # (S, n): each parameter set at its own optimum
        return _loss_rowwise(law, P, N, Cn / (k * N), k)
    return _with_band(result, fn, level, "loss", note=f"compute-optimal allocation, D = C / ({k:g} N)")


def _loss_rowwise(law: Law, P: np.ndarray, N_Sxn: np.ndarray, D_Sxn: np.ndarray, k: float) -> np.ndarray:
    """L(N[s, i], D[s, i]) under parameter set P[s]: the closed forms, broadcast row by row."""
    if law.name == "chinchilla":
        E, A, B, a, b = (_p(law, P, n) for n in ("E", "A", "B", "alpha", "beta"))
        return E + A * N_Sxn ** -a + B * D_Sxn ** -b
    if law.name == "kaplan":
        Nc, Dc, aN, aD = (_p(law, P, n) for n in ("Nc", "Dc", "alpha_N", "alpha_D"))
        return ((Nc / N_Sxn) ** (aN / aD) + Dc / D_Sxn) ** aD
    if law.name == "overtrain":
        E, a, b, eta = (_p(law, P, n) for n in ("E", "a", "b", "eta"))
        M, C = D_Sxn / N_Sxn, k * N_Sxn * D_Sxn
        return E + (a * M ** eta + b * M ** -eta) * C ** -eta
    raise ValueError(f"law {law.name!r}: no row-wise loss")


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


# ---------------------------------------------------------------------
# tokens to reach a target loss


def _tokens_params(law: Law, P: np.ndarray, target: float, N: np.ndarray) -> np.ndarray:
    N = np.atleast_1d(np.asarray(N, dtype=np.float64))
    if law.name == "chinchilla":
        E, A, B, a, b = (_p(law, P, n) for n in ("E", "A", "B", "alpha", "beta"))
        gap = target - E - A * N ** -a           # what the data term must still supply
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, (B / np.where(gap > 0, gap, 1.0)) ** (1.0 / b), np.nan)
    if law.name == "kaplan":
        # L^(1/alpha_D) = (Nc/N)^(alpha_N/alpha_D) + Dc/D
        Nc, Dc, aN, aD = (_p(law, P, n) for n in ("Nc", "Dc", "alpha_N", "alpha_D"))
        gap = target ** (1.0 / aD) - (Nc / N) ** (aN / aD)
        return np.where(gap > 0, Dc / np.where(gap > 0, gap, 1.0), np.nan)
    raise ValueError(f"tokens_to_reach needs a law of N and D (chinchilla, kaplan), not {law.name!r}")


def tokens_to_reach(result: FitResult, target: float, N, *, level: float = 0.9) -> Prediction:
    """Tokens D a model of size N needs to reach `target` loss.

    Raises ValueError when the fitted law says N cannot reach it even with infinite data.
    Bootstrap samples that cannot reach it count as infinitely many tokens in the band.
    """
    law = result.law_obj
    if not (np.isfinite(target) and target > 0):
        raise ValueError(f"target loss must be a positive number, got {target}")
    pred = _with_band(result, lambda P: _tokens_params(law, P, target, N), level, "D")
    if np.any(np.isnan(pred.point)):
        Ns = np.atleast_1d(np.asarray(N, float))
        floor = law.predict(result.params, N=Ns, D=np.full_like(Ns, np.inf)) if law.name == "chinchilla" else None
        where = "" if floor is None else f" (the fitted law's infinite-data loss at N = {Ns.tolist()} is {floor.tolist()})"
        raise ValueError(f"target loss {target} is unreachable at N = {Ns.tolist()}{where}")
    return pred


# ---------------------------------------------------------------------
# whole curves of a planned run


def predict_curve(result: FitResult, *, N: float, steps, tokens_per_step: float, lr_curve=None,
                  decay: float = 0.999, level: float = 0.9) -> Prediction:
    """The predicted loss at each of `steps` for a run of size N.

    Laws of (N, S1, S2) (`schedule`, `kaplan-schedule`) need the run's per-step lr (`lr_curve[i-1]`
    is the lr at step i, as `train.schedules.lr_curve` gives it); S1, S2 as in
    `analysis.laws.schedule_features`, with the same tokens_per_step and decay the fit's table used.
    chinchilla / kaplan: D = steps * tokens_per_step at each step; a proxy labelled as such.
    """
    law = result.law_obj
    cov, note = curve_covariates(law, N=N, steps=steps, tokens_per_step=tokens_per_step, lr_curve=lr_curve,
                                 decay=decay)
    return _with_band(result, lambda P: law.predict(P, **cov), level, "loss", note=note)


def curve_covariates(law: Law | str, *, N: float, steps, tokens_per_step: float, lr_curve=None,
                     decay: float = 0.999) -> tuple[dict[str, np.ndarray], str]:
    """The covariates `law` reads at each of `steps` of a planned run of size N, and a note on them.

    (N, S1, S2) laws: S1/S2 from the run's lr curve (`analysis.laws.schedule_features`);
    (N, D) laws: D = tokens seen at each step, a proxy exact only at the final step.
    """
    from analysis.laws import get_law

    law = get_law(law)
    steps = np.atleast_1d(np.asarray(steps))
    Nv = np.full(steps.shape, float(N))
    if law.covariates == ("N", "S1", "S2"):
        if lr_curve is None:
            raise ValueError(f"the {law.name} law needs lr_curve: the learning rate of every step of the planned run")
        S1, S2 = schedule_features(np.asarray(lr_curve, float), steps, decay, tokens_per_step=tokens_per_step)
        return {"N": Nv, "S1": S1, "S2": S2}, f"{law.name} law: S1/S2 from the planned lr curve"
    if law.covariates == ("N", "D"):
        return ({"N": Nv, "D": steps.astype(float) * tokens_per_step},
                f"{law.name}: D = tokens seen at each step (a final-loss law read along the curve; "
                "only the last point is what the law describes)")
    raise ValueError(f"predict_curve supports laws of (N, S1, S2) and of (N, D), not {law.name!r}")


def predict_run(result: FitResult, config, *, steps=None, level: float = 0.9, decay: float = 0.999) -> Prediction:
    """The predicted eval curve of a planned run, from its run config (a RunConfig or its dict).

    N is the model's parameter count under the fit's N convention (`models.counting`,
    torch-free); steps default to the trainer's eval points (config.eval.points log-spaced
    steps plus the last); the lr curve comes from `train.schedules.lr_curve`. Laws of
    (N, S1, S2) use that lr curve; (N, D) laws read D = tokens seen at each step, a
    proxy that is only exact at the final step. `extra` carries steps, tokens and N.
    """
    cov, steps, tokens_per_step, note = run_covariates(result, config, steps=steps, decay=decay)
    law = result.law_obj
    pred = _with_band(result, lambda P: law.predict(P, **cov), level, "loss", note=note)
    extra = {"steps": steps, "tokens": steps * tokens_per_step, "N": cov["N"][:1]}
    return Prediction(pred.quantity, pred.point, pred.lower, pred.upper, pred.level, pred.note, extra)


def run_covariates(result: FitResult, config, *, steps=None, decay: float = 0.999):
    """(covariates, steps, tokens per step, note) of a planned run at `steps` (default: its eval steps)."""
    from models.counting import param_counts
    from train.config import RunConfig
    from train.contract import eval_steps
    from train.schedules import lr_curve

    cfg = (config if isinstance(config, RunConfig) else RunConfig.from_dict(dict(config))).resolved()
    counts = param_counts(cfg.model)
    conv = result.convention.get("N") or result.law_obj.n_convention
    if conv not in counts:
        raise ValueError(f"the fit's N convention {conv!r} is not one of {sorted(counts)}")
    total = cfg.steps
    if steps is None:
        # the trainer's eval rule: log-spaced from step 1, rounded and deduplicated, plus the final step
        steps = eval_steps(total, cfg.eval.points)
    steps = np.asarray(steps, dtype=int)
    if np.any(steps < 1) or np.any(steps > total):
        raise ValueError(f"steps must lie in [1, {total}] (the run's optimizer steps)")
    lr = lr_curve(total, cfg.optim.lr, cfg.schedule)
    cov, note = curve_covariates(result.law_obj, N=float(counts[conv]), steps=steps,
                                 tokens_per_step=cfg.train.batch_tokens, lr_curve=lr, decay=decay)
    return cov, steps, cfg.train.batch_tokens, note


def forecast_run(result: FitResult, config, *, level: float = 0.9) -> dict:
    """The forecast of a planned run (a RunConfig or its dict): its final loss and whole eval curve.

    The interval is calibrated (`analysis.calibrate`) when the fit carries an extrapolation
    error (`testbed fit --calibrate`, the demo's fit.json), each eval point at its own distance
    C / C_fit, with C in the FLOP convention the fitted runs recorded (6ND for tables without
    one); otherwise it is the bootstrap band, which is always returned too. Eval points before
    the fewest tokens the law was fitted on are None in the curve: the law says nothing there.

    Returns {"loss", "lower", "upper", "interval" ("calibrated" | "bootstrap" | None),
    "bootstrap_lower", "bootstrap_upper", "N", "D", "note", "curve": {"steps", "tokens",
    "loss", "lower", "upper"}} plus "extrapolation" and "sigma" (final step) when calibrated.
    """
    from analysis.calibrate import stored_interval
    from train.config import RunConfig

    cfg = (config if isinstance(config, RunConfig) else RunConfig.from_dict(dict(config))).resolved()
    cov, steps, tokens_per_step, note = run_covariates(result, cfg)
    tokens = steps * tokens_per_step
    point = np.asarray(result.predict(**cov), float)
    if result.samples is not None and len(result.samples):
        b_lo, b_hi = percentile_band(np.asarray(result.predict_samples(**cov), float), level)
        kind = "bootstrap"
    else:
        b_lo = b_hi = np.full_like(point, np.nan)
        kind = None
    lo, hi, extra = b_lo, b_hi, {}
    calibrated = stored_interval(result, level=level, model=cfg.model, tokens=tokens, **cov)
    if calibrated is not None:
        lo, hi, sigma, ext = calibrated
        kind, extra = "calibrated", {"extrapolation": float(ext[-1]), "sigma": float(sigma[-1])}
    d_min = (result.inputs.get("ranges") or {}).get("D", [0.0])[0]
    keep = tokens >= d_min
    if not keep.all():
        note += f"; points before {d_min:,.0f} tokens (the fewest the law was fitted on) are not forecast"

    def listed(a):
        return [float(v) if k and np.isfinite(v) else None for v, k in zip(a, keep)]

    return {"loss": float(point[-1]), "lower": listed(lo)[-1], "upper": listed(hi)[-1], "interval": kind,
            "bootstrap_lower": listed(b_lo)[-1], "bootstrap_upper": listed(b_hi)[-1],
            "N": float(cov["N"][0]), "D": float(tokens[-1]), **extra, "note": note,
            "curve": {"steps": steps.tolist(), "tokens": tokens.tolist(), "loss": listed(point),
                      "lower": listed(lo), "upper": listed(hi)}}
