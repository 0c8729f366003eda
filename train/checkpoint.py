"""Checkpoints for exact resume and branching: save atomically, keep a few, load them back.

A checkpoint holds the model and optimizer state, the step (updates done), the
data position (the index of the next global training batch: data sources are
pure functions of that index), every RNG state, the trainer's running state
(first loss, elapsed time) and the tracker's state, plus the resolved config
it was written under so branches can check compatibility.
"""
from __future__ import annotations

import io
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
    """Every RNG state of this process. CUDA: the current device's generator only, so a run
    resumes on any number of visible GPUs (each process trains on one device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`'s states. Torch accepts only CPU ByteTensors here, wherever the
    checkpoint's tensors were mapped; an older checkpoint's per-GPU list gives the current
    device's entry (or the first, when it was written with more GPUs than are visible now)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):
            here = torch.cuda.current_device()
            cuda = cuda[here] if here < len(cuda) else cuda[0]
        torch.cuda.set_rng_state(_cpu_bytes(cuda))


def _cpu_bytes(t: torch.Tensor) -> torch.Tensor:
    if t.device.type == "meta":
        raise ValueError("an RNG state was loaded onto the meta device; load checkpoints with map_location='cpu'")
    return t.to("cpu", torch.uint8)


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
    """torch.save through an atomic write: never a half-written checkpoint.

    The checkpoint is serialized in memory first, so a full disk fails a plain file write
    (torch's own writer reports it as "unexpected pos ...") and the error can say how many
    bytes were needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    atomic_write(path, lambda f: f.write(data), len(data))


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, damaged, or not a checkpoint); names the file."""


REQUIRED = ("model", "optimizer", "step", "data_index", "rng")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, every tensor on the CPU.

    The CPU is where torch's RNG setters need their states, whatever device the run
    trains on; `load_state_dict` of the model and the optimizer copies the rest onto
    the training device. Raises CheckpointError naming the file when it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        # weights_only=False: the RNG states are numpy/python objects written by this trainer
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {e})") from None
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a training checkpoint (no {missing[0]!r})")
    return state


def quarantine(path: Path) -> Path:
    """Move an unreadable checkpoint aside (kept for inspection, no longer a resume candidate)."""
    bad = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, bad)
    except FileNotFoundError:   # another rank of the same run moved it first
        pass
    return bad
