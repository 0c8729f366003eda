"""First look at forecast errors of a recipe ladder on targets of several shapes.

Per seed: fit every law on the seed's whole ladder (a benchmarks/recipe/ladders sweep directory), forecast each
target's final loss, write the forecasts to <out>/seed<k>/forecasts.json BEFORE the targets
train, then train the targets (the ladder's own config at the target shape, the LR rule at its N,
the ladder's schedule kind over the target's own length) and score them.

Targets are "w<width>d<depth>" shapes at --ratio times the compute (exact FLOPs) of the ladder's
largest run; tokens are whole batches.

    python benchmarks/recipe/first_look.py --ladder /work/scratch/h15/synth_wsd --out /work/scratch/h15/fl_synth \
        --seeds 0,1,2 --shapes w64d2,w128d2 --ratio 10
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ladder_fit import CURVE_LAWS, at_bounds, load, rows_for, with_n  # noqa: E402
from runs import summary  # noqa: E402

from analysis.fitting import fit  # noqa: E402
from analysis.schedule import run_schedule_features  # noqa: E402
from models.counting import flops_per_token, param_counts  # noqa: E402
from sweeps.spec import evaluate_rule  # noqa: E402
from train.config import RunConfig  # noqa: E402


def target_config(ladder_cfg: dict, width: int, depth: int, ratio: float, c_max: float, lr_rule: str) -> RunConfig:
    d = json.loads(json.dumps(ladder_cfg))
    d["model"].update(width=width, depth=depth, heads=0)
    d["run"].update(name=f"target-w{width}-d{depth}", ckpt_steps=[], sweep="")
    d["train"]["init_from"] = ""
    cfg = RunConfig.from_dict(d)
    n = param_counts(cfg.model)["non_embedding"]
    fpt = flops_per_token(cfg.model, cfg.run.flop_convention)
    bt = cfg.train.batch_tokens
    tokens = max(1, math.ceil(ratio * c_max / fpt / bt)) * bt
    return cfg.with_overrides({"optim.lr": evaluate_rule(lr_rule, n), "train.tokens": tokens}).resolved()


def covariates(cfg: RunConfig, conv: str, law: str) -> dict:
    pc = param_counts(cfg.model)
    n = {"total": pc["total"], "non_embedding": pc["non_embedding"],
         "nonemb_head": pc["non_embedding"] + cfg.model.vocab_size * cfg.model.width}[conv]
    if law in CURVE_LAWS:
        s1, s2 = run_schedule_features(cfg, [cfg.steps])     # the fit's own S1/S2 (one source)
        return {"N": np.array([n], float), "S1": s1, "S2": s2}
    return {"N": np.array([n], float), "D": np.array([float(cfg.train.tokens)])}


def main() -> None:
    logging.disable(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--ladder", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--shapes", default="w64d2,w128d2")
    ap.add_argument("--ratio", type=float, default=10.0)
    ap.add_argument("--laws", default="kaplan,kaplan-schedule,chinchilla,schedule")
    ap.add_argument("--convs", default="non_embedding,nonemb_head,total")
    ap.add_argument("--lr-rule", default="0.013 * (N / 24736) ** 0.12")
    ap.add_argument("--min-tokens", type=float, default=153600)
    ap.add_argument("--method", default="wsd3")
    ap.add_argument("--exclude", default="", help="ladder shapes left out of the fits, e.g. w32d4")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    shapes = [tuple(int(x) for x in s[1:].split("d")) for s in a.shapes.split(",")]
    laws, convs = a.laws.split(","), a.convs.split(",")
    table = load(a.ladder)
    if a.exclude:
        table = table[~table["shape"].isin(a.exclude.split(","))]
    out = Path(a.out)
    jobs = {}
    plans = {}
    for seed in seeds:
        ts = table[table["data_seed"] == seed]
        fin = ts[ts["final"]]
        c_max = float(fin["C"].max())
        ladder_cfg = json.loads((Path(fin.loc[fin["C"].idxmax(), "path"]) / "config.json").read_text())
        targets = {f"w{w}d{d}": target_config(ladder_cfg, w, d, a.ratio, c_max, a.lr_rule) for w, d in shapes}
        sd = out / f"seed{seed}"
        sd.mkdir(parents=True, exist_ok=True)
        fc_path = sd / "forecasts.json"
        # shapes added to a seed later get their forecasts written, before they train, next to the
        # earlier ones (those stay as they were written)
        old = json.loads(fc_path.read_text()) if fc_path.exists() else {"targets": {}, "forecasts": {}}
        new = {k: cfg for k, cfg in targets.items() if k not in old["targets"]}
        if new:
            fcs = old["forecasts"]
            for law in laws:
                for conv in convs:
                    tn = with_n(ts, conv)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        r = fit(rows_for(tn, a.method, law, a.min_tokens), law, select="all")
                    fc = fcs.setdefault(f"{law}|{conv}", {"bounds": at_bounds(r), "pred": {},
                                                          "params": {k: float(v) for k, v in r.params.items()}})
                    fc["pred"].update({k: float(np.asarray(r.predict(**covariates(cfg, conv, law)))[0])
                                       for k, cfg in new.items()})
            fc_path.write_text(json.dumps({"c_max": c_max, "ratio": a.ratio,
                                           "targets": {**old["targets"], **{
                                               k: {"run_id": c.run_id(), "tokens": c.train.tokens, "lr": c.optim.lr}
                                               for k, c in new.items()}},
                                           "forecasts": fcs}, indent=1))
        plans[seed] = (sd, targets)
        for k, cfg in targets.items():
            (sd / f"{k}.json").write_text(json.dumps(cfg.to_dict()))
            jobs[(seed, k)] = (sd, cfg)
    if not a.no_train:
        _train(jobs, out, a.jobs)   # two at a time
    rows = []
    for seed, (sd, targets) in plans.items():
        fcs = json.loads((sd / "forecasts.json").read_text())["forecasts"]
        for k, cfg in targets.items():
            s_path = sd / k / "summary.json"
            if not s_path.exists():
                continue
            sm = json.loads(s_path.read_text())
            actual = sm["final_val_loss"]
            for key, fc in fcs.items():
                law, conv = key.split("|")
                p = fc["pred"][k]
                rows.append({"seed": seed, "target": k, "tokens": cfg.train.tokens, "law": law, "conv": conv,
                             "actual": actual, "pred": p, "err": (p - actual) / actual, "bounds": fc["bounds"],
                             "wall_s": sm.get("wall_time_s")})
    if not rows:
        print("no trained targets yet")
        return
    df = pd.DataFrame(rows)
    (out / "cases.json").write_text(df.to_json(orient="records", indent=1))
    print(f"ladder {a.ladder}; ratio {a.ratio:g}x; seeds {seeds}")
    print("| law | N conv | target | tokens | seeds | signed errors | median abs | max abs | fits with a param at bound |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (law, conv, tgt), g in df.groupby(["law", "conv", "target"], sort=False):
        e = g["err"].to_numpy()
        nb = sum(bool(b) for b in g["bounds"])
        bs = sorted({x for b in g["bounds"] for x in b})
        print(f"| {law} | {conv} | {tgt} | {g['tokens'].iloc[0]} | {len(g)} | "
              f"{' '.join(f'{x:+.2%}' for x in e)} | {np.median(np.abs(e)):.2%} | {np.abs(e).max():.2%} | "
              f"{nb}/{len(g)} {', '.join(bs)} |")
    print("actual:", {f"s{r.seed}/{r.target}": round(r.actual, 4) for r in df.drop_duplicates(["seed", "target"]).itertuples()},
          "wall s:", {f"s{r.seed}/{r.target}": r.wall_s for r in df.drop_duplicates(["seed", "target"]).itertuples()})


def _train(jobs: dict, out: Path, n_jobs: int) -> None:
    import os
    import subprocess
    import time
    todo = []
    for (seed, k), (sd, cfg) in jobs.items():
        d = sd / k
        if (d / "summary.json").exists() and summary(d)["status"] == "completed":
            continue
        todo.append(((seed, -cfg.train.tokens * flops_per_token(cfg.model, "exact")), sd, k))
    todo.sort(key=lambda x: x[0])   # seed by seed (a partial result covers whole seeds), largest first
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = []
    while todo or running:
        while todo and len(running) < n_jobs:
            _, sd, k = todo.pop(0)
            log = open(sd / f"{k}.log", "w")
            running.append((sd, k, log, subprocess.Popen([sys.executable, "-m", "train", str(sd / f"{k}.json"),
                                                          "--out", str(sd / k), "train.threads=1"],
                                                         stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(1)
        for item in list(running):
            if item[3].poll() is not None:
                item[2].close()
                running.remove(item)


if __name__ == "__main__":
    main()
