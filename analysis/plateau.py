"""The early plateau: where a small model's loss sits at the data's unigram loss (torch-free).

Early in training a small language model predicts token frequencies only: its val loss sits near
the unigram cross-entropy of the data, then drops. A law fitted to points on or just past that
plateau mistakes the drop for a power law. Measured with this testbed's trainer (GPT, widths
16-64, depth 2, batch 512 tokens, muP, no warmup; synthetic language and English Wikipedia with
BPE 2048; benchmarks/recipe/README.md section (1)): the first eval 0.1 nats below the unigram
loss came between optimizer steps 51 and 137, the same for every width and on both corpora, and
it moved with steps, not tokens, when the batch changed. So the plateau is counted in optimizer
steps, PLATEAU_STEPS is the default where nothing was measured, and a point counts as clear of
it at PLATEAU_FACTOR times that (the recipe's fitted points are 2-4x past it).

Measure it for another setup (`plateau_end` on a pilot run's curve, against `unigram_loss` of
the data) and pass the measured value where the default would mislead, e.g. with warmup or at
large batch.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PLATEAU_STEPS = 100     # optimizer steps; measured 51-137 (module doc)
PLATEAU_FACTOR = 3      # a point is clear of the plateau at this many times its length
MARGIN_NATS = 0.1       # "clearly below" the unigram loss


def unigram_loss(train_tokens, val_tokens, vocab_size: int, alpha: float = 0.5) -> float:
    """Cross-entropy (nats/token) of the add-`alpha` unigram of `train_tokens`, scored on `val_tokens`."""
    train = np.asarray(train_tokens).ravel().astype(np.int64)
    val = np.asarray(val_tokens).ravel().astype(np.int64)
    if vocab_size < 2 or train.size == 0 or val.size == 0:
        raise ValueError("unigram_loss needs a vocabulary of >= 2 and non-empty train and val tokens")
    if min(train.min(), val.min()) < 0 or max(train.max(), val.max()) >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    p = np.bincount(train, minlength=vocab_size) + alpha
    p = p / p.sum()
    return float(-np.log(p[val]).mean())


def plateau_end(steps: Sequence[int], losses: Sequence[float], unigram: float,
                margin: float = MARGIN_NATS) -> int | None:
    """The first eval step whose loss is `margin` nats below `unigram`; None if the curve never gets there."""
    for s, v in sorted(zip(steps, losses)):
        if np.isfinite(v) and v < unigram - margin:
            return int(s)
    return None


def short_runs(run_steps: Mapping[str, int], plateau_steps: float = PLATEAU_STEPS,
               factor: float = PLATEAU_FACTOR) -> str | None:
    """A warning naming the runs that end within `factor` x the plateau; None when every run clears it."""
    if plateau_steps <= 0:
        raise ValueError(f"plateau_steps must be positive, got {plateau_steps}")
    limit = factor * plateau_steps
    short = {r: s for r, s in run_steps.items() if s < limit}
    if not short:
        return None
    shown = ", ".join(f"{r} ({s} steps)" for r, s in sorted(short.items(), key=lambda kv: kv[1])[:3])
    more = f" and {len(short) - 3} more" if len(short) > 3 else ""
    every = "every run trains" if len(short) == len(run_steps) else f"{len(short)} of {len(run_steps)} runs train"
    return (f"{every} fewer than {limit:.0f} optimizer steps ({factor:g}x an early plateau of "
            f"~{plateau_steps:.0f} steps, where the loss sits at the unigram loss): {shown}{more}. A law fitted "
            "to them mistakes the drop after the plateau for a power law; train longer, or give the plateau "
            "measured for this setup (sweep plan --plateau-steps)")


def fitted_on_plateau(steps, runs, plateau_steps: float = PLATEAU_STEPS,
                      factor: float = PLATEAU_FACTOR) -> str | None:
    """A warning when fitted eval points lie within `factor` x the plateau (steps and runs: one per row).
    A step of 0 means not known (a published table without steps): such rows are not judged."""
    steps = np.asarray(steps, dtype=np.float64)
    runs = np.asarray(runs).astype(str)
    known = steps > 0
    steps, runs = steps[known], runs[known]
    limit = factor * plateau_steps
    near = steps < limit
    if not near.any():
        return None
    n_runs = len(set(runs[near]))
    if near.all():
        lead = f"every fitted point is within {limit:.0f} optimizer steps"
    else:
        lead = f"{int(near.sum())} of {len(steps)} fitted points ({n_runs} runs) are within {limit:.0f} optimizer steps"
    return (f"{lead} ({factor:g}x an early plateau of ~{plateau_steps:.0f} steps): the law may be fitting the drop "
            "after the plateau rather than scaling; leave them out (--min-tokens) or train longer")
