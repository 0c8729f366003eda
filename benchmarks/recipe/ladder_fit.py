"""In-ladder backtests for the recipe choices: multi-budget method x N convention x law.

Loads one or more ladder sweep directories (benchmarks/recipe/ladders/*.yaml), splits them by seed
(data.seed) and, per seed, fits each law on every shape except the held-out one (default: the
largest-N depth-2 shape, i.e. an N-extrapolation backtest) and forecasts the held-out shape's
final losses at each budget. Also fits on the whole ladder and reports fitted parameters at
their bounds.

Methods (which runs a fit sees):
  wsd3   a WSD ladder: the stable run and its cooldown branches (3 budgets per shape)
  cos3   a cosine ladder: one cosine run per budget (3 per shape)
  cos1   a cosine ladder, the longest budget only (curve laws only: 1 run per shape)
Final-loss laws (kaplan, chinchilla) use each run's final point; curve laws (kaplan-schedule,
schedule) every eval point from --min-tokens on.

N conventions: total, non_embedding, nonemb_head (non-embedding plus the untied output head,
V x width: Porian et al. 2024; Pearce & Song 2024).

    python benchmarks/recipe/ladder_fit.py --wsd /work/scratch/h15/synth_wsd --cos /work/scratch/h15/synth_cos
"""
from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fitting import fit
from analysis.load import load_runs

CURVE_LAWS = ("kaplan-schedule", "schedule")
CONVS = ("total", "non_embedding", "nonemb_head")


def load(path: str) -> pd.DataFrame:
    t = load_runs(path, n_convention="non_embedding")
    t["N_nonemb_head"] = t["N_non_embedding"] + t["vocab_size"] * t["width"]
    t["shape"] = "w" + t["width"].astype(str) + "d" + t["depth"].astype(str)
    return t


def with_n(t: pd.DataFrame, conv: str) -> pd.DataFrame:
    t = t.copy()
    col = {"total": "N_total", "non_embedding": "N_non_embedding", "nonemb_head": "N_nonemb_head"}[conv]
    t["N"] = t[col]
    t = t.drop(columns=["N_total", "N_non_embedding"])
    t.attrs["n_convention"] = "total" if conv == "total" else "non_embedding"
    t.attrs.pop("n_declared", None)       # this N is the one to fit, whatever the sweep declared
    return t


def rows_for(t: pd.DataFrame, method: str, law: str, min_tokens: float) -> pd.DataFrame:
    if method == "cos1":
        t = t[t["tokens_budget"] == t.groupby("shape")["tokens_budget"].transform("max")]
    if law in CURVE_LAWS:
        if "shared" in t.columns:      # a branch's rows before its branch step are its parent's: once, not twice
            t = t[~t["shared"].astype(bool)]
        return t[(t["D"] >= min_tokens) | t["final"]]
    return t[t["final"]]


def at_bounds(res) -> list[str]:
    return [w.split(" sits")[0] for w in res.warnings if "sits at its bound" in w]


