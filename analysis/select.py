"""Choosing the law by evidence: rollout backtests inside the ladder, the far end weighted, no bound hits.

`select_law(table)` fits every candidate law (by default every law the table can
feed) and scores it as the leaderboard does (`analysis.backtest.leaderboard`):
rollout backtests on compute cutoffs shared by the candidates, the mean |relative
error| weighted by ln(held-out C / cutoff), so the law that holds at the farthest
forecasts the ladder can check wins. A law whose full fit leaves a parameter at its
bound is not chosen while another is free of that: its forecast far from the data
depends on where the bound sits, not on the data. When the best-ranked law is ahead
of a law fitted on every eval point by less than the backtests can resolve (a paired
gap under `TIE_Z` standard errors, `analysis.backtest.far_gap`), the law of whole
curves is chosen: the ranking cannot tell the two apart, and a law fitted on every
intermediate checkpoint is constrained by several times the data of one fitted on
each run's last point (Choshen et al. 2024 fit on intermediate checkpoints for this
reason). When the choice is a law of whole curves and another law of whole curves is as free of
bounds, the forecast is their ensemble (`analysis.laws`, "Ensembles of laws"), each weighted by 1 / its
far-weighted backtest error: two laws the ladder fits equally well can part ways beyond it, and
on the CPU recipe ladders the two laws of whole curves err in opposite directions
(benchmarks/recipe/README.md, section (10)). `ensemble=False` keeps the single best law.
`curves_only=True` (the CPU presets' `fit.curves_only`, `testbed fit --curves-only`) chooses among the
laws of whole curves whatever ranks first: the rollouts hold out the ladder's larger runs, so they test
the extrapolation in size, while a target also reaches further in tokens, where a law fitted on each
run's last point has least to go on (benchmarks/recipe/README.md, section (24)).
Every step is said in `reasons`,
and the chosen fit records them (`settings["selection"]`), so `testbed fit --law
auto`, the demo or a notebook can say why a law was used.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.backtest import RANKING, far_gap, far_weighted, leaderboard_results
from analysis.fitresult import FitResult
from analysis.fitting import combine_fits, fit
from analysis.laws import LAWS, get_law, mixture_name

# a paired far-weighted gap of fewer standard errors than this is one the backtests cannot resolve
TIE_Z = 2.0


def params_at_bound(result: FitResult) -> list[str]:
    """The fitted (not fixed) parameters that sit at a bound of the law's fitting box (as the fit warns)."""
    law = result.law_obj
    theta = law.to_theta(result.params)
    fixed = result.settings.get("fixed") or {}
    out = []
    for i, name in enumerate(law.param_names):
        lo, hi = law.bounds[i]
        tol = 1e-6 * (hi - lo)
        if name not in fixed and (theta[i] - lo < tol or hi - theta[i] < tol):
            out.append(name)
    return out


@dataclass(frozen=True)
class Selection:
    law: str                         # the chosen law
    result: FitResult                # its fit on the whole table (with `reasons` in settings["selection"])
    board: pd.DataFrame              # every candidate's scores, best first (`analysis.backtest.leaderboard`)
    at_bound: dict[str, list[str]]   # law -> the parameters its full fit left at a bound
    reasons: list[str] = field(default_factory=list)


def candidate_laws(table: pd.DataFrame) -> list[str]:
    """The laws this table can feed: their covariates are columns (M comes from N and D)."""
    return [name for name, law in LAWS.items() if set(law.source_columns(table.columns)) <= set(table.columns)]


