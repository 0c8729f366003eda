"""Bootstrap intervals over runs, with every replicate refitted at once.

Points of one loss curve are not independent (they share a model, a seed and
a data order), so the resampling unit is the run: a replicate draws R runs
with replacement from the R runs of the fit and keeps all their rows, which
is the same as giving each row the weight "times its run was drawn". For a
table of final points only (e.g. the published Chinchilla points) each row is
its own run and this is the ordinary case bootstrap Besiroglu et al. 2024 use.

Why a hand-rolled solver: scipy has no batched minimizer, and refitting
4,000 replicates one `scipy.optimize.minimize` call at a time takes about a
minute on two cores. `batched_huber_lm` refits all replicates together as a
(B, P) parameter array: a Levenberg-Marquardt iteration on the Huber
objective (Gauss-Newton curvature, exact gradient, bounds by projection, a
per-replicate damping that only accepts steps that lower that replicate's
objective). It starts from the full-data optimum, so a few dozen iterations
suffice; tests check it lands where L-BFGS-B does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.laws import Law
from analysis.objective import FitData, huber, single_threaded_blas

_CHUNK_ELEMENTS = 6_000_000   # replicates x rows x params per block (bounds memory on long tables)


@dataclass(frozen=True)
class BootstrapResult:
    theta_BxP: np.ndarray        # refitted parameters (theta space), one row per replicate
    objective_B: np.ndarray      # each replicate's weighted Huber objective at its optimum
    converged_B: np.ndarray      # bool: the relative objective change fell below tolerance
    counts_BxR: np.ndarray       # how often each run was drawn in each replicate
    solver: str
    iterations: int

    @property
    def n_not_converged(self) -> int:
        return int((~self.converged_B).sum())


def resample_runs(n_runs: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap counts (B, R): each replicate draws R runs uniformly with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_boot).astype(np.float64)


def bootstrap_runs(law: Law, data: FitData, theta_hat: np.ndarray, *, delta: float, free: np.ndarray,
                   n_boot: int, seed: int = 0, max_iter: int = 600) -> BootstrapResult:
    """Refit `law` on `n_boot` run-level bootstrap replicates, starting from `theta_hat`."""
    counts_BxR = resample_runs(data.n_runs, n_boot, seed)
    W_Bxn = counts_BxR[:, data.run_codes] * data.weights
    theta0 = np.broadcast_to(theta_hat, (n_boot, law.n_params))
    chunk = max(1, _CHUNK_ELEMENTS // (data.n * law.n_params))
    # The batched products are thin (P x n by n x P per replicate): BLAS threads only add overhead.
    with single_threaded_blas():
        parts = [batched_huber_lm(law, theta0[i:i + chunk], data, W_Bxn[i:i + chunk], delta, free, max_iter=max_iter)
                 for i in range(0, n_boot, chunk)]
    return BootstrapResult(
        theta_BxP=np.concatenate([p[0] for p in parts]),
        objective_B=np.concatenate([p[1] for p in parts]),
        converged_B=np.concatenate([p[2] for p in parts]),
        counts_BxR=counts_BxR,
        solver="batched Levenberg-Marquardt on the Huber objective (Gauss-Newton curvature, exact gradient)",
        iterations=max(p[3] for p in parts),
    )


def _evaluate(law: Law, theta_RxP, data: FitData, W_Rxn, delta):
    """Objective (R,), gradient (R, P), Gauss-Newton curvature (R, P, P) and its damping scale (R, P).

    The curvature is J^T diag(W * Huber''(r)) J with Huber'' = 1 inside |r| <= delta and 0
    outside: exact for the Gauss-Newton model, so once the set of points inside the
    quadratic zone settles a step lands on the optimum. It can be singular (few points
    inside the zone), so the damping is scaled by the diagonal of the reweighted curvature
    J^T diag(W * min(1, delta/|r|)) J (the half-quadratic majorizer of Huber), which never is.
    """
    logL, J_RxnxP = law.log_predict_grad(theta_RxP, data.covariates, True)
    JT_RxPxn = np.ascontiguousarray(np.swapaxes(J_RxnxP, 1, 2))   # free for laws that build J this way
    r = logL - data.log_loss
    obj = (W_Rxn * huber(r, delta)).sum(axis=1)
    grad = (JT_RxPxn @ (W_Rxn * np.clip(r, -delta, delta))[..., None])[..., 0]
    inside = W_Rxn * (np.abs(r) <= delta)
    curv = (JT_RxPxn * inside[:, None, :]) @ J_RxnxP
    reweighted = W_Rxn * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
    scale = ((JT_RxPxn * JT_RxPxn) @ reweighted[..., None])[..., 0]
    return obj, grad, curv, scale


def batched_huber_lm(law: Law, theta0_RxP: np.ndarray, data: FitData, W_Rxn: np.ndarray, delta: float,
                     free: np.ndarray, *, max_iter: int = 200, rtol: float = 1e-11):
    """Minimize each replicate's weighted Huber objective; returns (theta, objective, converged, iterations).

    Replicate k minimizes sum_i W[k, i] Huber(log L̂(x_i; theta_k) - log L_i). Each
    iteration solves (H + mu diag(S)) step = -g per replicate, projects onto the bounds,
    and keeps the step only if it lowers that replicate's objective (mu shrinks tenfold
    on success, grows tenfold on failure). Only replicates still moving are evaluated.
    """
    lo = np.array([b[0] for b in law.bounds])
    hi = np.array([b[1] for b in law.bounds])
    theta = np.array(theta0_RxP, dtype=np.float64, copy=True)
    R, P = theta.shape
    fidx = np.flatnonzero(free)
    eye = np.eye(fidx.size)
    obj, grad, curv, scale = _evaluate(law, theta, data, W_Rxn, delta)
    mu = np.full(R, 1e-4)
    converged = np.zeros(R, dtype=bool)
    active = np.arange(R)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        if active.size == 0:
            break
        a = active
        H_f = curv[a][:, fidx[:, None], fidx[None, :]]
        S_f = scale[a][:, fidx]
        g_f = grad[a][:, fidx]
        # coordinates at a bound whose descent direction points out of the box are held there
        # (the active set, as in L-BFGS-B); projecting their step instead leaves the others
        # creeping along the bound for hundreds of iterations
        th_f = theta[a][:, fidx]
        held = ((th_f <= lo[fidx] + 1e-12) & (g_f > 0)) | ((th_f >= hi[fidx] - 1e-12) & (g_f < 0))
        free_f = ~held
        A = H_f + (mu[a, None] * S_f + 1e-300)[:, :, None] * eye
        A = A * (free_f[:, :, None] & free_f[:, None, :]) + held[:, :, None] * eye
        step = np.linalg.solve(A, np.where(held, 0.0, -g_f)[..., None])[..., 0]
        trial = theta[a].copy()
        trial[:, fidx] = np.clip(trial[:, fidx] + step, lo[fidx], hi[fidx])
        f_new, g_new, c_new, s_new = _evaluate(law, trial, data, W_Rxn[a], delta)
        accept = f_new < obj[a]
        improvement = np.where(accept, obj[a] - f_new, 0.0)
        acc = a[accept]
        theta[acc], obj[acc], grad[acc], curv[acc], scale[acc] = (
            trial[accept], f_new[accept], g_new[accept], c_new[accept], s_new[accept])
        mu[a] = np.where(accept, np.maximum(mu[a] / 10.0, 1e-12), mu[a] * 10.0)
        # Done: an accepted step that changed the objective by a negligible relative amount,
        # or damping so large that no step helps (a stationary point up to rounding).
        done = (accept & (improvement <= rtol * obj[a])) | (mu[a] > 1e10)
        converged[a[done]] = True
        active = a[~done]
    return theta, obj, converged, it
