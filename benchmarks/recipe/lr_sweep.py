"""LR (and batch) sweeps for the ladder recipe: final val loss per (shape, batch, lr, seed).

    python benchmarks/recipe/lr_sweep.py --out /work/scratch/h15/lr --widths 16 --lrs 2e-3,4e-3,8e-3 --seeds 0,1

Base: GPT, head_dim 8, context 64, untied embeddings, muP with base width 16 (`--param sp` for SP),
cosine to 0.1x with `--warmup` steps, synthetic vocab 512 (or `--data wiki` for the Wikipedia slice,
`--data shakespeare` for tiny_shakespeare as bytes).
data.seed = run.seed = seed. Prints one row per (width, depth, batch, tokens) with the mean final loss per
LR over seeds and each seed's loss, and the best LR.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs import launch, summary  # noqa: E402

WIKI = {"data.source": "/work/scratch/h15/wiki/wiki40.txt", "data.tokenizer": "bpe", "data.vocab_size": 2048,
        "data.val_frac": 0.03, "data.cache_dir": "/work/scratch/h15/cache", "data.num_proc": 1}
# tiny_shakespeare as bytes: 1.04M training tokens and 73k held out by document (BPE 2048 would leave 0.36M)
SHAKESPEARE = {"data.source": "/work/shared/data/tiny_shakespeare/input.txt", "data.tokenizer": "byte",
               "data.vocab_size": 256, "data.val_frac": 0.07, "data.cache_dir": "/work/scratch/h15g/cache",
               "data.num_proc": 1}


def base(a) -> dict:
    b = {"model.kind": "gpt", "model.context": 64, "model.head_dim": 8, "model.tie_embeddings": False,
         "model.parametrization": a.param, "train.device": "cpu", "schedule.kind": a.schedule,
         "schedule.warmup_steps": a.warmup, "schedule.final_frac": 0.1 if a.schedule != "wsd" else 0.0,
         "eval.points": a.points, "eval.tokens": a.eval_tokens, "run.flop_convention": "exact",
         "data.vocab_size": 512}
    if a.param == "mup":
        b["model.mup_base_width"] = a.base_width
    if a.data == "wiki":
        b.update(WIKI)
    elif a.data == "shakespeare":
        b.update(SHAKESPEARE)
    if a.extra:
        b.update(json.loads(a.extra))
    return b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--widths", default="16")
    ap.add_argument("--depths", default="2")
    ap.add_argument("--lrs", default="4e-3,8e-3,1.6e-2")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--batches", default="512")
    ap.add_argument("--tokens", default="409600")
    ap.add_argument("--param", default="mup")
    ap.add_argument("--base-width", type=int, default=16)
    ap.add_argument("--schedule", default="cosine")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--eval-tokens", type=int, default=32768)
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--extra", default="", help="JSON dict of more overrides")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    ws = [int(x) for x in a.widths.split(",")]
    ds = [int(x) for x in a.depths.split(",")]
    lrs = [float(x) for x in a.lrs.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    bss = [int(x) for x in a.batches.split(",")]
    toks = [int(float(x)) for x in a.tokens.split(",")]
    shapes = list(zip(ws, ds)) if len(ds) == len(ws) and len(ds) > 1 else [(w, d) for w in ws for d in ds]
    variants = {}
    for (w, d) in shapes:
        for bs in bss:
            for t in toks:
                for lr in lrs:
                    for s in seeds:
                        variants[f"w{w}d{d}-b{bs}-t{t}-lr{lr:g}-s{s}"] = {
                            "model.width": w, "model.depth": d, "train.batch_tokens": bs, "train.tokens": t,
                            "optim.lr": lr, "data.seed": s, "run.seed": s}
    launch(variants, a.out, base(a), jobs=a.jobs)
    print(f"param={a.param} schedule={a.schedule} warmup={a.warmup} data={a.data} extra={a.extra}")
    print("| shape | batch | tokens | N_nonemb | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best | wall s (best lr) |")
    print("|---" * (len(lrs) + 6) + "|")
    for (w, d) in shapes:
        for bs in bss:
            for t in toks:
                cells, means = [], []
                n = None
                for lr in lrs:
                    ls = []
                    for s in seeds:
                        sm = summary(Path(a.out) / f"w{w}d{d}-b{bs}-t{t}-lr{lr:g}-s{s}")
                        n = sm["params_non_embedding"]
                        ls.append(sm["final_val_loss"] if sm["status"] == "completed" else float("nan"))
                    means.append(np.mean(ls))
                    cells.append(f"{np.mean(ls):.4f} ({', '.join(f'{x:.3f}' for x in ls)})")
                i = int(np.nanargmin(means))
                wall = np.mean([summary(Path(a.out) / f"w{w}d{d}-b{bs}-t{t}-lr{lrs[i]:g}-s{s}")["wall_time_s"]
                                for s in seeds])
                print(f"| w{w} d{d} | {bs} | {t} | {n} | " + " | ".join(cells) + f" | {lrs[i]:g} | {wall:.1f} |")


if __name__ == "__main__":
    main()
