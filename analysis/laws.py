"""Scaling-law forms: what each law predicts, how it is fitted, and its closed forms.

Every law is a frozen `Law`: a name and version (recorded in fit results), a
citation, its natural parameters (`param_names`, e.g. E, A, B, alpha, beta), the
covariates it reads from the tidy table (e.g. ("N", "D")), the N counting
convention it expects, which rows of a run it describes (`fitted_on`: each run's
final point, or every eval point for laws of the lr schedule), and the space it is
fitted in: `theta`, positive scales as their logarithm and exponents as they are,
with `bounds` and a default grid of starting points.

Each law's terms are written once, plainly, in natural units (`form`, in the manner
of Epoch's `log_sum_exp(a, b, e, alpha, beta, N, D)`); its closed forms (the
compute-optimal size, the tokens that reach a target loss) sit beside it. The
fitting engine evaluates a law thousands of times for many parameter sets with its
gradient, so each law also has a vectorized kernel (`analysis.kernels`), checked
against the plain form by the tests.
"""
from __future__ import annotations

import difflib
import functools
import itertools
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from analysis import kernels as K

ArrayLike = np.ndarray | float
SELECTS = ("final", "all")


def with_derived(values: Mapping[str, ArrayLike], needed, flops_per_param_token: float | None = None) -> dict:
    """`values` plus the covariates in `needed` that follow from N and D.

    M = D / N, the tokens per parameter of Gadre et al. 2024; C = k N D when
    `flops_per_param_token` k is given (a law of C asked about a model size and token count).
    """
    out = dict(values)
    if "M" in needed and "M" not in out and "N" in out and "D" in out:
        out["M"] = np.asarray(out["D"], float) / np.asarray(out["N"], float)
    if ("C" in needed and "C" not in out and flops_per_param_token is not None
            and "N" in out and "D" in out):
        out["C"] = flops_per_param_token * np.asarray(out["N"], float) * np.asarray(out["D"], float)
    return out


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
    form: Callable = field(repr=False, compare=False)          # form(**covariates, **params) -> loss, plainly
    kernel: K.LogPredictFn = field(repr=False, compare=False)  # vectorized log L̂ and its gradient (fitting)
    fitted_on: str = "final"              # "final": each run's last eval point; "all": every eval point
    optimal_n: Callable | None = field(default=None, repr=False, compare=False)   # (C, k, **params) -> N_opt
    tokens_for: Callable | None = field(default=None, repr=False, compare=False)  # (target, N, **params) -> D
    members: tuple[str, ...] = ()         # an ensemble's laws ("Ensembles of laws" below); () for a single law
    weights: tuple[float, ...] = ()       # an ensemble's fixed weights, in `members` order

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @property
    def params_per_fit(self) -> int:
        """The most parameters one fit determines: an ensemble's members are fitted one by one, so a backtest
        needs as many runs as its largest member, not as all its parameters together."""
        return max(get_law(m).n_params for m in self.members) if self.members else self.n_params

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

    def param_columns(self, params) -> dict[str, np.ndarray]:
        """Each natural parameter as an (S, 1) column, to broadcast against (n,) or (S, n) covariates."""
        P = np.atleast_2d(self.as_natural(params))
        return {p: P[:, i, None] for i, p in enumerate(self.param_names)}

    def default_starts(self) -> np.ndarray:
        """The default start grid in theta space, shape (G, P)."""
        return np.array(list(itertools.product(*self.start_grid)), dtype=np.float64)

    # ---- covariates --------------------------------------------------
    def source_columns(self, available) -> tuple[str, ...]:
        """The table columns the law's covariates come from (M from N and D when the table has no M)."""
        cols: list[str] = []
        for c in self.covariates:
            cols += ["N", "D"] if c == "M" and "M" not in available else [c]
        return tuple(dict.fromkeys(cols))

    def covariate_arrays(self, values: Mapping[str, ArrayLike], flops_per_param_token: float | None = None
                         ) -> dict[str, np.ndarray]:
        """The law's covariates as equal-length float arrays (derived ones from N and D: `with_derived`)."""
        values = with_derived(values, self.covariates, flops_per_param_token)
        missing = [c for c in self.covariates if c not in values]
        if missing:
            raise ValueError(f"law {self.name!r} needs covariates {list(self.covariates)}; missing {missing}")
        arrays = np.broadcast_arrays(*[np.atleast_1d(np.asarray(values[c], dtype=np.float64)) for c in self.covariates])
        return {c: a.ravel() for c, a in zip(self.covariates, arrays)}

    # ---- evaluation --------------------------------------------------
    def loss(self, params, **covariates: ArrayLike) -> np.ndarray:
        """The plain form under S parameter sets: (S, n), covariates broadcasting against (S, 1) columns.

        Covariates may be (S, n) arrays, one row per parameter set (e.g. each set at its own
        compute-optimal N); M comes from N and D, C = 6ND is not assumed.
        """
        cov = with_derived(covariates, self.covariates)
        missing = [c for c in self.covariates if c not in cov]
        if missing:
            raise ValueError(f"law {self.name!r} needs covariates {list(self.covariates)}; missing {missing}")
        return self.form(**{c: np.asarray(cov[c], float) for c in self.covariates}, **self.param_columns(params))

    def log_predict_grad(self, theta_SxP: np.ndarray, covariates: Mapping[str, np.ndarray], need_grad: bool = True):
        """log L̂ for S parameter sets (theta space) at n points: (S, n), and d/dtheta (S, n, P)."""
        return self.kernel(np.atleast_2d(theta_SxP), covariates, need_grad)

    def log_predict(self, params, **covariates: ArrayLike) -> np.ndarray:
        """log L̂ from natural parameters: (P,) -> (n,), (S, P) -> (S, n)."""
        nat = self.as_natural(params)
        theta_SxP = np.atleast_2d(self.to_theta(nat))
        out_Sxn, _ = self.kernel(theta_SxP, self.covariate_arrays(covariates), False)
        return out_Sxn[0] if nat.ndim == 1 else out_Sxn

    def predict(self, params, **covariates: ArrayLike) -> np.ndarray:
        """Predicted loss from natural parameters (dict or array): (P,) -> (n,), (S, P) -> (S, n)."""
        return np.exp(self.log_predict(params, **covariates))

    # ---- closed forms ------------------------------------------------
    def n_opt(self, params, C, flops_per_param_token: float = 6.0) -> np.ndarray:
        """N minimizing the loss at compute C with D = C / (k N): (S, n) for S parameter sets.

        The law's closed form where it has one, else `n_opt_search`.
        """
        C = np.atleast_1d(np.asarray(C, dtype=np.float64))
        if self.optimal_n is not None:
            return self.optimal_n(C, flops_per_param_token, **self.param_columns(params))
        return self.n_opt_search(params, C, flops_per_param_token)

    def n_opt_search(self, params, C, flops_per_param_token: float = 6.0) -> np.ndarray:
        """N_opt of a law of N and D by search: a dense grid over log N (tokens per parameter from 1e-3
        to 1e7, which brackets every sensible optimum), then one parabolic refinement."""
        if set(self.covariates) != {"N", "D"}:
            known = [n for n, law in LAWS.items() if law.optimal_n or set(law.covariates) == {"N", "D"}]
            raise ValueError(f"law {self.name!r} has no compute-optimal allocation (it needs N and D as "
                             f"covariates: {', '.join(known)})")
        C = np.atleast_1d(np.asarray(C, dtype=np.float64))
        k = flops_per_param_token
        P = np.atleast_2d(self.as_natural(params))
        out = np.empty((len(P), C.size))
        for j, c in enumerate(C):
            lnN = np.linspace(np.log(np.sqrt(c / k / 1e7)), np.log(np.sqrt(c / k / 1e-3)), 2001)
            N = np.exp(lnN)
            y = self.log_predict(P, N=N, D=c / (k * N))                   # (S, G)
            i = np.clip(np.argmin(y, axis=1), 1, lnN.size - 2)
            rows = np.arange(len(P))
            y0, y1, y2 = y[rows, i - 1], y[rows, i], y[rows, i + 1]
            denom = y0 - 2 * y1 + y2
            shift = np.where(denom > 0, 0.5 * (y0 - y2) / np.where(denom > 0, denom, 1.0), 0.0)
            out[:, j] = np.exp(lnN[i] + shift * (lnN[1] - lnN[0]))
        return out

    def tokens_to_reach(self, params, target: float, N) -> np.ndarray:
        """Tokens D with L(N, D) = target under S parameter sets: (S, n); NaN where N cannot reach it."""
        if self.tokens_for is None:
            raise ValueError(f"tokens_to_reach needs a law of N and D with a closed form "
                             f"({', '.join(n for n, law in LAWS.items() if law.tokens_for)}), not {self.name!r}")
        N = np.atleast_1d(np.asarray(N, dtype=np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.tokens_for(target, N, **self.param_columns(params))


def _grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.linspace(lo, hi, n))


def _unreachable_as_nan(gap, value):
    """`value(gap)` where gap > 0, NaN where the target lies at or below what the law can reach."""
    return np.where(gap > 0, value(np.where(gap > 0, gap, 1.0)), np.nan)


# ---------------------------------------------------------------------
# the laws: terms written plainly, closed forms beside them


def chinchilla(N, D, E, A, B, alpha, beta):
    """Hoffmann et al. 2022, Eq. 2."""
    return E + A * N ** -alpha + B * D ** -beta


def chinchilla_n_opt(C, k, E, A, B, alpha, beta):
    # dL/dN = 0 with D = C/(kN): alpha A N^-alpha = beta B D^-beta (Hoffmann et al. 2022 Eq. 4)
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    return G * (C / k) ** (beta / (alpha + beta))


def chinchilla_tokens(target, N, E, A, B, alpha, beta):
    # what the data term must still supply once the size term is paid: B D^-beta = target - E - A N^-alpha
    return _unreachable_as_nan(target - E - A * N ** -alpha, lambda gap: (B / gap) ** (1.0 / beta))


def kaplan(N, D, Nc, Dc, alpha_N, alpha_D):
    """Kaplan et al. 2020, Eq. 1.5."""
    return ((Nc / N) ** (alpha_N / alpha_D) + Dc / D) ** alpha_D


def kaplan_tokens(target, N, Nc, Dc, alpha_N, alpha_D):
    # L^(1/alpha_D) = (Nc/N)^(alpha_N/alpha_D) + Dc/D
    return _unreachable_as_nan(target ** (1.0 / alpha_D) - (Nc / N) ** (alpha_N / alpha_D), lambda gap: Dc / gap)


def compute(C, E, A, gamma):
    """The compute frontier: Kaplan et al. 2020 Eq. 1.4 with an irreducible term."""
    return E + A * C ** -gamma


def overtrain(C, M, E, a, b, eta):
    """Gadre et al. 2024, Sec. 2.1 (M = D / N, the tokens per parameter)."""
    return E + (a * M ** eta + b * M ** -eta) * C ** -eta


def overtrain_n_opt(C, k, E, a, b, eta):
    # (a M^eta + b M^-eta) is smallest at M* = (b/a)^(1/(2 eta)); N = sqrt(C / (k M*))
    M = (b / a) ** (1.0 / (2.0 * eta))
    return np.sqrt(C / (k * M))


def schedule(N, S1, S2, E, A_N, alpha_N, A, alpha, C):
    """Tissue et al. 2024 Eq. 1, L0 + A S1^-alpha - C S2, with L0 = E + A_N N^-alpha_N."""
    return E + A_N * N ** -alpha_N + A * S1 ** -alpha - C * S2


def kaplan_schedule(N, S1, S2, K, B, a, alpha_S, C):
    """Kaplan et al. 2020 Eq. 1.5 in the forward area S1, minus Tissue et al. 2024's annealing term.

    Kaplan's [(Nc/N)^(alpha_N/alpha_S) + Sc/S1]^alpha_S, written K (1/S1 + B N^-a)^alpha_S with
    K = Sc^alpha_S, B = Nc^a / Sc and a = alpha_N / alpha_S (`kaplan_schedule_params`,
    `kaplan_schedule_as_kaplan`). Small ladders drive Kaplan's Nc and Sc to astronomic values
    (log Nc and log Sc of 60 and more) while K, B and a stay moderate (K about 5, log B -5 to -1,
    a 0.8-1.3), so the fit lives in these coordinates and never has to walk to a bound to reach the data's best law.
    """
    return K * (1.0 / S1 + B * N ** -a) ** alpha_S - C * S2


def kaplan_schedule_params(Nc, Sc, alpha_N, alpha_S, C) -> dict[str, float]:
    """kaplan-schedule's parameters from Kaplan's constants (Nc, Sc, alpha_N, alpha_S) and C."""
    a = alpha_N / alpha_S
    return {"K": float(Sc ** alpha_S), "B": float(np.exp(a * np.log(Nc) - np.log(Sc))), "a": float(a),
            "alpha_S": float(alpha_S), "C": float(C)}


def kaplan_schedule_as_kaplan(params: Mapping[str, float]) -> dict[str, float]:
    """Kaplan's constants of a kaplan-schedule fit: log Nc, log Sc (natural logs; they overflow a float
    on small ladders), alpha_N, alpha_S and C."""
    K, B, a, aS = (float(params[k]) for k in ("K", "B", "a", "alpha_S"))
    log_sc = np.log(K) / aS
    return {"log_Nc": float((np.log(B) + log_sc) / a), "log_Sc": float(log_sc), "alpha_N": a * aS,
            "alpha_S": aS, "C": float(params["C"])}


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
    form=chinchilla, kernel=K.lse_law(K.chinchilla_design),
    optimal_n=chinchilla_n_opt, tokens_for=chinchilla_tokens,
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
    form=kaplan, kernel=K.kaplan_log_predict, tokens_for=kaplan_tokens,
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
    form=compute, kernel=K.lse_law(K.compute_design),
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
    form=overtrain, kernel=K.lse_law(K.overtrain_design), optimal_n=overtrain_n_opt,
)

