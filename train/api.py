"""`train_run(cfg, out_dir)`: the one entry point sweeps, the demo and the CLI call.

Run-directory rules:
- a new (or empty) directory is created and the resolved config written to config.json before step 0;
- a directory holding the same resolved config resumes from its latest checkpoint, or returns the
  stored summary when the run already finished (completed or diverged);
- a directory holding a different config raises ConfigError naming the first differing key, and
  nothing in it is touched;
- a directory that cannot be written raises ConfigError before any training.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from train import ddp
from train.config import ConfigError, RunConfig, flatten
from train.contract import FINISHED
from train.optim import plan_batches
from train.rundir import CKPT_DIR, CONFIG, METRICS, SUMMARY, atomic_write_json, read_json

# Keys that may change between launches of the same run without changing its curve:
# where it runs and how it is bookkept.
RESUMABLE_KEYS = frozenset({
    "train.device", "train.compile", "train.threads", "train.micro_batch_tokens",
    "data.cache_dir", "data.num_proc",
    "run.name", "run.sweep", "run.tracker", "run.wandb_project", "run.wandb_group",
})


def config_difference(stored: dict[str, Any], cfg: RunConfig) -> str | None:
    """The first key (dotted) where `stored` and `cfg` disagree, ignoring RESUMABLE_KEYS; None if they agree."""
    a, b = flatten(stored), flatten(cfg.to_dict())
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_KEYS:
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            return f"{key} (directory: {a.get(key, '<missing>')!r}, requested: {b.get(key, '<missing>')!r})"
    return None


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"run directory {str(out)!r} is not writable: {e.strerror or e}") from None


def prepare_run_dir(cfg: RunConfig, out: Path, info: ddp.DistInfo) -> dict[str, Any] | None:
    """Check (and on rank 0 create) the run directory; return the stored summary when the run is finished."""
    cfg_path = out / CONFIG
    if cfg_path.exists():
        try:
            stored = read_json(cfg_path)
        except ValueError:
            raise ConfigError(f"{cfg_path} is not valid JSON; refusing to reuse {str(out)!r}") from None
        diff = config_difference(stored, cfg)
        if diff:
            raise ConfigError(f"run directory {str(out)!r} holds a different config: {diff}; "
                              f"use another --out or delete that directory")
        summary_path = out / SUMMARY
        if summary_path.exists():
            summary = read_json(summary_path)
            if summary.get("status") in FINISHED:
                return summary
    elif out.exists() and any(out.iterdir()) and info.is_main:
        stray = sorted(p.name for p in out.iterdir())[:3]
        raise ConfigError(f"run directory {str(out)!r} is not empty and has no {CONFIG} ({', '.join(stray)} ...); "
                          f"refusing to write a run into it")
    if info.is_main:
        _check_writable(out)
        if not cfg_path.exists():
            atomic_write_json(cfg_path, cfg.to_dict())
        # a stale summary of an earlier failed attempt must not outlive this one
        (out / SUMMARY).unlink(missing_ok=True)
    return None


def train_run(cfg: RunConfig, out_dir: str | os.PathLike, progress: Any = None) -> dict[str, Any]:
    """Resolve and validate `cfg`, prepare `out_dir`, train (or resume), and return the summary."""
    cfg = cfg.resolved()
    info = ddp.env_info()
    plan_batches(cfg, info.world_size)  # batch split errors before any work
    if cfg.train.init_from and not Path(cfg.train.init_from).is_file():
        raise ConfigError(f"train.init_from={cfg.train.init_from!r} is not a checkpoint file")
    if cfg.train.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={cfg.train.device!r} but CUDA is not available here")
    out = Path(out_dir)
    done = prepare_run_dir(cfg, out, info)
    if done is not None:
        return done

    from train.loop import train  # torch is imported only when a run actually trains

    try:
        return train(cfg, out, info, progress)
    except BaseException as e:
        # failures before the loop started (data, model) still leave a summary behind
        if info.is_main and not (out / SUMMARY).exists():
            atomic_write_json(out / SUMMARY, {"status": "failed", "run_id": cfg.run_id(),
                                              "error": f"{type(e).__name__}: {e}"})
        raise
    finally:
        ddp.shutdown()


__all__ = ["train_run", "config_difference", "prepare_run_dir", "CKPT_DIR", "METRICS"]
