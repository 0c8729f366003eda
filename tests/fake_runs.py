"""Hand-written run directories for analysis tests (no training, no torch).

Each run's eval curve follows a Chinchilla law L = E + A/N^alpha + B/D^beta with
known constants, so loading, fitting and backtesting can be checked against the
truth in milliseconds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from train.config import RunConfig

TRUE = {"E": 1.8, "A": 20.0, "B": 50.0, "alpha": 0.32, "beta": 0.28}


def chinchilla_loss(N, D, p=TRUE):
    return p["E"] + p["A"] / np.asarray(N, float) ** p["alpha"] + p["B"] / np.asarray(D, float) ** p["beta"]


def write_run(root: Path, name: str, *, n_params: float, tokens: int, width: int = 64, depth: int = 2,
              batch_tokens: int = 4096, status: str | None = "completed", points: int = 8,
              noise: float = 0.0, seed: int = 0, law=chinchilla_loss, schedule: str = "constant") -> Path:
    """A run directory whose eval losses follow `law(N, D)` (times 1 + noise·ε)."""
    cfg = RunConfig().with_overrides({
        "model.width": width, "model.depth": depth, "model.context": 64,
        "train.tokens": tokens, "train.batch_tokens": batch_tokens,
        "schedule.kind": schedule, "run.seed": seed, "run.name": name,
    }).resolved()
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    steps_total = cfg.steps
    steps = np.unique(np.geomspace(1, steps_total, points).round().astype(int))
    rng = np.random.default_rng(seed)
    fpt = 6.0 * n_params
    lines = []
    for s in steps:
        toks = int(s) * batch_tokens
        lines.append({"kind": "train", "step": int(s), "tokens": toks, "flops": fpt * toks, "lr": 3e-3,
                      "time_s": 0.1 * s, "loss": 9.9})
        loss = float(law(n_params, toks)) * (1 + noise * rng.standard_normal())
        lines.append({"kind": "eval", "step": int(s), "tokens": toks, "flops": fpt * toks, "lr": 3e-3,
                      "time_s": 0.1 * s, "val_loss": loss})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if status is not None:
        final = lines[-1]["val_loss"]
        summary = {"status": status, "params_total": int(n_params), "params_non_embedding": int(0.8 * n_params),
                   "params_embedding": int(n_params) - int(0.8 * n_params), "flops_per_token": fpt,
                   "flop_convention": "6N", "final_train_loss": final, "final_val_loss": final,
                   "loss_floor": 1.5, "tokens": steps_total * batch_tokens, "steps": steps_total}
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def write_sweep(root: Path, sizes=(1e5, 3e5, 1e6, 3e6, 1e7), token_mults=(5, 20, 80), noise: float = 0.0,
                batch_tokens: int = 4096) -> Path:
    """A sweep directory: every size trained at several tokens-per-parameter ratios."""
    root.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(sizes):
        for j, m in enumerate(token_mults):
            tokens = int(math.ceil(m * n / batch_tokens) * batch_tokens)
            write_run(root, f"gpt-n{i}-m{j}", n_params=n, tokens=tokens, noise=noise, seed=10 * i + j,
                      batch_tokens=batch_tokens)
    return root
