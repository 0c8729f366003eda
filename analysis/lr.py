"""The optimal learning rate of each model size from an LR sweep, and the power law in N through them (torch-free).

The ladder recipe takes each size's learning rate from a rule lr*(N) = coef * (N / ref) ** exponent
measured on the corpus it trains (benchmarks/recipe/README.md, section (2)): under muP the optimum
still drifts with width, one way on the synthetic language and the other on Wikipedia, so a rule
measured on one corpus is not another's. This module turns an LR sweep's final losses into that rule.

Per size, the optimum is the minimum of a parabola in log2(lr) through the best seed-mean loss and
its two neighbours on the grid (near its minimum the final loss is close to quadratic in log LR; the
sweeps of section (2) show it). Where the best grid LR is the smallest or the largest swept, the
optimum lies beyond the grid: `LrOptimum.edge` says which way, and `testbed lr-rule` sweeps on. A run
that diverged counts as worse than any finite loss. `LrOptimum.octave_rise` (the parabola's rise one
octave, a factor 2, from its minimum) against `LrOptimum.rise_noise` (its standard error over seeds:
each seed's own parabola through the same three LRs, so a seed that is better at every LR, as one
initialization can be, does not count as noise) says whether the sweep locates the optimum at all.

The rule is the least-squares line of ln lr* on ln N over the sizes whose optimum is inside the
grid: the form in which fitted optimal-LR laws are reported (Porian et al. 2024; DeepSeek LLM 2024)
and which `sweeps.rules` evaluates. Its exponent's standard error comes from each optimum's spread
over seeds (`LrOptimum.lr_se`, each seed's own parabola's minimum): with two sizes and two inits it is
large, and a forecast target wider than the ladder takes the rule where that error counts most.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

COLUMNS = ("size", "N", "lr", "seed", "loss")


@dataclass(frozen=True)
class LrOptimum:
    """One size's sweep: the LRs tried, their seed-mean losses, and where the minimum lies."""
    size: str                  # a label, e.g. "w16 d2"
    N: float                   # parameters, in the convention the rule is evaluated in
    lrs: tuple                 # the swept LRs, ascending
    mean: tuple                # seed-mean final loss at each (inf where a seed diverged)
    seeds: int                 # seeds present at every LR (the means are over these)
    best_lr: float             # the grid LR with the lowest mean loss
    lr: float                  # the optimum: the parabola's minimum, or best_lr where none can be drawn
    loss: float                # the loss there (the parabola's, or the best mean)
    edge: str                  # "" inside the grid; "low" / "high": the best LR is the smallest / largest swept
    octave_rise: float         # the parabola's loss increase 2x away from its minimum (nan without one)
    rise_noise: float          # the standard error of octave_rise over seeds (nan with one seed or no parabola)
    lr_se: float = float("nan")  # the standard error of log2(lr) over seeds, in octaves: each seed's own
                                 # parabola's minimum (nan with one seed, or where a seed's parabola has none)

    @property
    def flat(self) -> bool:
        """The rise an octave from the optimum is under twice its seed noise: the sweep does not locate it."""
        return bool(np.isfinite(self.octave_rise) and np.isfinite(self.rise_noise)
                    and self.octave_rise < 2 * self.rise_noise)


@dataclass(frozen=True)
class LrRule:
    """lr*(N) = coef * (N / ref) ** exponent, fitted through the optima of `sizes`."""
    coef: float
    exponent: float
    ref: float
    sizes: tuple               # the LrOptimum of every size swept (those at an edge were not fitted)
    exponent_se: float = float("nan")   # its standard error from the fitted sizes' lr_se (nan where one lacks it)

    def lr(self, n) -> np.ndarray:
        return self.coef * (np.asarray(n, float) / self.ref) ** self.exponent

    def formula(self) -> str:
        """The rule as a `sweeps.rules` formula string in N (what a sweep spec's `rules:` holds)."""
        return f"{self.coef:.4g} * (N / {self.ref:.6g}) ** {self.exponent:.4g}"


def size_optimum(size: str, n: float, rows: pd.DataFrame) -> LrOptimum:
    """The optimum of one size from its rows (columns lr, seed, loss; a diverged run's loss inf or nan).

    The means are over the seeds run at every LR; a seed missing at some LR is left out."""
    if rows.empty:
        raise ValueError(f"size {size}: no runs")
    rows = rows.assign(loss=rows["loss"].astype(float).fillna(np.inf))   # a diverged run: nan or inf
    loss = rows.pivot_table(index="lr", columns="seed", values="loss", aggfunc="first", dropna=False)
    complete = [s for s in loss.columns if loss[s].notna().all()]
    if not complete:
        raise ValueError(f"size {size}: no seed was run at every LR ({', '.join(f'{x:g}' for x in loss.index)})")
    loss = loss[complete].sort_index()
    lrs = loss.index.to_numpy(float)
    mean = loss.mean(axis=1).to_numpy(float)
    i = int(np.argmin(mean))
    if not np.isfinite(mean[i]):
        raise ValueError(f"size {size}: every LR diverged ({', '.join(f'{x:g}' for x in lrs)})")
    edge = "low" if i == 0 else ("high" if i == len(lrs) - 1 else "")
    lr, at, rise, noise, lr_se = float(lrs[i]), float(mean[i]), float("nan"), float("nan"), float("nan")
    if not edge and np.isfinite(mean[i - 1:i + 2]).all():
        x = np.log2(lrs[i - 1:i + 2])
        c = np.polyfit(x, mean[i - 1:i + 2], 2)
        if c[0] > 0:   # the best point is the lowest of three, so the parabola opens upward unless they are collinear
            xs = float(np.clip(-c[1] / (2 * c[0]), x[0], x[-1]))
            lr, at, rise = 2.0 ** xs, float(np.polyval(c, xs)), float(c[0])
            ys = loss.iloc[i - 1:i + 2].to_numpy(float)
            if ys.shape[1] > 1 and np.isfinite(ys).all():
                a, b, _ = np.polyfit(x, ys, 2)                      # each seed's own parabola
                noise = float(np.std(a, ddof=1) / math.sqrt(len(a)))
                if (a > 0).all():
                    vertex = np.clip(-b / (2 * a), x[0], x[-1])
                    lr_se = float(np.std(vertex, ddof=1) / math.sqrt(len(vertex)))
    return LrOptimum(size=size, N=float(n), lrs=tuple(float(v) for v in lrs), mean=tuple(float(v) for v in mean),
                     seeds=len(complete), best_lr=float(lrs[i]), lr=lr, loss=at, edge=edge, octave_rise=rise,
                     rise_noise=noise, lr_se=lr_se)


