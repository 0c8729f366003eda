"""Scaling-law forms: what a law predicts and how it is parametrized for fitting.

Every law is a frozen `Law`: a name and version (recorded in fit results), a
citation, its natural parameters (`param_names`, e.g. E, A, B, alpha, beta),
the covariates it reads from the tidy table (e.g. ("N", "D")), the N counting
convention it expects, and the space it is fitted in. Fitting happens on
`theta` — positive scale parameters as their logarithm, exponents as they
are — with `bounds` and a default grid of starting points in that space.

The engine (`analysis.fitting`) only needs `Law.log_predict_grad`: log L̂ and
its Jacobian with respect to theta for many parameter sets at once
(theta_SxP, n data points -> (S, n) and (S, n, P)). The three Chinchilla-like
laws share one helper: log L̂ = logsumexp_j(u_j), each term u_j linear in theta
(the log-sum-exp form of Besiroglu et al. 2024, Sec. 2), which keeps the
objective smooth and the gradient exact.
"""
from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from scipy.signal import lfilter

# The isoFLOP helpers (Hoffmann et al. Approaches 1 and 2) belong to the law catalogue too.
from analysis.isoflop import IsoflopResult, isoflop_approach1, isoflop_approach2  # noqa: F401

ArrayLike = np.ndarray | float
Covariates = Mapping[str, np.ndarray]
# (theta_SxP, covariates, need_grad) -> (logL_Sxn, dlogL_dtheta_SxnxP | None)
LogPredictFn = Callable[[np.ndarray, Covariates, bool], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class Law:
    name: str
    version: str
    citation: str
    formula: str
    param_names: tuple[str, ...]          # natural parameters, in the order of `theta`
    log_params: tuple[bool, ...]          # True: theta holds log(param) (a positive scale); False: the param itself
    bounds: tuple[tuple[float, float], ...]  # box bounds on theta (fitted space)
    start_grid: tuple[tuple[float, ...], ...]  # per theta entry, the values whose product is the default start grid
    covariates: tuple[str, ...]           # table columns the law reads
    n_convention: str                     # "total" or "non_embedding": which parameter count N means
    exponents: tuple[str, ...]            # params that are exponents (warned about when fitted at a bound)
    irreducible: str | None               # name of the irreducible-loss param (warned about when above the data)
    _log_predict_grad: LogPredictFn = field(repr=False, compare=False)

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @property
    def theta_names(self) -> tuple[str, ...]:
        """Names of the fitted coordinates, e.g. ("log_E", "log_A", ..., "alpha")."""
        return tuple(f"log_{p}" if lg else p for p, lg in zip(self.param_names, self.log_params))

    # ---- conversions between natural parameters and theta ----------
    def as_natural(self, params: Mapping[str, float] | np.ndarray | list) -> np.ndarray:
        """Natural parameters as an array, shape (P,) or (S, P), in `param_names` order."""
        if isinstance(params, Mapping):
            missing = [p for p in self.param_names if p not in params]
            if missing:
                raise ValueError(f"law {self.name!r}: missing parameters {missing}; expected {list(self.param_names)}")
            return np.array([float(params[p]) for p in self.param_names], dtype=np.float64)
        arr = np.asarray(params, dtype=np.float64)
        if arr.shape[-1] != self.n_params:
            raise ValueError(f"law {self.name!r}: parameter array has {arr.shape[-1]} entries, expected {self.n_params} {list(self.param_names)}")
        return arr

    def to_theta(self, params: Mapping[str, float] | np.ndarray) -> np.ndarray:
        nat = self.as_natural(params)
        mask = np.array(self.log_params)
        if np.any(nat[..., mask] <= 0):
            raise ValueError(f"law {self.name!r}: parameters {[p for p, m in zip(self.param_names, mask) if m]} must be positive")
        return np.where(mask, np.log(np.where(mask, nat, 1.0)), nat)

    def to_natural(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        return np.where(np.array(self.log_params), np.exp(theta), theta)

    def params_dict(self, theta: np.ndarray) -> dict[str, float]:
        return {p: float(v) for p, v in zip(self.param_names, self.to_natural(theta))}

    def default_starts(self) -> np.ndarray:
        """The default start grid in theta space, shape (G, P)."""
        return np.array(list(itertools.product(*self.start_grid)), dtype=np.float64)

    # ---- evaluation --------------------------------------------------
    def covariate_arrays(self, covariates: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
        """The law's covariates as equal-length float arrays; M (tokens per parameter) may come as N and D."""
        if "M" in self.covariates and "M" not in covariates and "N" in covariates and "D" in covariates:
            covariates = {**covariates, "M": np.asarray(covariates["D"], float) / np.asarray(covariates["N"], float)}
        missing = [c for c in self.covariates if c not in covariates]
        if missing:
            raise ValueError(f"law {self.name!r} needs covariates {list(self.covariates)}; missing {missing}")
        arrays = np.broadcast_arrays(*[np.atleast_1d(np.asarray(covariates[c], dtype=np.float64)) for c in self.covariates])
        return {c: a.ravel() for c, a in zip(self.covariates, arrays)}

    def log_predict_grad(self, theta_SxP: np.ndarray, covariates: Covariates, need_grad: bool = True):
        """log L̂ for S parameter sets (theta space) at n points: (S, n), and d/dtheta (S, n, P)."""
        return self._log_predict_grad(np.atleast_2d(theta_SxP), covariates, need_grad)

    def log_predict(self, params, **covariates: ArrayLike) -> np.ndarray:
        """log L̂ from natural parameters: (P,) -> (n,), (S, P) -> (S, n)."""
        nat = self.as_natural(params)
        theta_SxP = np.atleast_2d(self.to_theta(nat))
        out_Sxn, _ = self._log_predict_grad(theta_SxP, self.covariate_arrays(covariates), False)
        return out_Sxn[0] if nat.ndim == 1 else out_Sxn

    def predict(self, params, **covariates: ArrayLike) -> np.ndarray:
        """Predicted loss from natural parameters (dict or array): (P,) -> (n,), (S, P) -> (S, n)."""
        return np.exp(self.log_predict(params, **covariates))


# ---------------------------------------------------------------------
# log-sum-exp laws: log L̂ = logsumexp_j(u_j), u_j = sum_p K[n, j, p] theta_p + k0[n, j]


def _lse_law(design: Callable[[Covariates], tuple[np.ndarray, np.ndarray]]) -> LogPredictFn:
    def fn(theta_SxP: np.ndarray, cov: Covariates, need_grad: bool):
        K_nxJxP, k0_nxJ = design(cov)
        n, J, P = K_nxJxP.shape
        # K is sparse (each theta enters one or two terms): work with its nonzero (j, p) pairs
        # as (S, n) arrays. Elementwise numpy beats a (S, P) @ (P, n) product here: P is ~5,
        # and BLAS threading overhead dominates such thin products.
        nz = [[p for p in range(P) if np.any(K_nxJxP[:, j, p])] for j in range(J)]
        u = []
        for j in range(J):
            u_j = np.broadcast_to(k0_nxJ[:, j], (len(theta_SxP), n)).copy()
            for p in nz[j]:
                u_j += theta_SxP[:, p, None] * K_nxJxP[:, j, p]
            u.append(u_j)
        # log-sum-exp by hand (scipy.special.logsumexp's array-API dispatch costs more than the
        # arithmetic at these sizes, and fits call this thousands of times)
        m_Sxn = np.maximum.reduce(u) if J > 1 else u[0]
        logL_Sxn = m_Sxn + np.log(sum(np.exp(u_j - m_Sxn) for u_j in u))
        if not need_grad:
            return logL_Sxn, None
        w = [np.exp(u_j - logL_Sxn) for u_j in u]                 # softmax over the terms
        # d logL / d theta_p = sum_j softmax_j * K[n, j, p]
        J_SxPxn = np.zeros((len(theta_SxP), P, n))
        for j in range(J):
            for p in nz[j]:
                J_SxPxn[:, p, :] += w[j] * K_nxJxP[:, j, p]
        return logL_Sxn, np.swapaxes(J_SxPxn, 1, 2)               # (S, n, P) view of contiguous (S, P, n)
    return fn


def _chinchilla_design(cov: Covariates):
    # theta = (e, a, b, alpha, beta); terms e, a - alpha log N, b - beta log D
    lnN, lnD = np.log(cov["N"]), np.log(cov["D"])
    n = lnN.size
    K = np.zeros((n, 3, 5))
    K[:, 0, 0] = 1.0
    K[:, 1, 1] = 1.0
    K[:, 1, 3] = -lnN
    K[:, 2, 2] = 1.0
    K[:, 2, 4] = -lnD
    return K, np.zeros((n, 3))


def _compute_design(cov: Covariates):
    # theta = (e, a, gamma); terms e, a - gamma log C
    lnC = np.log(cov["C"])
    n = lnC.size
    K = np.zeros((n, 2, 3))
    K[:, 0, 0] = 1.0
    K[:, 1, 1] = 1.0
    K[:, 1, 2] = -lnC
    return K, np.zeros((n, 2))


def _overtrain_design(cov: Covariates):
    # theta = (e, log a, log b, eta); terms e, log a + eta (log M - log C), log b - eta (log M + log C)
    lnC, lnM = np.log(cov["C"]), np.log(cov["M"])
    n = lnC.size
    K = np.zeros((n, 3, 4))
    K[:, 0, 0] = 1.0
    K[:, 1, 1] = 1.0
    K[:, 1, 3] = lnM - lnC
    K[:, 2, 2] = 1.0
    K[:, 2, 3] = -lnM - lnC
    return K, np.zeros((n, 3))


def _kaplan_log_predict(theta_SxP: np.ndarray, cov: Covariates, need_grad: bool):
    # L = [(Nc/N)^(aN/aD) + Dc/D]^aD  (Kaplan et al. 2020, Eq. 1.5)
    # log L = aD * g,  g = logsumexp(u1, u2),  u1 = (aN/aD)(ln Nc - ln N),  u2 = ln Dc - ln D
    lnN, lnD = np.log(cov["N"]), np.log(cov["D"])
    lnNc, lnDc, aN, aD = (theta_SxP[:, i, None] for i in range(4))
    x1 = lnNc - lnN
    u1 = (aN / aD) * x1
    u2 = lnDc - lnD
    g = np.logaddexp(u1, u2)
    logL = aD * g
    if not need_grad:
        return logL, None
    s1 = np.exp(u1 - g)
    s2 = np.exp(u2 - g)
    grad = np.stack([aN * s1, aD * s2, s1 * x1, g - s1 * u1], axis=-1)
    return logL, grad


def _schedule_log_predict(theta_SxP: np.ndarray, cov: Covariates, need_grad: bool):
    # L = E + A_N N^-alpha_N + A S1^-alpha - C S2  (Tissue et al. 2024 Eq. 1, plus a model-size term)
    lnN, lnS1, S2 = np.log(cov["N"]), np.log(cov["S1"]), cov["S2"]
    lnE, lnAN, aN, lnA, a, lnCc = (theta_SxP[:, i, None] for i in range(6))
    tE = np.exp(lnE) + 0.0 * lnN
    tN = np.exp(lnAN - aN * lnN)
    tS = np.exp(lnA - a * lnS1)
    tC = np.exp(lnCc) * S2
    L = tE + tN + tS - tC
    # A parameter set that predicts a non-positive loss is infeasible; the floor keeps
    # the log finite so the objective there is merely very large.
    L_safe = np.maximum(L, 1e-12)
    logL = np.log(L_safe)
    if not need_grad:
        return logL, None
    grad = np.stack([tE, tN, -lnN * tN, tS, -lnS1 * tS, -tC], axis=-1) / L_safe[..., None]
    return logL, grad


def _kaplan_schedule_log_predict(theta_SxP: np.ndarray, cov: Covariates, need_grad: bool):
    # L = [(Nc/N)^(aN/aS) + Sc/S1]^aS - C S2: Kaplan et al. 2020 Eq. 1.5 with the tokens D replaced
    # by the forward area S1 and Tissue et al. 2024's annealing term -C S2 (their Eq. 1).
    lnN, lnS1, S2 = np.log(cov["N"]), np.log(cov["S1"]), cov["S2"]
    lnNc, lnSc, aN, aS, lnCc = (theta_SxP[:, i, None] for i in range(5))
    x1 = lnNc - lnN
    u1 = (aN / aS) * x1
    u2 = lnSc - lnS1
    g = np.logaddexp(u1, u2)
    P = np.exp(aS * g)
    tC = np.exp(lnCc) * S2
    L = P - tC
    # a non-positive loss is infeasible; the floor keeps the log finite (the objective there is merely large)
    L_safe = np.maximum(L, 1e-12)
    logL = np.log(L_safe)
    if not need_grad:
        return logL, None
    s1 = np.exp(u1 - g)
    s2 = np.exp(u2 - g)
    grad = np.stack([P * aN * s1, P * aS * s2, P * s1 * x1, P * (g - s1 * u1), -tC], axis=-1) / L_safe[..., None]
    return logL, grad


def _grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.linspace(lo, hi, n))


CHINCHILLA = Law(
    name="chinchilla",
    version="1",
    citation="Hoffmann et al. 2022 (Eq. 2, Approach 3); fitted as in Besiroglu et al. 2024, 'Chinchilla Scaling: A replication attempt'",
    formula="L = E + A / N^alpha + B / D^beta",
    param_names=("E", "A", "B", "alpha", "beta"),
    log_params=(True, True, True, False, False),
    bounds=((-5.0, 5.0), (-10.0, 60.0), (-10.0, 60.0), (0.0, 3.0), (0.0, 3.0)),
    # Hoffmann et al. 2022, Appendix D.2: e in {-1, -.5, ..., 1}, a, b in {0, 5, ..., 25},
    # alpha, beta in {0, 0.5, ..., 2}: 4,500 starts.
    start_grid=(_grid(-1, 1, 5), _grid(0, 25, 6), _grid(0, 25, 6), _grid(0, 2, 5), _grid(0, 2, 5)),
    covariates=("N", "D"),
    n_convention="total",
    exponents=("alpha", "beta"),
    irreducible="E",
    _log_predict_grad=_lse_law(_chinchilla_design),
)

KAPLAN = Law(
    name="kaplan",
    version="1",
    citation="Kaplan et al. 2020, 'Scaling Laws for Neural Language Models', Eq. 1.5",
    formula="L = [(Nc / N)^(alpha_N / alpha_D) + Dc / D]^alpha_D",
    param_names=("Nc", "Dc", "alpha_N", "alpha_D"),
    log_params=(True, True, False, False),
    bounds=((-10.0, 80.0), (-10.0, 80.0), (1e-3, 3.0), (1e-3, 3.0)),
    start_grid=(_grid(10, 50, 9), _grid(10, 50, 9), _grid(0.05, 1.0, 6), _grid(0.05, 1.0, 6)),
    covariates=("N", "D"),
    n_convention="non_embedding",
    exponents=("alpha_N", "alpha_D"),
    irreducible=None,
    _log_predict_grad=_kaplan_log_predict,
)

COMPUTE = Law(
    name="compute",
    version="1",
    citation="compute frontier L(C) = E + A C^-gamma (Kaplan et al. 2020 Eq. 1.4 with an irreducible term, as in Hoffmann et al. 2022 Sec. 3)",
    formula="L = E + A * C^-gamma",
    param_names=("E", "A", "gamma"),
    log_params=(True, True, False),
    bounds=((-5.0, 5.0), (-10.0, 60.0), (0.0, 3.0)),
    start_grid=(_grid(-1, 1, 9), _grid(0, 30, 16), _grid(0.0, 1.0, 21)),
    covariates=("C",),
    n_convention="total",
    exponents=("gamma",),
    irreducible="E",
    _log_predict_grad=_lse_law(_compute_design),
)

OVERTRAIN = Law(
    name="overtrain",
    version="1",
    # Gadre et al. 2024 Sec. 2.1: the Chinchilla form with equal exponents, rewritten with C = 6ND
    # and the token multiplier M = D/N (N = sqrt(C/6M), D = sqrt(CM/6), so their eta is half the
    # shared exponent, a = A 6^eta, b = B 6^eta).
    citation="Gadre et al. 2024, 'Language models scale reliably with over-training and on downstream tasks', Sec. 2.1",
    formula="L = E + (a * M^eta + b * M^-eta) * C^-eta,  M = D / N",
    param_names=("E", "a", "b", "eta"),
    log_params=(True, True, True, False),
    bounds=((-5.0, 5.0), (-20.0, 60.0), (-20.0, 60.0), (0.0, 2.0)),
    start_grid=(_grid(-1, 1, 5), _grid(0, 25, 6), _grid(0, 25, 6), _grid(0.0, 0.6, 7)),
    covariates=("C", "M"),
    n_convention="total",
    exponents=("eta",),
    irreducible="E",
    _log_predict_grad=_lse_law(_overtrain_design),
)

SCHEDULE = Law(
    name="schedule",
    version="1",
    # Tissue et al. 2024, 'Scaling Law with Learning Rate Annealing', Eq. 1: L(s) = L0 + A S1^-alpha - C S2.
    # Extension here: L0 = E + A_N N^-alpha_N so runs of several sizes share one fit; S1 and S2 come
    # from `schedule_features` (lr normalized by the peak, optionally times tokens per step).
    citation="Tissue et al. 2024, 'Scaling Law with Learning Rate Annealing', Eq. 1, extended with a model-size term E + A_N N^-alpha_N",
    formula="L = E + A_N * N^-alpha_N + A * S1^-alpha - C * S2",
    param_names=("E", "A_N", "alpha_N", "A", "alpha", "C"),
    log_params=(True, True, False, True, False, True),
    bounds=((-5.0, 5.0), (-10.0, 60.0), (0.0, 3.0), (-10.0, 60.0), (0.0, 3.0), (-60.0, 10.0)),
    start_grid=(_grid(-1, 1, 5), _grid(0, 20, 5), _grid(0.1, 1.0, 4), _grid(0, 20, 5), _grid(0.1, 1.0, 4), _grid(-30, 0, 7)),
    covariates=("N", "S1", "S2"),
    n_convention="total",
    exponents=("alpha_N", "alpha"),
    irreducible="E",
    _log_predict_grad=_schedule_log_predict,
)

KAPLAN_SCHEDULE = Law(
    name="kaplan-schedule",
    version="1",
    # Kaplan's joint form (Eq. 1.5), so a small model saturates in data sooner than a large one, read
    # in Tissue et al.'s schedule features instead of D: S1 is D under a constant lr, and -C S2 is the
    # gain from annealing. Fitted on every eval point of every run, it sees how the final loss of a
    # run depends on its schedule's length, which a law of final losses in D cannot.
    citation="Kaplan et al. 2020 Eq. 1.5 with D replaced by the forward area S1, plus the annealing term of "
             "Tissue et al. 2024 Eq. 1",
    formula="L = [(Nc / N)^(alpha_N / alpha_S) + Sc / S1]^alpha_S - C * S2",
    param_names=("Nc", "Sc", "alpha_N", "alpha_S", "C"),
    log_params=(True, True, False, False, True),
    bounds=((-10.0, 80.0), (-10.0, 80.0), (1e-3, 3.0), (1e-3, 3.0), (-60.0, 10.0)),
    start_grid=(_grid(10, 50, 5), _grid(5, 25, 5), _grid(0.05, 0.8, 4), _grid(0.05, 0.8, 4), _grid(-30, -5, 6)),
    covariates=("N", "S1", "S2"),
    n_convention="non_embedding",
    exponents=("alpha_N", "alpha_S"),
    irreducible=None,
    _log_predict_grad=_kaplan_schedule_log_predict,
)

LAWS: dict[str, Law] = {law.name: law for law in (CHINCHILLA, KAPLAN, COMPUTE, OVERTRAIN, SCHEDULE, KAPLAN_SCHEDULE)}


def get_law(name: str | Law) -> Law:
    if isinstance(name, Law):
        return name
    try:
        return LAWS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), LAWS, n=1)
        raise ValueError(f"unknown law {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                         f"known laws: {sorted(LAWS)}") from None


# ---------------------------------------------------------------------
# Learning-rate schedule features for the `schedule` law


def schedule_features(lr_curve: np.ndarray, steps: np.ndarray | int, decay: float = 0.999, *,
                      tokens_per_step: float = 1.0, peak: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Forward area S1 and annealing area S2 of a learning-rate curve at the given steps.

    `lr_curve[i - 1]` is the learning rate used for step i (as `train.schedules.lr_curve`
    returns it); `steps` are step counts (1..len(lr_curve)). Following Tissue et al. 2024
    (Eqs. 1-3):

        S1(s) = sum_{i<=s} eta_i
        m_i   = decay * m_{i-1} + (eta_{i-1} - eta_i)
        S2(s) = sum_{i<=s} m_i  = sum_{i<=s} sum_{k<=i} (eta_{k-1} - eta_k) decay^(i-k)

    Warmup is not annealing: the paper fits curves after warmup, so here eta_{k-1} - eta_k
    is counted only from the step where the learning rate first reaches its peak.

    Units: the learning rate is divided by `peak` (default: the curve's maximum) and each
    step counts `tokens_per_step`, so S1 is "peak-lr-equivalent tokens" (equal to D under a
    constant lr) and runs with different peak lr or batch size land on one axis.
    """
    eta = np.asarray(lr_curve, dtype=np.float64)
    if eta.ndim != 1 or eta.size == 0:
        raise ValueError("lr_curve must be a non-empty 1-D array (the lr used at steps 1..T)")
    if not np.all(np.isfinite(eta)) or np.any(eta < 0):
        raise ValueError("lr_curve must be finite and non-negative")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must lie in [0, 1), got {decay}")
    peak = float(eta.max()) if peak is None else float(peak)
    if peak <= 0:
        raise ValueError("lr_curve peak must be positive")
    s = np.atleast_1d(np.asarray(steps))
    if np.any(s < 1) or np.any(s > eta.size) or np.any(s != np.round(s)):
        raise ValueError(f"steps must be integers in [1, {eta.size}]")
    eta = eta / peak
    drop = np.zeros_like(eta)
    drop[1:] = eta[:-1] - eta[1:]
    drop[: int(np.argmax(eta)) + 1] = 0.0     # no annealing credit before the peak (warmup)
    # m_i = decay * m_{i-1} + drop_i: a first-order linear filter; scipy.signal.lfilter runs it in C.
    m = lfilter([1.0], [1.0, -decay], drop)
    S1 = np.cumsum(eta) * tokens_per_step
    S2 = np.cumsum(m) * tokens_per_step
    idx = s.astype(int) - 1
    return S1[idx], S2[idx]