def run(tables: dict[str, pd.DataFrame], laws, convs, holdout: str, min_tokens: float, n_starts: int,
        cross: bool = False):
    """Per (method, seed, law, N convention): fit without the held-out shape, forecast its final losses.

    Without `cross` each method forecasts its own held-out runs; with it, every method forecasts the
    held-out shape's runs of every method (WSD branch finals and the cosine run alike), so methods are
    scored on the same runs.
    """
    out = []
    for method, t in tables.items():
        for seed in sorted(t["data_seed"].unique()):
            ts = t[t["data_seed"] == seed]
            if cross:
                held = pd.concat([u[(u["data_seed"] == seed) & (u["shape"] == holdout)].assign(src=m)
                                  for m, u in tables.items() if m != "cos3"])
                finals = held[held["final"]].drop_duplicates("run")
                finals = finals[(finals["src"] != "cos1") |
                                (finals["tokens_budget"] == finals["tokens_budget"].max())].sort_values(["src", "D"])
            else:
                held = ts[ts["shape"] == holdout].assign(src=method)
                finals = held[held["final"]].sort_values("D")
                if method == "cos1":
                    finals = finals.tail(1)
            for law in laws:
                if method == "cos1" and law not in CURVE_LAWS:
                    continue
                for conv in convs:
                    tn = with_n(ts, conv)
                    train = rows_for(tn[tn["shape"] != holdout], method, law, min_tokens)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        r = fit(train, law, select="all", n_starts=n_starts)
                        full = fit(rows_for(tn, method, law, min_tokens), law, select="all", n_starts=n_starts)
                    fin = with_n(finals, conv)
                    cov = {c: fin[c].to_numpy(float) for c in r.law_obj.covariates}
                    pred = np.asarray(r.predict(**cov), float)
                    err = (pred - fin["loss"].to_numpy(float)) / fin["loss"].to_numpy(float)
                    out.append({"method": method, "seed": int(seed), "law": law, "conv": conv,
                                "held": [f"{a}@{int(d)}" for a, d in zip(fin["src"], fin["tokens_budget"])],
                                "errs": [round(float(e), 5) for e in err],
                                "mean_abs": float(np.mean(np.abs(err))), "max_abs": float(np.max(np.abs(err))),
                                "bounds_backtest": at_bounds(r), "bounds_full": at_bounds(full),
                                "params_full": {k: float(v) for k, v in full.params.items()}})
    return out


def main() -> None:
    logging.disable(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--wsd", default="")
    ap.add_argument("--cos", default="")
    ap.add_argument("--laws", default="kaplan,chinchilla,kaplan-schedule,schedule")
    ap.add_argument("--convs", default=",".join(CONVS))
    ap.add_argument("--holdout", default="w48d2")
    ap.add_argument("--min-tokens", type=float, default=153600)
    ap.add_argument("--n-starts", type=int, default=8)
    ap.add_argument("--methods", default="wsd3,cos3,cos1")
    ap.add_argument("--cross", action="store_true", help="every method forecasts every method's held-out runs")
    ap.add_argument("--exclude", default="", help="shapes left out of every fit, e.g. w32d4")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    tables = {}
    methods = a.methods.split(",")
    if a.wsd and "wsd3" in methods:
        tables["wsd3"] = load(a.wsd)
    if a.cos:
        c = load(a.cos)
        for m in ("cos3", "cos1"):
            if m in methods:
                tables[m] = c
    if a.exclude:
        tables = {m: t[~t["shape"].isin(a.exclude.split(","))] for m, t in tables.items()}
    rows = run(tables, a.laws.split(","), a.convs.split(","), a.holdout, a.min_tokens, a.n_starts, a.cross)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    df = pd.DataFrame(rows)
    print(f"held-out runs per seed: {df['held'].iloc[0]}")
    print(f"held-out shape {a.holdout}; excluded {a.exclude or '-'}; curve laws fitted on eval points from {a.min_tokens:.0f} tokens")
    srcs = sorted({h.split("@")[0] for hs in df["held"] for h in hs})
    print("| method | law | N conv | seeds | mean abs err (held-out finals) | "
          + " | ".join(f"mean abs ({s} runs)" for s in srcs) + " | max abs err | signed errs per seed | "
          "params at bound (full ladder fits) |")
    print("|---" * (8 + len(srcs)) + "|")
    for (m, law, conv), g in df.groupby(["method", "law", "conv"], sort=False):
        bounds = sorted({b for bs in g["bounds_full"] for b in bs})
        nb = sum(bool(bs) for bs in g["bounds_full"])
        signed = "; ".join(" ".join(f"{e:+.2%}" for e in errs) for errs in g["errs"])
        per_src = []
        for s_ in srcs:
            e = [abs(x) for hs, es in zip(g["held"], g["errs"]) for h, x in zip(hs, es) if h.startswith(s_ + "@")]
            per_src.append(f"{np.mean(e):.2%}" if e else "-")
        print(f"| {m} | {law} | {conv} | {len(g)} | {g['mean_abs'].mean():.2%} | " + " | ".join(per_src)
              + f" | {g['max_abs'].max():.2%} | {signed} | {nb}/{len(g)}: {', '.join(bounds) or '-'} |")


if __name__ == "__main__":
    main()