def lr_optima(table: pd.DataFrame) -> list[LrOptimum]:
    """`size_optimum` of every size in a table of final losses (columns `COLUMNS`), in order of N."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"an LR sweep table needs columns {', '.join(COLUMNS)}; missing {', '.join(missing)}")
    if table.empty:
        raise ValueError("the LR sweep table is empty")
    out = []
    for size, rows in table.groupby("size", sort=False):
        ns = rows["N"].unique()
        if len(ns) != 1:
            raise ValueError(f"size {size}: rows disagree on N ({', '.join(f'{n:g}' for n in ns)})")
        out.append(size_optimum(str(size), float(ns[0]), rows))
    return sorted(out, key=lambda o: o.N)


def fit_lr_rule(optima: list[LrOptimum], ref: float | None = None) -> LrRule:
    """The power law lr*(N) = coef (N / ref)^exponent through the optima inside their grids.

    `ref` (default: the geometric mean of the fitted sizes' N, where the rule is best determined)
    only sets how the constants read. Raises ValueError when fewer than two sizes have an optimum
    inside their grid, naming those at an edge and which way to sweep.
    """
    inside = [o for o in optima if not o.edge]
    if len(inside) < 2 or len({o.N for o in inside}) < 2:
        edges = "; ".join(f"{o.size} best at the {'smallest' if o.edge == 'low' else 'largest'} LR swept "
                          f"({o.best_lr:g}): sweep {'lower' if o.edge == 'low' else 'higher'}"
                          for o in optima if o.edge)
        raise ValueError(f"a rule in N needs the optimum inside the LR grid at two or more sizes; "
                         f"{len(inside)} of {len(optima)} have it" + (f" ({edges})" if edges else ""))
    x = np.log([o.N for o in inside])
    y = np.log([o.lr for o in inside])
    ref = float(np.exp(x.mean())) if ref is None else float(ref)
    if not ref > 0:
        raise ValueError(f"ref must be > 0, got {ref}")
    b, a = np.polyfit(x - math.log(ref), y, 1)
    # least squares with each optimum's own variance: var(slope) = sum dx^2 var_i / (sum dx^2)^2
    dx = x - x.mean()
    var = (np.array([o.lr_se for o in inside]) * math.log(2)) ** 2
    se = float(math.sqrt(np.sum(dx ** 2 * var)) / np.sum(dx ** 2))
    return LrRule(coef=float(np.exp(a)), exponent=float(b), ref=ref, sizes=tuple(optima), exponent_se=se)


def markdown(rule: LrRule | None, optima: list[LrOptimum], current=None) -> str:
    """A table of every size's seed-mean loss per LR (the best in bold), its optimum and, when given,
    `current(N)`: the LR the preset's rule gave that size before the sweep."""
    lrs = sorted({lr for o in optima for lr in o.lrs})
    head = ["size", "N", *(f"{lr:.3g}" for lr in lrs), "optimum"] + (["rule before"] if current else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for o in optima:
        cells = []
        for lr in lrs:
            if lr not in o.lrs:
                cells.append("")
                continue
            m = o.mean[o.lrs.index(lr)]
            txt = "diverged" if not np.isfinite(m) else f"{m:.4f}"
            cells.append(f"**{txt}**" if lr == o.best_lr else txt)
        opt = f"{o.lr:.3g}" + {"low": " (below the grid)", "high": " (above the grid)"}.get(o.edge, "")
        if np.isfinite(o.lr_se):
            opt += f" ±{o.lr_se:.2f} octave"
        if o.flat:
            opt += " (flat within seed noise)"
        row = [o.size, f"{o.N:,.0f}", *cells, opt] + ([f"{float(current(o.N)):.3g}"] if current else [])
        lines.append("| " + " | ".join(row) + " |")
    if rule is not None:
        lines.append("")
        lines.append(f"rule: lr*(N) = {rule.formula()}")
        if np.isfinite(rule.exponent_se):
            lines.append(f"exponent {rule.exponent:+.3f} ± {rule.exponent_se:.3f} (standard error over seeds)")
    return "\n".join(lines)
