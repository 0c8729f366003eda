"""Learning-rate schedules as pure functions of the step (torch-free).

Step convention: step s = 1..total_steps is the optimizer update being
applied, so `lr_at(1, ...)` is the lr of the first update and
`lr_at(total_steps, ...)` the lr of the last one. Every schedule starts with
a linear warmup from 0 over `warmup_steps` (lr = peak * s / warmup_steps).

Kinds after warmup, with p in (0, 1] the progress through the decay phase:
- constant: peak.
- cosine:   final + (peak - final) * (1 + cos(pi p)) / 2 (Loshchilov & Hutter 2017), p over the post-warmup steps.
- linear:   final + (peak - final) * (1 - p).
- wsd:      warmup-stable-decay (Hu et al. 2024, MiniCPM; Hägele et al. 2024): peak for every
            s <= total * (1 - decay_frac), then a decay to final over the last decay_frac of the
            run with shape linear (1 - p), sqrt (1 - sqrt(p), Hägele et al. 2024 eq. 1) or cosine.
            The stable phase depends only on s, never on total, so a cooldown branched from a
            longer stable run reproduces a from-scratch run of the shorter length exactly.
- inv_sqrt: peak * min(1, sqrt(timescale / s)) (the reciprocal-square-root decay of Vaswani et
            al. 2017); timescale defaults to warmup_steps (continuous at the end of warmup) or 1.
"""
from __future__ import annotations

import math

import numpy as np

from train.config import ScheduleConfig


def _decay_shape(p: np.ndarray, shape: str) -> np.ndarray:
    """Fraction of (peak - final) remaining at decay progress p in [0, 1]."""
    if shape == "linear":
        return 1.0 - p
    if shape == "sqrt":
        return 1.0 - np.sqrt(p)
    if shape == "cosine":
        return 0.5 * (1.0 + np.cos(math.pi * p))
    raise ValueError(f"schedule.decay_shape must be linear, sqrt or cosine, got {shape!r}")


def _lr(steps: np.ndarray, total_steps: int, peak_lr: float, sched: ScheduleConfig) -> np.ndarray:
    s = steps.astype(np.float64)
    warm = sched.warmup_steps
    final = peak_lr * sched.final_frac
    kind = sched.kind
    if kind == "constant":
        lr = np.full_like(s, peak_lr)
    elif kind in ("cosine", "linear"):
        p = np.clip((s - warm) / max(total_steps - warm, 1), 0.0, 1.0)
        lr = final + (peak_lr - final) * _decay_shape(p, kind)
    elif kind == "wsd":
        # decay starts after step total * (1 - decay_frac) (a float: no rounding that would
        # make the stable phase depend on the total), and never inside the warmup
        start = max(total_steps * (1.0 - sched.decay_frac), float(warm))
        p = np.clip((s - start) / max(total_steps - start, 1e-12), 0.0, 1.0)
        # the stable phase is exactly the peak (final + (peak - final) can differ by an ulp)
        lr = np.where(s <= start, peak_lr, final + (peak_lr - final) * _decay_shape(p, sched.decay_shape))
    elif kind == "inv_sqrt":
        timescale = sched.timescale or max(warm, 1)
        # capped at the peak: with timescale > warmup_steps the lr stays at the peak until
        # step == timescale, then decays as 1/sqrt(step)
        lr = peak_lr * np.sqrt(np.minimum(timescale / np.maximum(s, 1.0), 1.0))
    else:
        raise ValueError(f"schedule.kind must be constant, cosine, linear, wsd or inv_sqrt, got {kind!r}")
    if warm > 0:
        lr = np.where(s <= warm, peak_lr * s / warm, lr)
    return lr


def lr_curve(total_steps: int, peak_lr: float, sched: ScheduleConfig) -> np.ndarray:
    """The lr of updates 1..total_steps (index i holds step i + 1)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return _lr(np.arange(1, total_steps + 1), total_steps, peak_lr, sched)


def lr_at(step: int, total_steps: int, peak_lr: float, sched: ScheduleConfig) -> float:
    """The lr of update `step` (1-based) in a run of `total_steps` updates."""
    if not 1 <= step <= total_steps:
        raise ValueError(f"step must lie in [1, {total_steps}], got {step}")
    return float(_lr(np.array([step]), total_steps, peak_lr, sched)[0])
