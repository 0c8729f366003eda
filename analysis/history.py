"""Forecast intervals calibrated on earlier checked forecasts: split conformal prediction over a history.

The calibrated interval of `analysis.calibrate` is measured inside one ladder. Over many CPU ladders
its average width matched the misses, but within one corpus it did not rank one ladder's misses
against another's (benchmarks/recipe/README.md, section (29)): its ladder-to-ladder variation is
noise, and it makes the interval wider than it needs to be. A user who has forecast and then trained
targets before, with the same recipe on the same corpus, holds what one ladder cannot measure: how
far such forecasts miss. This module turns that history into an interval.

Each past forecast with a known outcome gives a score, its log miss per unit log compute ratio,

    s = |ln(actual / predicted)| / ln(C_target / C_ladder)

(the misses grow with the distance of the extrapolation, as the calibrated interval's k term models).
For n scores the level-L interval of a new forecast at ratio R is

    predicted * exp(-/+ q ln R),   q = the ceil((n + 1) L)-th smallest score

which is split conformal prediction (Vovk, Gammerman & Shafer 2005; Angelopoulos & Bates 2021, "A
gentle introduction to conformal prediction and distribution-free uncertainty quantification",
section 1): if the new forecast's score is exchangeable with the history's, the interval covers with
probability at least L, and at most L + 1 / (n + 1) for continuous scores. No law, no model of the
misses' distribution. The guarantee is only as good as the exchangeability: the history must come
from the same recipe (presets, law choice) on the same corpus, at compute ratios like the new one's
(the score assumes a miss proportional to ln R; nothing checks that far outside the ratios the
history spans, which `HistoryInterval.note` names). The forecasts of one ladder err together (they
share its fit), so a history of many targets from few ladders gives a noisier q than its count
suggests: the guarantee holds over ladders drawn like the history's, and more ladders beat more
targets per ladder.

Records are what the product writes: the demo's checked `forecast.json` (one record, or a list of
them) and `benchmarks/forecast.py`'s `cases.json` rows (one per target and method); a history shipped
with a preset (`testbed/histories/*.json`, `testbed.preset.shipped_history`) holds them under `records`. A record counts
once its target has trained (`actual` set) at a compute ratio above 1.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class HistoryInterval:
    """The conformal quantile q (per unit ln C ratio) of n past forecasts' scores at `level`."""
    q: float
    n: int
    level: float
    ratios: tuple[float, float]       # the smallest and largest compute ratio of the history

    def bounds(self, point, ratio) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of forecasts `point` at compute ratios `ratio` (C_target / C_ladder, at least 1)."""
        half = self.q * np.log(np.maximum(np.asarray(ratio, float), 1.0))
        point = np.asarray(point, float)
        return point * np.exp(-half), point * np.exp(half)

    def note(self, ratio: float) -> str:
        lo, hi = self.ratios
        out = (f"split conformal over {self.n} checked forecasts at {lo:.3g}-{hi:.3g}x compute "
               f"(q = {self.q:.4f} per unit ln ratio; analysis.history)")
        if not lo / 1.5 <= ratio <= hi * 1.5:
            out += (f"; this forecast is at {ratio:.3g}x, outside the history's ratios: the interval assumes "
                    "misses grow as ln(ratio), which the history does not test there")
        return out


def conformal_quantile(scores, level: float) -> float:
    """The ceil((n + 1) level)-th smallest of n scores: the split conformal quantile.

    Raises ValueError when n is too small for the level (n + 1 > 1 / (1 - level) is needed: 9 scores
    at 90%), naming how many it has and needs.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    s = np.sort(np.asarray(scores, float))
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    rank = math.ceil((len(s) + 1) * level - 1e-9)
    if rank > len(s):
        need = math.ceil(level / (1 - level) - 1e-9)
        raise ValueError(f"a {level:.0%} conformal interval needs at least {need} checked forecasts, the history "
                         f"has {len(s)}")
    return float(s[rank - 1])


def _records(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"history file {path}: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):   # a shipped history (testbed/histories)
        data = data["records"]
    rows = data if isinstance(data, list) else [data]
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"history file {path}: expected a forecast record or a list of them")
    return rows


def load_history(paths, *, law: str | None = None) -> list[dict]:
    """The checked forecasts in `paths` (JSON: one record or a list) whose targets trained.

    Each has `predicted`, `actual` and `compute_ratio`; rows that record an error, have no actual
    yet, or sit at a ratio of 1 or less are left out. A record's method is its `method` (the demo
    writes the preset's law setting there, e.g. auto) or else its `law`. Records of several methods (a
    `benchmarks/forecast.py` cases.json holds one row per target and law) need `law` to choose one;
    without it a ValueError names them.
    """
    rows = []
    for p in paths:
        for r in _records(Path(p)):
            missing = [k for k in ("predicted", "compute_ratio") if k not in r]
            if missing:
                raise ValueError(f"history file {p}: a record without {', '.join(missing)} is not a forecast record")
            rows.append(r)
    laws = sorted({str(_method(r)) for r in rows if _method(r) is not None})
    if law is not None:
        rows = [r for r in rows if _method(r) == law]
        if not rows:
            raise ValueError(f"no history record has law {law!r} (found: {', '.join(laws) or 'none'})")
    elif len(laws) > 1:
        raise ValueError(f"the history holds forecasts of several laws ({', '.join(laws)}); choose the method "
                         "this forecast uses (--history-law)")
    return [r for r in rows if "error" not in r and r.get("actual") is not None and r.get("predicted")
            and float(r["compute_ratio"]) > 1.0]


def _method(record: dict):
    """How a record's forecast was made: the demo's `method` (the preset's law setting, e.g. auto, whatever law
    it chose), else its `law` (benchmarks/forecast.py names the method there)."""
    return record.get("method", record.get("law"))


def history_scores(rows: list[dict]) -> np.ndarray:
    """|ln(actual / predicted)| / ln(compute ratio) of each record."""
    a = np.array([float(r["actual"]) for r in rows])
    p = np.array([float(r["predicted"]) for r in rows])
    ratio = np.array([float(r["compute_ratio"]) for r in rows])
    return np.abs(np.log(a / p)) / np.log(ratio)


def calibrate_on_history(paths, *, level: float = 0.9, law: str | None = None) -> HistoryInterval:
    """`HistoryInterval` from the checked forecasts in `paths` (`load_history`)."""
    return calibrate_records(load_history(paths, law=law), level=level)


def calibrate_records(rows: list[dict], *, level: float = 0.9) -> HistoryInterval:
    """`HistoryInterval` from checked forecast records (each with `predicted`, `actual`, `compute_ratio`)."""
    if not rows:
        raise ValueError("the history has no checked forecast (a record with its target's actual loss)")
    ratios = [float(r["compute_ratio"]) for r in rows]
    return HistoryInterval(q=conformal_quantile(history_scores(rows), level), n=len(rows), level=level,
                           ratios=(min(ratios), max(ratios)))