SCHEDULE = Law(
    name="schedule",
    version="1",
    # Tissue et al. 2024, 'Scaling Law with Learning Rate Annealing', Eq. 1: L(s) = L0 + A S1^-alpha - C S2.
    # Extension here: L0 = E + A_N N^-alpha_N so runs of several sizes share one fit; S1 and S2 come
    # from `analysis.schedule.schedule_features` (lr normalized by the peak, optionally times tokens per step).
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
    form=schedule, kernel=K.schedule_log_predict, fitted_on="all",
)

KAPLAN_SCHEDULE = Law(
    name="kaplan-schedule",
    version="2",
    # Kaplan's joint form (Eq. 1.5), so a small model saturates in data sooner than a large one, read
    # in Tissue et al.'s schedule features instead of D: S1 is D under a constant lr, and -C S2 is the
    # gain from annealing. Fitted on every eval point of every run, it sees how the final loss of a
    # run depends on its schedule's length, which a law of final losses in D cannot.
    # Version 2 fits K, B, a instead of Nc, Sc, alpha_N (the same family of curves, see
    # `kaplan_schedule`): version 1's fits on the recipe ladders put log Nc at its bound of 80.
    citation="Kaplan et al. 2020 Eq. 1.5 with D replaced by the forward area S1, plus the annealing term of "
             "Tissue et al. 2024 Eq. 1",
    formula="L = K * (1 / S1 + B * N^-a)^alpha_S - C * S2   "
            "(Kaplan's [(Nc/N)^(alpha_N/alpha_S) + Sc/S1]^alpha_S: K = Sc^alpha_S, B = Nc^a / Sc, a = alpha_N / alpha_S)",
    param_names=("K", "B", "a", "alpha_S", "C"),
    log_params=(True, True, False, False, True),
    bounds=((-5.0, 10.0), (-60.0, 60.0), (1e-3, 5.0), (1e-3, 3.0), (-60.0, 10.0)),
    # log B every 5 and a every 0.35: B and a trade off (u = ln B - a ln N), and a coarser grid
    # sent the polish of recipe-ladder fits to a flat basin where the N term swamps 1/S1
    start_grid=(_grid(0.5, 3.5, 4), _grid(-30, 10, 9), _grid(0.2, 1.6, 5), (0.02, 0.08, 0.2, 0.5), _grid(-30, -5, 6)),
    covariates=("N", "S1", "S2"),
    n_convention="non_embedding",
    exponents=("a", "alpha_S"),
    irreducible=None,
    form=kaplan_schedule, kernel=K.kaplan_schedule_log_predict, fitted_on="all",
)

