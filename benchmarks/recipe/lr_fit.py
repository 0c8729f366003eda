"""Optimal LR per shape from an LR sweep (lr_sweep.py's run dirs): a parabola in log2(lr) through the
seed-mean final losses of the best point and its neighbours, then a power law lr* = a * N^b over shapes.

    python benchmarks/recipe/lr_fit.py /work/scratch/h15/lr --batch 512 --tokens 409600
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=409600)
    ap.add_argument("--ref", type=float, default=24736)
    ap.add_argument("--n", default="params_non_embedding")
    a = ap.parse_args()
    pat = re.compile(rf"^w(\d+)d(\d+)-b{a.batch}-t{a.tokens}-lr([0-9.e-]+)-s(\d+)$")
    loss = defaultdict(lambda: defaultdict(dict))
    nn = {}
    for d in Path(a.dir).iterdir():
        m = pat.match(d.name)
        if not m or not (d / "summary.json").exists():
            continue
        s = json.loads((d / "summary.json").read_text())
        if s["status"] != "completed":
            continue
        shape = (int(m.group(1)), int(m.group(2)))
        loss[shape][float(m.group(3))][int(m.group(4))] = s["final_val_loss"]
        nn[shape] = s[a.n] if a.n in s else s["params_total"]
    xs, ys = [], []
    print("| shape | N | seeds | lr grid | best grid lr | parabola lr* | loss at lr* |")
    print("|---|---|---|---|---|---|---|")
    for shape in sorted(loss):
        seeds = set.intersection(*(set(v) for v in loss[shape].values()))
        lrs = sorted(loss[shape])
        mean = np.array([np.mean([loss[shape][lr][s] for s in seeds]) for lr in lrs])
        i = int(np.argmin(mean))
        lo, hi = max(0, i - 1), min(len(lrs), i + 2)
        x = np.log2(lrs[lo:hi])
        if hi - lo == 3:
            c = np.polyfit(x, mean[lo:hi], 2)
            xstar = -c[1] / (2 * c[0]) if c[0] > 0 else x[1]
            xstar = float(np.clip(xstar, x[0], x[-1]))
            lstar = float(np.polyval(c, xstar))
            interior = True
        else:
            xstar, lstar, interior = float(np.log2(lrs[i])), float(mean[i]), False
        print(f"| w{shape[0]} d{shape[1]} | {nn[shape]} | {sorted(seeds)} | {', '.join(f'{l:g}' for l in lrs)} | "
              f"{lrs[i]:g} | {2 ** xstar:.4g}{'' if interior else ' (edge)'} | {lstar:.4f} |")
        if interior:
            xs.append(np.log(nn[shape]))
            ys.append(xstar * np.log(2))
    if len(xs) >= 2:
        b, la = np.polyfit(xs, ys, 1)
        print(f"power law over {len(xs)} interior optima: lr* = {np.exp(la):.4g} * N^{b:.3f}"
              f"  (= {np.exp(la + b * np.log(a.ref)):.4g} * (N / {a.ref:g})^{b:.3f})")


if __name__ == "__main__":
    main()
