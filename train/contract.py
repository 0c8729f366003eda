"""The contract every package shares, in one torch-free module.

Rules that the trainer, the sweep tools and the analysis must agree on, written once
here so that torch-free code (`sweeps`, `analysis`) imports them instead of keeping a
copy: the run directory's file names, checkpoint file names, run statuses, exit codes,
the eval-step rule, and the names of the N and FLOP conventions. Importing this module
imports numpy only.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# --- run directory (DESIGN.md, "Run directory") ------------------------------------------
CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CKPT_DIR = "ckpt"

CKPT_PATTERN = re.compile(r"^step_(\d{8})\.pt$")


def ckpt_name(step: int) -> str:
    """File name of the checkpoint written after `step` updates."""
    return f"step_{step:08d}.pt"


def ckpt_file(run_dir: str | Path, step: int) -> Path:
    """Checkpoint file of `step` in a run directory."""
    return Path(run_dir) / CKPT_DIR / ckpt_name(step)


# --- run statuses (summary.json "status") -------------------------------------------------
COMPLETED = "completed"
DIVERGED = "diverged"
FAILED = "failed"
FINISHED = (COMPLETED, DIVERGED)    # a rerun does not train these again
STATUSES = (COMPLETED, DIVERGED, FAILED)

# --- exit codes of every command ----------------------------------------------------------
EXIT_OK = 0
EXIT_FAILED = 1        # a run failed, or some runs of a sweep did not complete
EXIT_BAD_INPUT = 2     # bad config, flag, file or directory: nothing was trained or written
EXIT_DIVERGED = 3      # the run diverged (its summary says so)
EXIT_NO_SPACE = 4      # a write failed on a full disk: free space and rerun the same command (it resumes)
EXIT_OUT_OF_MEMORY = 5  # the device ran out of memory even at one sequence per micro-batch: retrying cannot help
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): rerun the same command to resume
NOT_RETRIED = (EXIT_BAD_INPUT, EXIT_NO_SPACE, EXIT_OUT_OF_MEMORY)   # a retry would fail the same way


class ConfigError(ValueError):
    """A bad config key or value (exit EXIT_BAD_INPUT); the message names the key. Here, not in
    train.config, so that the data modules train.config reads can raise it without importing it."""


EXIT_BY_STATUS = {COMPLETED: EXIT_OK, FAILED: EXIT_FAILED, DIVERGED: EXIT_DIVERGED}

# --- counting conventions -----------------------------------------------------------------
N_CONVENTIONS = ("total", "non_embedding")      # which parameter count a law reads as N
FLOP_CONVENTIONS = ("6N", "kaplan", "exact")    # training FLOPs per token (models/counting.py)


# --- eval points --------------------------------------------------------------------------
def eval_steps(total_steps: int, points: int) -> list[int]:
    """`points` log-spaced steps in [1, total_steps], rounded, deduplicated, plus the last step.

    Step 0 is not evaluated: a curve point at zero tokens has no place on the log axes
    scaling fits use. The trainer evaluates at these steps and forecasts of a planned run's
    curve read the law at them, so the two always agree.
    """
    steps = np.unique(np.rint(np.geomspace(1, total_steps, num=points)).astype(int))
    return sorted(set(steps.tolist()) | {total_steps})
