"""The learning-rate schedule's features S1 and S2 (Tissue et al. 2024), for the laws that read them.

`run_schedule_features(config, steps)` is the one place a run's S1/S2 come from: the
loader calls it on each run directory's config.json when it builds the table a law is
fitted on, and a forecast calls it on the planned run's config, so a fitted law and its
forecast read the same numbers. It rebuilds the run's per-step lr with
`train.schedules.lr_curve` (the trainer's own schedule, torch-free) and passes it to
`schedule_features`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.signal import lfilter

DECAY = 0.999    # the momentum-like decay of the annealing area (Tissue et al. 2024 use 0.999)


def run_schedule_features(config: Any, steps, decay: float = DECAY) -> tuple[np.ndarray, np.ndarray]:
    """(S1, S2) of a run at `steps` (1..its optimizer steps), from its config.

    `config` is a run config (`train.config.RunConfig`) or its dict (a run directory's
    config.json). Only the schedule, the peak lr, the token budget and the batch size are
    read: the lr of every step is the trainer's (`train.schedules.lr_curve`), and each
    step counts `train.batch_tokens` tokens, the unit of S1 and S2.
    """
    from train.config import RunConfig, ScheduleConfig, from_dict
    from train.schedules import lr_curve

    d = config.to_dict() if isinstance(config, RunConfig) else config
    try:
        sched = from_dict(ScheduleConfig, dict(d["schedule"]), prefix="schedule.")
        peak, tokens, batch = float(d["optim"]["lr"]), int(d["train"]["tokens"]), int(d["train"]["batch_tokens"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"the run config lacks {e} (S1/S2 need schedule, optim.lr, train.tokens and "
                         "train.batch_tokens)") from None
    total = max(1, math.ceil(tokens / batch))    # the trainer's step count (RunConfig.steps)
    return schedule_features(lr_curve(total, peak, sched), steps, decay, tokens_per_step=batch)


def schedule_features(lr_curve: np.ndarray, steps: np.ndarray | int, decay: float = DECAY, *,
                      tokens_per_step: float = 1.0, peak: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Forward area S1 and annealing area S2 of a learning-rate curve at the given steps.

    `lr_curve[i - 1]` is the learning rate used for step i (as `train.schedules.lr_curve`
    returns it); `steps` are step counts (1..len(lr_curve)). Following Tissue et al. 2024
    (Eqs. 1-3):

        S1(s) = sum_{i<=s} eta_i
        m_i   = decay * m_{i-1} + (eta_{i-1} - eta_i)
        S2(s) = sum_{i<=s} m_i  = sum_{i<=s} sum_{k<=i} (eta_{k-1} - eta_k) decay^(i-k)

    Warmup is not annealing: the paper fits curves after warmup, so here eta_{k-1} - eta_k
    is counted only from the step where the learning rate first reaches its peak.

    Units: the learning rate is divided by `peak` (default: the curve's maximum) and each
    step counts `tokens_per_step`, so S1 is "peak-lr-equivalent tokens" (equal to D under a
    constant lr) and runs with different peak lr or batch size land on one axis.
    """
    eta = np.asarray(lr_curve, dtype=np.float64)
    if eta.ndim != 1 or eta.size == 0:
        raise ValueError("lr_curve must be a non-empty 1-D array (the lr used at steps 1..T)")
    if not np.all(np.isfinite(eta)) or np.any(eta < 0):
        raise ValueError("lr_curve must be finite and non-negative")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must lie in [0, 1), got {decay}")
    peak = float(eta.max()) if peak is None else float(peak)
    if peak <= 0:
        raise ValueError("lr_curve peak must be positive")
    s = np.atleast_1d(np.asarray(steps))
    if np.any(s < 1) or np.any(s > eta.size) or np.any(s != np.round(s)):
        raise ValueError(f"steps must be integers in [1, {eta.size}]")
    eta = eta / peak
    drop = np.zeros_like(eta)
    drop[1:] = eta[:-1] - eta[1:]
    drop[: int(np.argmax(eta)) + 1] = 0.0     # no annealing credit before the peak (warmup)
    # m_i = decay * m_{i-1} + drop_i: a first-order linear filter; scipy.signal.lfilter runs it in C.
    m = lfilter([1.0], [1.0, -decay], drop)
    S1 = np.cumsum(eta) * tokens_per_step
    S2 = np.cumsum(m) * tokens_per_step
    idx = s.astype(int) - 1
    return S1[idx], S2[idx]
