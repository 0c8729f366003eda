"""Does the synthetic language scale? Train tiny GPTs over (N, D) on CPU and print val loss vs the exact floor.

Each (width, tokens) cell is one run through `train.api.train_run` (cosine schedule
to the cell's own token budget), so a row of the table is a clean D-scan at fixed N
and a column an N-scan at fixed D. The floor is the Bayes-optimal loss on the same
validation windows (`DataSource.loss_floor`), so "gap" = val loss - floor is the
reducible loss a scaling law should fit.

  python benchmarks/synthetic_scaling.py                       # 4 widths x 2 budgets: ~10 min of runs on 2 cores
  python benchmarks/synthetic_scaling.py --widths 16,32 --tokens 250000 --set data.synthetic.topics=256
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time

import numpy as np

from train.api import train_run
from train.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="16,32,64,128", help="GPT widths (head_dim 16)")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--tokens", default="250000,1000000", help="token budgets (add 4000000 for a third column)")
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], help="extra dotted overrides, e.g. data.synthetic.topics=256")
    ap.add_argument("--out", default="", help="keep the run directories here (default: a temporary folder)")
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    budgets = [int(float(t)) for t in args.tokens.split(",")]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or tmp
        for w in widths:
            for tokens in budgets:
                cfg = load_config(overrides=[
                    f"model.width={w}", f"model.depth={args.depth}", "model.head_dim=16", f"model.context={args.context}",
                    f"train.tokens={tokens}", f"train.batch_tokens={args.batch_tokens}", f"train.threads={args.threads}",
                    "train.device=cpu", f"optim.lr={args.lr}", "schedule.kind=cosine",
                    f"schedule.warmup_steps={max(1, min(50, tokens // args.batch_tokens // 10))}",
                    "eval.points=8", "eval.tokens=32768", *args.set]).resolved()
                t0 = time.perf_counter()
                s = train_run(cfg, f"{root}/{cfg.run_id()}")
                rows.append(dict(width=w, N=s["params_non_embedding"], D=tokens, loss=s["final_val_loss"],
                                 floor=s["loss_floor"], status=s["status"], wall=time.perf_counter() - t0))
                r = rows[-1]
                print(f"  width {w:4d}  N {r['N']:>9,}  D {tokens:>10,}  val {r['loss']:.4f}  "
                      f"floor {r['floor']:.4f}  {r['status']}  {r['wall']:.0f}s", flush=True)
    report(rows, widths, budgets)


def report(rows: list[dict], widths: list[int], budgets: list[int]) -> None:
    floor = rows[0]["floor"]
    print(f"\nfinal val loss (nats/token); exact floor {floor:.4f}; ln V = {math.log(load_config().data.vocab_size):.4f}")
    head = "| N (non-emb) | " + " | ".join(f"D={d:,}" for d in budgets) + " |"
    print(head)
    print("|" + "---|" * (len(budgets) + 1))
    by = {(r["width"], r["D"]): r for r in rows}
    for w in widths:
        n = by[(w, budgets[0])]["N"]
        print(f"| {n:,} (w{w}) | " + " | ".join(f"{by[(w, d)]['loss']:.4f}" for d in budgets) + " |")
    # local log-log slopes of the reducible loss: d log(gap) / d log(N) and / d log(D)
    gap = np.array([[by[(w, d)]["loss"] - floor for d in budgets] for w in widths])
    Ns = np.array([by[(w, budgets[0])]["N"] for w in widths], dtype=float)
    if len(widths) > 1:
        sN = np.diff(np.log(gap), axis=0) / np.diff(np.log(Ns))[:, None]
        print("\nlocal exponent -dlog(gap)/dlog(N) between successive widths, per D:")
        for i in range(len(widths) - 1):
            print(f"  w{widths[i]}->w{widths[i + 1]}: " + "  ".join(f"{-x:.3f}" for x in sN[i]))
    if len(budgets) > 1:
        sD = np.diff(np.log(gap), axis=1) / np.diff(np.log(np.array(budgets, float)))[None, :]
        print("local exponent -dlog(gap)/dlog(D) between successive budgets, per width:")
        for i, w in enumerate(widths):
            print(f"  w{w}: " + "  ".join(f"{-x:.3f}" for x in sD[i]))


if __name__ == "__main__":
    main()
