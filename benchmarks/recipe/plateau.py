"""Where does the early plateau end, and what moves it?

Short runs of one small GPT on the synthetic language (or real text) under a few
optimizer/parametrization variants; prints, per variant, the first step and token
count at which the val loss falls `margin` nats below the data's unigram loss, and
the loss at a few token counts.

    python benchmarks/recipe/plateau.py --out /work/scratch/h15/plateau --set base
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs import curve, first_below, launch  # noqa: E402

SYN = {"model.kind": "gpt", "model.width": 32, "model.depth": 2, "model.context": 64, "model.head_dim": 8,
       "data.vocab_size": 512, "train.batch_tokens": 1024, "train.tokens": 204800, "train.device": "cpu",
       "optim.lr": 3e-3, "schedule.kind": "cosine", "schedule.warmup_steps": 10, "eval.points": 24,
       "eval.tokens": 32768}

SETS = {
    "base": {
        "lr3e-3": {},
        "lr1e-2": {"optim.lr": 1e-2},
        "lr3e-2": {"optim.lr": 3e-2},
        "untied-lr3e-3": {"model.tie_embeddings": False},
        "untied-lr1e-2": {"model.tie_embeddings": False, "optim.lr": 1e-2},
        "untied-lr3e-2": {"model.tie_embeddings": False, "optim.lr": 3e-2},
    },
    # untied embeddings (best above): what else moves the plateau?
    "knobs": {
        "u-bs256": {"model.tie_embeddings": False, "train.batch_tokens": 256, "schedule.warmup_steps": 40},
        "u-bs512": {"model.tie_embeddings": False, "train.batch_tokens": 512, "schedule.warmup_steps": 20},
        "u-bs2048": {"model.tie_embeddings": False, "train.batch_tokens": 2048, "schedule.warmup_steps": 5},
        "u-wd0": {"model.tie_embeddings": False, "optim.weight_decay": 0.0},
        "u-warm0": {"model.tie_embeddings": False, "schedule.warmup_steps": 0},
        "u-b2-0.99": {"model.tie_embeddings": False, "optim.beta2": 0.99},
        "u-init0.1": {"model.tie_embeddings": False, "model.init_std": 0.1},
        "u-const": {"model.tie_embeddings": False, "schedule.kind": "constant"},
    },
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", default="base")
    ap.add_argument("--base", default="", help="JSON dict of overrides on the synthetic base")
    ap.add_argument("--unigram", type=float, default=4.8498, help="the data's unigram loss (nats)")
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    base = {**SYN, **(json.loads(a.base) if a.base else {})}
    variants = SETS[a.set]
    launch(variants, a.out, base, jobs=a.jobs)
    print(f"| variant | first below unigram-{a.margin} (step, tokens) | loss@25k | loss@50k | loss@100k | final |")
    for name in variants:
        rows = curve(Path(a.out) / name)
        at = lambda t: min(rows, key=lambda r: abs(r["tokens"] - t))["val_loss"]  # noqa: E731
        print(f"| {name} | {first_below(rows, a.unigram - a.margin)} | {at(25e3):.3f} | {at(5e4):.3f} | "
              f"{at(1e5):.3f} | {rows[-1]['val_loss']:.3f} |")


if __name__ == "__main__":
    main()
