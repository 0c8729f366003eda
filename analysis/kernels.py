"""Vectorized log-predictions with exact gradients: what the fitting engine evaluates.

Each law in `analysis.laws` is written plainly in natural units (its `form`). Fitting
evaluates it thousands of times for many parameter sets at once and needs the
gradient, so each law also has a kernel here: log L̂ and d log L̂ / d theta for
theta_SxP (S parameter sets, in the law's fitting space: log of positive scales,
exponents as they are) at n points -> (S, n) and (S, n, P). The tests check every
kernel against its plain form and against finite differences.

The three Chinchilla-like laws share one helper: log L̂ = logsumexp_j(u_j), each
term u_j linear in theta (the log-sum-exp form of Besiroglu et al. 2024, Sec. 2),
which keeps the objective smooth and the gradient exact.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

Covariates = Mapping[str, np.ndarray]
# (theta_SxP, covariates, need_grad) -> (logL_Sxn, dlogL_dtheta_SxnxP | None)
LogPredictFn = Callable[[np.ndarray, Covariates, bool], tuple[np.ndarray, np.ndarray | None]]


# ---------------------------------------------------------------------
# log-sum-exp laws: log L̂ = logsumexp_j(u_j), u_j = sum_p K[n, j, p] theta_p + k0[n, j]


def lse_law(design: Callable[[Covariates], tuple[np.ndarray, np.ndarray]]) -> LogPredictFn:
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


def chinchilla_design(cov: Covariates):
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


def compute_design(cov: Covariates):
    # theta = (e, a, gamma); terms e, a - gamma log C
    lnC = np.log(cov["C"])
    n = lnC.size
    K = np.zeros((n, 2, 3))
    K[:, 0, 0] = 1.0
    K[:, 1, 1] = 1.0
    K[:, 1, 2] = -lnC
    return K, np.zeros((n, 2))


def overtrain_design(cov: Covariates):
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


def kaplan_log_predict(theta_SxP: np.ndarray, cov: Covariates, need_grad: bool):
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


def schedule_log_predict(theta_SxP: np.ndarray, cov: Covariates, need_grad: bool):
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


def kaplan_schedule_log_predict(theta_SxP: np.ndarray, cov: Covariates, need_grad: bool):
    # L = K (1/S1 + B N^-a)^aS - C S2: Kaplan et al. 2020 Eq. 1.5 with the tokens D replaced by the
    # forward area S1 (K = Sc^aS, B = Nc^a / Sc, a = aN / aS) and Tissue et al. 2024's annealing term.
    # log P = ln K + aS g,  g = logsumexp(u1, u2),  u1 = ln B - a ln N,  u2 = -ln S1
    lnN, lnS1, S2 = np.log(cov["N"]), np.log(cov["S1"]), cov["S2"]
    lnK, lnB, a, aS, lnCc = (theta_SxP[:, i, None] for i in range(5))
    u1 = lnB - a * lnN
    u2 = -lnS1                      # (n,): logaddexp broadcasts it against u1 (S, n)
    g = np.logaddexp(u1, u2)
    P = np.exp(lnK + aS * g)
    tC = np.exp(lnCc) * S2
    L = P - tC
    # a non-positive loss is infeasible; the floor keeps the log finite (the objective there is merely large)
    L_safe = np.maximum(L, 1e-12)
    logL = np.log(L_safe)
    if not need_grad:
        return logL, None
    s1 = np.exp(u1 - g)
    grad = np.stack([P, P * aS * s1, -P * aS * s1 * lnN, P * g, -tC], axis=-1) / L_safe[..., None]
    return logL, grad
