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
reason). Every step is said in `reasons`,
and the chosen fit records them (`settings["selection"]`), so `testbed fit --law
auto`, the demo or a notebook can say why a law was used.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.backtest import RANKING, far_gap, leaderboard_results
from analysis.fitresult import FitResult
from analysis.fitting import fit
from analysis.laws import LAWS, get_law

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
               **fit_kwargs) -> Selection:
    """The law to forecast with, its fit (bootstrap intervals over runs), and why.

    Ranking: `analysis.backtest.RANKING`. The best-ranked law whose full fit has no parameter
    at a bound is chosen; when every candidate has one, the best-ranked among those with the
    fewest, and the reasons say the forecast leans on a bound. A law of final losses so chosen
    gives way to the best-ranked law of whole curves (no more bounds) that trails it by fewer than
    `TIE_Z` standard errors of the paired rollout forecasts. Laws that cannot be fitted or
    backtested on this table are listed with their error and never chosen.
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
    fewest = min(len(at_bound[n]) for n in ranked)
    chosen = next(n for n in ranked if len(at_bound[n]) == fewest)
    for name in ranked[:ranked.index(chosen)]:
        reasons.append(f"{name} ranks above {chosen} but its fit leaves {', '.join(at_bound[name])} at a bound: "
                       "its forecast far from the data would follow the bound, not the data")
    on_curves = ok.set_index("law")["select"].to_dict() if "select" in ok else {}
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
        reasons.append(f"every candidate leaves a parameter at a bound; {chosen} leaves the fewest "
                       f"({', '.join(at_bound[chosen])}): treat its forecast far from the data with care")
    reasons.append(f"chosen: {chosen}")
    result = dataclasses.replace(fits[chosen], settings={**fits[chosen].settings, "selection": {
        "candidates": ranked, "far_err": {n: float(score[n]) for n in ranked},
        "at_bound": {n: at_bound[n] for n in ranked}, "reasons": reasons}})
    return Selection(chosen, result, board, {n: at_bound[n] for n in ranked}, reasons)
