"""Pool first_look.py cases (cases.json) per law and N convention over target shapes and seeds.

    python benchmarks/recipe/first_look_summary.py /work/scratch/h15/fl_synth10 [--conv total]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    df = pd.concat([pd.DataFrame(json.loads((Path(d) / "cases.json").read_text())) for d in a.dirs])
    print("| law | N conv | cases | median abs err | max abs err | mean signed err | fits with a param at bound |")
    print("|---|---|---|---|---|---|---|")
    for (law, conv), g in df.groupby(["law", "conv"], sort=False):
        e = g["err"].to_numpy()
        fits = g.drop_duplicates("seed")
        nb = sum(bool(b) for b in fits["bounds"])
        bs = sorted({x for b in fits["bounds"] for x in b})
        print(f"| {law} | {conv} | {len(e)} | {np.median(np.abs(e)):.2%} | {np.abs(e).max():.2%} | {e.mean():+.2%} | "
              f"{nb}/{len(fits)} {', '.join(bs)} |")


if __name__ == "__main__":
    main()