def select_law(table: pd.DataFrame, candidates: Sequence[str] | None = None, *, bootstrap: int = 1000,
               backtest_bootstrap: int = 0, seed: int = 0, level: float = 0.95, n_convention: str | None = None,
               ensemble: bool = True, curves_only: bool = False, **fit_kwargs) -> Selection:
    """The law to forecast with, its fit (bootstrap intervals over runs), and why.

    Ranking: `analysis.backtest.RANKING`. The best-ranked law whose full fit has no parameter
    at a bound is chosen; when every candidate has one, the best-ranked among those with the
    fewest, and the reasons say the forecast leans on a bound. A law of final losses so chosen
    gives way to the best-ranked law of whole curves (no more bounds) that trails it by fewer than
    `TIE_Z` standard errors of the paired rollout forecasts. A law of whole curves so chosen is
    averaged with the other laws of whole curves that have no more parameters at a bound (same
    covariates, same N), weighted by 1 / far-weighted error, unless `ensemble` is False; the
    result is then the ensemble's fit (`analysis.fitting.combine_fits`) and `law` its name. Laws that
    cannot be fitted or backtested on this table are listed with their error and never chosen.

    `curves_only`: choose among the laws of whole curves only (every candidate is still backtested and
    ranked, and the reasons say which law of final losses was passed over). A recipe whose measured
    forecasts show that a law of final losses leading these backtests still extrapolates worse in tokens
    sets it (the CPU presets, benchmarks/recipe/README.md section (24)). With no law of whole curves
    fitted, the ranking stands and the reasons say so.
    """
    names = list(candidates) if candidates else candidate_laws(table)
    if not names:
        raise ValueError(f"no law can be fitted on a table with columns {list(table.columns)}")
    for name in names:
        get_law(name)
    rollouts: dict[str, pd.DataFrame] = {}
    board, _ = leaderboard_results(table, names, bootstrap=backtest_bootstrap, seed=seed,
                                   n_convention=n_convention, rollouts=rollouts, **fit_kwargs)
    ok = board[board["error"] == ""] if "error" in board else board
    if ok.empty:
        raise ValueError("no candidate law could be backtested on this table: "
                         + "; ".join(f"{r.law}: {r.error}" for r in board.itertuples()))
    fits, at_bound, failed = {}, {}, []
    for name in ok["law"]:
        try:
            fits[name] = fit(table, name, bootstrap=bootstrap, seed=seed, level=level, n_convention=n_convention,
                             **fit_kwargs)
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
            failed.append(f"{name} ({str(e).splitlines()[0]})")
            continue
        at_bound[name] = params_at_bound(fits[name])
    if not fits:
        raise ValueError("no candidate law could be fitted: " + "; ".join(failed))
    ranked = [name for name in ok["law"] if name in fits]
    score = ok.set_index("law")["far_err"]
    reasons = [f"ranked by {RANKING}: " + ", ".join(f"{n} {score[n]:.2%}" for n in ranked)]
    if failed:
        reasons.append("not fitted: " + "; ".join(failed))
    on_curves = ok.set_index("law")["select"].to_dict() if "select" in ok else {}
    eligible = [n for n in ranked if on_curves.get(n) == "all"] if curves_only else ranked
    if not eligible:
        reasons.append("no law of whole curves could be fitted here, so the choice is among laws of final losses")
        eligible = ranked
    only_curves = eligible is not ranked
    fewest = min(len(at_bound[n]) for n in eligible)
    chosen = next(n for n in eligible if len(at_bound[n]) == fewest)
    for name in ranked[:ranked.index(chosen)]:
        if name not in eligible:
            reasons.append(f"{name} ranks above {chosen} but is a law of final losses, and curves_only forecasts "
                           "with laws of whole curves: the backtests test the extrapolation in size more than in "
                           "tokens, where a law fitted on each run's last point alone is weakest")
        else:
            reasons.append(f"{name} ranks above {chosen} but its fit leaves {', '.join(at_bound[name])} at a bound: "
                           "its forecast far from the data would follow the bound, not the data")
    if on_curves.get(chosen) != "all" and chosen in rollouts:
        for name in ranked:
            if name == chosen or on_curves.get(name) != "all" or len(at_bound[name]) > fewest or name not in rollouts:
                continue
            gap, z = far_gap(rollouts[chosen], rollouts[name])
            if np.isfinite(z) and z < TIE_Z:
                reasons.append(f"{name} trails {chosen} by {gap:.2%} (paired over the rollout forecasts, "
                               f"{z:.1f} standard errors < {TIE_Z:g}): the backtests cannot tell them apart, and "
                               f"{name} is fitted on every eval point, {chosen} on each run's last")
                chosen = name
                break
    if fewest:
        among = "law of whole curves" if only_curves else "candidate"
        reasons.append(f"every {among} leaves a parameter at a bound; {chosen} leaves the fewest "
                       f"({', '.join(at_bound[chosen])}): treat its forecast far from the data with care")
    result = fits[chosen]
    members, left_out = _ensemble_members(chosen, ranked, on_curves, at_bound, fits, rollouts) if ensemble else ([], [])
    for name, why in left_out:
        reasons.append(f"{name} is not averaged with {chosen}: {why}")
    if len(members) > 1:
        weights = {n: 1.0 / max(float(score[n]), 1e-12) for n in members}
        name = mixture_name(weights)
        law = get_law(name)
        result = combine_fits(law, [fits[n] for n in law.members], table, select=fit_kwargs.get("select"))
        in_sample = _ensemble_far_err(law, rollouts)
        reasons.append(f"ensemble of the laws fitted on whole curves, each weighted by 1 / its far-weighted backtest "
                       f"error: {', '.join(f'{n} {w:.2f}' for n, w in zip(law.members, law.weights))} (on the same "
                       f"rollouts, which set the weights, the weighted forecasts score {in_sample:.2%})")
        chosen = name
    reasons.append(f"chosen: {chosen}")
    result = dataclasses.replace(result, settings={**result.settings, "selection": {
        "candidates": ranked, "far_err": {n: float(score[n]) for n in ranked},
        "at_bound": {n: at_bound[n] for n in ranked}, "reasons": reasons}})
    return Selection(chosen, result, board, {n: at_bound[n] for n in ranked}, reasons)


