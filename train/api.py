"""`train_run(cfg, out_dir)`: the one entry point sweeps, the demo and the CLI call.

Run-directory rules:
- one writer at a time: the writing process holds the directory's lock (`train.rundir.RunLock`)
  while it prepares and trains it; a second writer is refused naming the holder's pid;
- a new (or empty) directory is created and the resolved config written to config.json before step 0;
- a directory holding the same resolved config resumes from its latest checkpoint, or returns the
  stored summary when the run already finished (completed or diverged);
- a directory holding a different config raises ConfigError naming the first differing key, and
  nothing in it is touched;
- a directory that cannot be written raises ConfigError before any training;
- a summary.json that cannot be read is moved aside and rebuilt by training on from the
  newest intact checkpoint (a finished run resumes at its final step and only rewrites it).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from train import ddp
from train.config import ConfigError, RunConfig, flatten
from train.contract import FAILED, FINISHED
from train.optim import plan_batches
from train.rundir import (CKPT_DIR, CONFIG, LOCK, METRICS, SUMMARY, NoSpaceLeft, RunLock, atomic_write_json,
                          is_no_space, is_write_leftover, no_space, read_json, remove_write_leftovers)

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


def _foreign_files(out: Path) -> list[str]:
    """Files of a directory without a config that the trainer did not leave: its lock and the
    temporary files of writes a kill interrupted (the first config write included) are its own."""
    return sorted(p.name for p in out.iterdir() if p.name != LOCK and not is_write_leftover(p.name))


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-", suffix=".tmp")  # a kill leaves a leftover
        os.close(fd)
        Path(probe).unlink(missing_ok=True)
    except OSError as e:
        raise ConfigError(f"run directory {str(out)!r} is not writable: {e.strerror or e}") from None


def _stored_summary(out: Path, repair: bool) -> dict[str, Any] | None:
    """The directory's summary.json, or None when absent; an unreadable one is moved aside when
    `repair` (the run then resumes and writes it again)."""
    path = out / SUMMARY
    if not path.exists():
        return None
    try:
        summary = read_json(path)
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
        return summary
    except (ValueError, UnicodeDecodeError):
        if not repair:
            return None
        from train.book import warn
        bad = path.with_name(SUMMARY + ".corrupt")
        os.replace(path, bad)
        warn(f"{path} could not be read (kept as {bad.name}); the run resumes from its checkpoint to rebuild it")
        return None


def inspect_run_dir(cfg: RunConfig, out: Path, info: ddp.DistInfo = ddp.DistInfo(),
                    repair: bool = False) -> dict[str, Any] | None:
    """Checks of a run directory: a different config or (rank 0) a foreign directory raise
    ConfigError; a finished run returns its summary on every rank. Nothing is written, except
    that with `repair` (rank 0, holding the lock) an unreadable summary is moved aside."""
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
        summary = _stored_summary(out, repair=repair and info.is_main)
        if summary is not None and summary.get("status") in FINISHED:
            return summary
    elif info.is_main and out.is_dir() and (stray := _foreign_files(out)[:3]):
        raise ConfigError(f"run directory {str(out)!r} is not empty and has no {CONFIG} ({', '.join(stray)} ...); "
                          f"refusing to write a run into it")
    return None


def prepare_run_dir(cfg: RunConfig, out: Path, info: ddp.DistInfo) -> dict[str, Any] | None:
    """Check (and on rank 0 create) the run directory; return the stored summary when the run is finished.
    Rank 0 calls it holding the directory's lock (`locked_run_dirs`)."""
    done = inspect_run_dir(cfg, out, info, repair=True)
    if done is not None:
        return done
    if info.is_main:
        _check_writable(out)
        cfg_path = out / CONFIG
        if not cfg_path.exists():
            atomic_write_json(cfg_path, cfg.to_dict())
        # a stale summary of an earlier failed attempt must not outlive this one
        (out / SUMMARY).unlink(missing_ok=True)
        for leftover in remove_write_leftovers(out) + remove_write_leftovers(out / CKPT_DIR):
            from train.book import warn
            warn(f"removed {leftover}, a write that an earlier process did not finish")
    return None


@contextlib.contextmanager
def locked_run_dirs(cfgs: Sequence[RunConfig], outs: Sequence[Path], info: ddp.DistInfo) -> Iterator[None]:
    """Hold every run directory's lock (rank 0) for the block: one writer per directory.

    The read-only checks come first, so a refused directory (a different config, someone
    else's files) is left exactly as it was, without even a lock file; a busy one raises
    `train.rundir.RunDirBusy` naming the holder's pid.
    """
    locks: list[RunLock] = []
    try:
        if info.is_main:
            for c, out in zip(cfgs, outs):
                inspect_run_dir(c, out, info)
                _check_writable(out)
                locks.append(RunLock(out).acquire())
        yield
    finally:
        for lock in locks:
            lock.release()


def train_run(cfg: RunConfig, out_dir: str | os.PathLike, progress: Any = None) -> dict[str, Any]:
    """Resolve and validate `cfg`, lock and prepare `out_dir`, train (or resume), and return the summary."""
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
    done = inspect_run_dir(cfg, out, info)
    if done is not None:
        return done
    with locked_run_dirs([cfg], [out], info):
        done = prepare_run_dir(cfg, out, info)
        if done is not None:
            return done

        from train.loop import train  # torch is imported only when a run actually trains

        try:
            return train(cfg, out, info, progress)
        except BaseException as e:
            # failures before the loop started (data, model) still leave a summary behind
            if info.is_main and not (out / SUMMARY).exists():
                _write_failed(out, cfg, e)
            if is_no_space(e) and not isinstance(e, NoSpaceLeft):
                raise no_space(getattr(e, "filename", None) or out / "?", None) from e
            raise
        finally:
            ddp.shutdown()


def _write_failed(out: Path, cfg: RunConfig, e: BaseException) -> None:
    try:
        atomic_write_json(out / SUMMARY, {"status": FAILED, "run_id": cfg.run_id(), "error": f"{type(e).__name__}: {e}"})
    except OSError as err:
        if not is_no_space(err):   # on a full disk the summary cannot be written either; the error says why
            raise


__all__ = ["train_run", "config_difference", "prepare_run_dir", "locked_run_dirs", "CKPT_DIR", "METRICS", "no_space"]
