"""Checkpoints for exact resume and branching: save atomically, keep a few, load them back.

A checkpoint holds the model and optimizer state, the step (updates done), the
data position (the index of the next global training batch: data sources are
pure functions of that index), every RNG state, the trainer's running state
(first loss, elapsed time) and the tracker's state, plus the resolved config
it was written under so branches can check compatibility.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.contract import CKPT_PATTERN, ckpt_name
from train.rundir import atomic_write

def ckpt_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / ckpt_name(step)


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint, oldest first (temporary files are ignored)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), d / name) for name in os.listdir(d) if (m := CKPT_PATTERN.match(name))]
    return sorted(found)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class CheckpointPolicy:
    """Which steps are checkpointed and which checkpoints survive.

    Periodic checkpoints every `every` steps, the last `keep` of them kept;
    `pinned` steps (WSD branch points) and the final step are always kept.
    """
    every: int
    keep: int
    pinned: frozenset[int]
    final: int

    @classmethod
    def from_config(cls, every: int, keep: int, pinned: tuple[int, ...], total_steps: int) -> "CheckpointPolicy":
        every = every or max(1, total_steps // 10)   # 0: about ten per run
        return cls(every, keep, frozenset(pinned), total_steps)

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step in self.pinned or step == self.final

    def prune(self, ckpt_dir: str | Path) -> None:
        periodic = [(s, p) for s, p in list_checkpoints(ckpt_dir) if s not in self.pinned and s != self.final]
        for _, path in periodic[: max(0, len(periodic) - self.keep)]:
            path.unlink(missing_ok=True)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save through an atomic write: never a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    # weights_only=False: the RNG states are numpy/python objects written by this trainer
    return torch.load(path, map_location=map_location, weights_only=False)