def _ensemble_members(chosen, ranked, on_curves, at_bound, fits, rollouts):
    """The laws averaged with `chosen` when it is a law of whole curves (in rank order, `chosen` among them):
    every law of whole curves with no more parameters at a bound, backtested on the same rollouts, reading the
    same covariates under the same N; and (law, why) for each law of whole curves left out."""
    if on_curves.get(chosen) != "all" or chosen not in rollouts:
        return [], []
    law, conv = get_law(chosen), fits[chosen].convention.get("N")
    members, left_out = [], []
    for n in ranked:
        if on_curves.get(n) != "all" or n not in rollouts:
            continue
        if len(at_bound[n]) > len(at_bound[chosen]):
            left_out.append((n, f"its fit leaves {', '.join(at_bound[n])} at a bound"))
        elif get_law(n).covariates != law.covariates:
            left_out.append((n, f"it reads {list(get_law(n).covariates)}, {chosen} {list(law.covariates)}"))
        elif fits[n].convention.get("N") != conv:
            left_out.append((n, f"it counts N as {fits[n].convention.get('N')} parameters, {chosen} as {conv} "
                                "(declare the table's convention, or pass n_convention)"))
        else:
            members.append(n)
    return members, left_out


def _ensemble_far_err(law, rollouts: dict[str, pd.DataFrame]) -> float:
    """The far-weighted |rel err| of the ensemble's forecasts on its members' shared rollout forecasts: the
    weighted mean of their relative errors (the actual loss is the same), paired by cutoff and run."""
    keys = ["cutoff", "run"]
    m = None
    for name, w in zip(law.members, law.weights):
        part = rollouts[name][keys + ["rel_err", "extrapolation"]].rename(columns={"rel_err": name})
        part[name] = w * part[name]
        m = part if m is None else m.merge(part.drop(columns="extrapolation"), on=keys)
    m = m.assign(rel_err=m[list(law.members)].sum(axis=1))
    return far_weighted(m[np.isfinite(m["rel_err"])])["far_err"]