LAWS: dict[str, Law] = {law.name: law for law in (CHINCHILLA, KAPLAN, COMPUTE, OVERTRAIN, SCHEDULE, KAPLAN_SCHEDULE)}


def get_law(name: str | Law) -> Law:
    """A law by name; an ensemble name (``mix:LAW=W,LAW=W``, "Ensembles of laws" below) builds that ensemble."""
    if isinstance(name, Law):
        return name
    if is_mixture(name):
        return mixture_law(name)
    try:
        return LAWS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), LAWS, n=1)
        raise ValueError(f"unknown law {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                         f"known laws: {sorted(LAWS)}") from None


# ---------------------------------------------------------------------------
# Ensembles of laws: a weighted average of several laws' forecasts, fitted and used as one law.
#
# A ladder of tiny runs often cannot tell two plausible laws apart, and two laws that
# each fit it well can still part ways far from it. On the CPU recipe ladders the two
# laws fitted on whole curves do this in opposite directions: kaplan-schedule's
# forecasts drift low with distance and schedule's drift high (benchmarks/recipe/README.md,
# section (10)). An average weighted by in-ladder backtest skill is the standard remedy
# (FORECASTING.md); it assumes the members' errors partly cancel, which the backtests
# can check but not guarantee.
#
# An ensemble is named like a law, ``mix:kaplan-schedule=0.62,schedule=0.38``, and
# `get_law` builds it on demand: its parameters are the members'
# (``kaplan-schedule.K``, ``schedule.E``, ...), its prediction is the weighted mean of
# the members' losses, and `analysis.fitting.fit` fits it by fitting each member on
# the same rows (one N convention for all) with the weights held fixed (`analysis.fitting.fit_mixture`,
# `combine_fits`). So a fit
# result, its JSON, bootstrap bands, rollout backtests, calibrated intervals and
# planned-run forecasts work for an ensemble exactly as for one law. The members must
# read the same covariates (a planned run is forecast from one set of features).
#
# `analysis.select.select_law` chooses the weights: 1 / (far-weighted rollout error)
# over the laws of whole curves, which are fitted on every eval point.

PREFIX = "mix:"
SEP = "."   # member-parameter names: "<law>.<param>"


def is_mixture(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def mixture_name(weights: Mapping[str, float]) -> str:
    """The law name of an ensemble with these (positive, normalized here) weights, rounded to 3 decimals."""
    if len(weights) < 2:
        raise ValueError(f"an ensemble needs at least two laws, got {list(weights)}")
    w = {k: float(v) for k, v in weights.items()}
    if not all(np.isfinite(v) and v > 0 for v in w.values()):
        raise ValueError(f"ensemble weights must be positive numbers, got {w}")
    total = sum(w.values())
    return PREFIX + ",".join(f"{k}={v / total:.3f}" for k, v in w.items())


def parse_mixture(name: str) -> dict[str, float]:
    """{law: weight} of an ensemble name (weights normalized to sum to 1); ValueError naming what is wrong."""
    body = name[len(PREFIX):]
    out: dict[str, float] = {}
    for part in body.split(","):
        law, eq, w = part.partition("=")
        law = law.strip()
        try:
            value = float(w) if eq else float("nan")
        except ValueError:
            value = float("nan")
        if not law or not (np.isfinite(value) and value > 0):
            raise ValueError(f"bad ensemble {name!r}: write it as {PREFIX}LAW=WEIGHT,LAW=WEIGHT with positive weights")
        if law in out:
            raise ValueError(f"bad ensemble {name!r}: {law!r} is listed twice")
        out[law] = value
    if len(out) < 2:
        raise ValueError(f"bad ensemble {name!r}: it needs at least two laws")
    total = sum(out.values())
    return {k: v / total for k, v in out.items()}


@functools.lru_cache(maxsize=64)
def mixture_law(name: str):
    """The `analysis.laws.Law` of an ensemble name (cached: a name always builds the same law)."""
    weights = parse_mixture(name)
    members = []
    for m in weights:
        if is_mixture(m):
            raise ValueError(f"bad ensemble {name!r}: a member cannot itself be an ensemble")
        members.append(get_law(m))
    covs = {law.covariates for law in members}
    if len(covs) != 1:
        raise ValueError(f"bad ensemble {name!r}: its laws read different covariates "
                         f"({', '.join(f'{law.name}: {list(law.covariates)}' for law in members)}); "
                         "an ensemble averages laws of the same inputs")
    w = np.array([weights[law.name] for law in members])
    sizes = [law.n_params for law in members]
    cuts = np.cumsum([0] + sizes)

    def form(**kw):
        cov = {c: kw[c] for c in members[0].covariates}
        return sum(wi * law.form(**cov, **{p: kw[law.name + SEP + p] for p in law.param_names})
                   for wi, law in zip(w, members))

    def kernel(theta_SxP, covariates, need_grad):
        logs, grads = [], []
        for i, law in enumerate(members):
            lg, g = law.kernel(theta_SxP[:, cuts[i]:cuts[i + 1]], covariates, need_grad)
            logs.append(np.log(w[i]) + lg)
            grads.append(g)
        stacked = np.stack(logs)                       # (M, S, n)
        out = np.logaddexp.reduce(stacked, axis=0)     # log of the weighted mean of the members' losses
        if not need_grad:
            return out, None
        share = np.exp(stacked - out[None])            # each member's part of the mean, (M, S, n)
        return out, np.concatenate([share[i][..., None] * grads[i] for i in range(len(members))], axis=-1)

    fitted_on = {law.fitted_on for law in members}
    return Law(
        name=name,
        version="+".join(f"{law.name}@{law.version}" for law in members),
        citation="an average of the members' forecasts with fixed weights; members: "
                 + "; ".join(law.citation for law in members),
        formula=" + ".join(f"{wi:.3f} * [{law.formula}]" for wi, law in zip(w, members)),
        param_names=tuple(law.name + SEP + p for law in members for p in law.param_names),
        log_params=tuple(b for law in members for b in law.log_params),
        bounds=tuple(b for law in members for b in law.bounds),
        start_grid=tuple(g for law in members for g in law.start_grid),
        covariates=members[0].covariates,
        n_convention=members[0].n_convention,
        exponents=tuple(law.name + SEP + p for law in members for p in law.exponents),
        irreducible=None,
        form=form, kernel=kernel,
        fitted_on="all" if fitted_on == {"all"} else "final",
        members=tuple(law.name for law in members), weights=tuple(float(x) for x in w),
    )


def member_spread(law, params, **covariates) -> np.ndarray:
    """The between-law part of an ensemble forecast's log spread at `covariates`: sqrt(sum_i w_i (ln L_i - ln L)^2),
    L_i each member's forecast and L their weighted mean. Law by law the members part ways with distance; this
    is the spread of a mixture of their forecasts that the ensemble's own backtests (whose weights were set on
    them) do not show. Zero for a single law."""
    if not law.members:
        return np.zeros(np.broadcast(*[np.atleast_1d(v) for v in covariates.values()]).shape)
    logs = []
    for name in law.members:
        member = get_law(name)
        sub = {p: params[name + SEP + p] for p in member.param_names}
        logs.append(np.log(np.asarray(member.predict(sub, **covariates), float)))
    logs_Mxn = np.stack(logs)
    w = np.asarray(law.weights)[:, None]
    center = np.log((w * np.exp(logs_Mxn)).sum(axis=0))
    return np.sqrt((w * (logs_Mxn - center) ** 2).sum(axis=0))
