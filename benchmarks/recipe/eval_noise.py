"""Eval noise vs eval tokens: how much does a run's val loss move with the val sample?

For each given run directory, loads its last checkpoint and evaluates it on a large pool of
held-out windows (synthetic: generated; text: the val shard), then for each eval size n reports
the relative std of the mean loss over disjoint n-token chunks (the noise of one eval of n
tokens), and for pairs of runs the relative std of their chunk-mean *difference* (what moves
a ladder's shape; a fixed val set shared by all runs cancels the common part).

    python benchmarks/recipe/eval_noise.py RUN_DIR [RUN_DIR ...] --pool 1048576
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models import build_model
from train.checkpoint import latest_checkpoint, load_checkpoint
from train.config import RunConfig
from train.data import build_data


def window_losses(run: Path, pool: int) -> np.ndarray:
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    model = build_model(cfg.model)
    model.load_state_dict(load_checkpoint(latest_checkpoint(run / "ckpt"))["model"])
    model.eval()
    src = build_data(cfg.data, cfg.model.context)
    val = torch.as_tensor(src.val_array(pool))
    out = []
    with torch.no_grad():
        for i in range(0, len(val), 256):
            x = val[i:i + 256]
            logits = model(x[:, :-1])[0][..., :cfg.model.vocab_size]
            l = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
            out.append(l.view(len(x), -1).mean(1).numpy())
    return np.concatenate(out)  # mean loss per window (context tokens each)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--pool", type=int, default=1 << 20)
    ap.add_argument("--sizes", default="8192,16384,32768,65536,131072,262144")
    a = ap.parse_args()
    torch.set_num_threads(1)
    runs = [Path(r) for r in a.runs]
    wl = {r: window_losses(r, a.pool) for r in runs}
    ctx = json.loads((runs[0] / "config.json").read_text())["model"]["context"]
    sizes = [int(s) for s in a.sizes.split(",")]
    print(f"pool {a.pool} tokens ({len(next(iter(wl.values())))} windows of {ctx})")
    print("| run | pool mean | " + " | ".join(f"{n // 1024}k: rel std" for n in sizes) + " |")
    print("|---" * (len(sizes) + 2) + "|")
    for r, w in wl.items():
        cells = []
        for n in sizes:
            k = n // ctx
            m = w[: len(w) // k * k].reshape(-1, k).mean(1)
            cells.append(f"{m.std(ddof=1) / w.mean():.3%} ({len(m)})")
        print(f"| {r.name} | {w.mean():.4f} | " + " | ".join(cells) + " |")
    for i in range(len(runs) - 1):
        a_, b_ = wl[runs[i]], wl[runs[-1]]
        cells = []
        for n in sizes:
            k = n // ctx
            d = (a_ - b_)[: len(a_) // k * k].reshape(-1, k).mean(1)
            cells.append(f"{d.std(ddof=1) / b_.mean():.3%}")
        print(f"| diff {runs[i].name} - {runs[-1].name} | {(a_ - b_).mean():.4f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
