"""One run's bookkeeping, shared by the single-run and the packed trainer.

Both trainers keep one `RunBook` per run and call the same few methods on it; they
differ only in how an optimizer step is taken (train/loop.py: one model, possibly
under DDP; train/packed.py: K models stacked into one). A book owns, for its run:

- the schedule: lr curve, eval steps, train-row cadence, checkpoint policy;
- the metrics rows and trackers (`log_train`, `log_eval`);
- the divergence check: a non-finite loss, or one above run.diverge_factor x the
  first logged loss, stops the run (`check`);
- the checkpoint payload: the trainer supplies model and optimizer state, the book
  adds the step, data position, RNG, running totals, tracker state and config;
- where a resume starts (`find_resume`: the newest step every run of the pack holds
  an intact checkpoint for; a damaged file is moved aside and named), and the
  realignment of metrics.jsonl with that checkpoint;
- summary.json (`finish`).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from models.counting import flops_per_token, param_counts
from train import checkpoint as ckpt
from train.config import ConfigError, RunConfig
from train.contract import CKPT_DIR, FAILED, METRICS, SUMMARY, eval_steps
from train.data.documents import DataError
from train.provenance import provenance
from train.rundir import atomic_write_json, is_no_space, salvage_metrics, write_metrics
from train.schedules import lr_curve
from train.trackers import open_trackers

Progress = Callable[[dict[str, Any]], None]


def warn(message: str) -> None:
    """One line on stderr: something was repaired or changed on the run's behalf."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def finite_or_none(x: float) -> float | None:
    """x, or None for NaN/inf (JSON rows hold null for a diverged loss)."""
    return x if math.isfinite(x) else None


@dataclass
class RunBook:
    """Bookkeeping of one run (see the module doc). `write` is False on DDP ranks other than 0."""
    cfg: RunConfig
    out: Path
    t_start: float
    write: bool = True
    dtype: str = "float32"          # the precision the run trains in (see train.loop.precision)
    first_loss: float | None = None
    elapsed: float = 0.0            # seconds of earlier attempts (from the checkpoint)
    train_s: float = 0.0            # seconds spent in optimizer steps, all attempts (evals excluded)
    train_tokens: int = 0           # tokens those seconds trained
    last_train: float | None = None
    last_val: float | None = None
    tracker_state: dict[str, Any] | None = None
    trackers: Any = None
    summary: dict[str, Any] | None = None
    step: int = 0                   # the step being taken (the last one begun)
    data_id: str | None = None      # `train.data.fingerprint` of the data this attempt trains on
    lrs: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        c = self.cfg
        self.total = c.steps
        self.lrs = lr_curve(self.total, c.optim.lr, c.schedule)
        self.evals = set(eval_steps(self.total, c.eval.points))
        self.log_every = c.run.log_every or max(1, self.total // 200)
        self.policy = ckpt.CheckpointPolicy.from_config(c.run.ckpt_every, c.run.ckpt_keep, c.run.ckpt_steps, self.total)
        self.fpt = flops_per_token(c.model, c.run.flop_convention)
        self.counts = param_counts(c.model)

    # ---- the schedule -------------------------------------------------
    def lr(self, step: int) -> float:
        return float(self.lrs[step - 1])

    def logs_at(self, step: int) -> bool:
        return step == 1 or step % self.log_every == 0 or step == self.total

    def evaluates_at(self, step: int) -> bool:
        return step in self.evals

    def saves_at(self, step: int) -> bool:
        return self.policy.due(step)

    def syncs_at(self, step: int) -> bool:
        """Steps where the trainer reads losses back from the device (a host sync on CUDA)."""
        return self.logs_at(step) or self.evaluates_at(step) or self.saves_at(step)

    # ---- resume -------------------------------------------------------
    def start(self, step: int, state: dict[str, Any] | None, branch: Path | None = None) -> None:
        """Continue from `state` (the checkpoint of `step`; None: a fresh start), then open the trackers.

        metrics.jsonl keeps the rows up to `step`: rows past it belong to an attempt that no
        longer exists (resume), or to the parent's own future (a branch, whose rows up to the
        branch point come from the parent's metrics). Checkpoints past `step` are from an
        attempt being redone and are deleted.
        """
        metrics = self.out / METRICS
        self.step = step
        if state is not None:
            if state["data_index"] != step:
                raise ValueError(f"checkpoint of {self.out}: data position {state['data_index']} does not match step {step}")
            saved = state.get("data_id")   # None: a checkpoint from before data fingerprints
            if saved and self.data_id and saved != self.data_id:
                where = f"the parent checkpoint {branch}" if branch is not None else f"the checkpoint of {self.out}"
                raise DataError(
                    f"{where} (step {step}) was trained on other tokens than data.source={self.cfg.data.source!r} "
                    f"gives now (data fingerprint {saved} there, {self.data_id} here): the corpus, its token cache "
                    "or the tokenizer changed under the same config, and the model would continue on tokens it never "
                    "saw. Train a new run directory, or restore the data the run started on")
            self.first_loss, self.elapsed = state["first_loss"], state["elapsed_s"]
            if branch is None:
                self.train_s = state.get("train_s", 0.0)
                self.train_tokens = state.get("train_tokens", 0)
                self.tracker_state = state.get("tracker")
        if self.write:
            source = branch.parent.parent / METRICS if branch is not None else metrics
            rows = [r for r in self._intact_rows(source) if r["step"] <= step] if step else []
            if step or metrics.exists():
                write_metrics(metrics, rows)
            for s, p in ckpt.list_checkpoints(self.out / CKPT_DIR):
                if s > step:
                    p.unlink(missing_ok=True)
            self.last_train = next((r["loss"] for r in reversed(rows) if r["kind"] == "train"), None)
            self.last_val = next((r["val_loss"] for r in reversed(rows) if r["kind"] == "eval"), None)
            self.trackers = open_trackers(metrics, self.cfg.run, self.cfg.run_id(), self.cfg.to_dict(), self.tracker_state)

    def _intact_rows(self, path: Path) -> list[dict[str, Any]]:
        rows, damaged = salvage_metrics(path)
        if damaged:
            keep = path.with_name(path.name + ".damaged")
            keep.write_bytes(path.read_bytes())
            warn(f"{path}: line(s) {', '.join(map(str, damaged[:5]))} could not be read and were dropped "
                 f"(the damaged file is kept as {keep.name}); the run continues from its intact rows")
        return rows

    # ---- rows -----------------------------------------------------------
    def now(self) -> float:
        return self.elapsed + time.perf_counter() - self.t_start

    def row(self, kind: str, step: int, **values: Any) -> dict[str, Any]:
        """One metrics.jsonl row (DESIGN.md: kind, step, tokens, flops, lr, time_s, plus the loss)."""
        tokens = step * self.cfg.train.batch_tokens
        return {"kind": kind, "step": step, "tokens": tokens, "flops": tokens * self.fpt,
                "lr": self.lr(step) if step else 0.0, "time_s": round(self.now(), 4), **values}

    def check(self, step: int, worst: float, loss: float) -> str | None:
        """Log the train row when due; return why the run diverged, or None.

        `worst` is the largest step loss since the last check, `loss` this step's (both the
        mean over ranks). The first checked loss is the reference for run.diverge_factor.
        """
        if self.first_loss is None:
            self.first_loss = loss
        factor = self.cfg.run.diverge_factor
        diverged = not (math.isfinite(worst) and worst <= factor * self.first_loss)
        if self.logs_at(step) or diverged:
            self.last_train = finite_or_none(loss)
            if self.trackers:
                self.trackers.log(self.row("train", step, loss=self.last_train))
        if diverged:
            return (f"train loss {worst:.4g} at step {step} (first loss {self.first_loss:.4g}, "
                    f"run.diverge_factor={factor})")
        return None

    def log_eval(self, step: int, val_loss: float, progress: Progress | None) -> None:
        self.last_val = val_loss
        r = self.row("eval", step, val_loss=finite_or_none(val_loss))
        if self.trackers:
            self.trackers.log(r)
        if progress and self.write:
            progress({**r, "loss": self.last_train, "total_steps": self.total, "run_id": self.cfg.run_id()})

    def count_step(self, seconds: float) -> None:
        self.train_s += seconds
        self.train_tokens += self.cfg.train.batch_tokens

    # ---- checkpoints and the summary ---------------------------------
    def save(self, step: int, model_and_optimizer: dict[str, Any]) -> None:
        """Write the checkpoint of `step` (nothing on ranks that do not write)."""
        if not self.write:
            return
        ckpt.save_checkpoint(ckpt.ckpt_path(self.out / CKPT_DIR, step), {
            **model_and_optimizer, "step": step, "data_index": step, "first_loss": self.first_loss,
            "elapsed_s": self.now(), "train_s": self.train_s, "train_tokens": self.train_tokens,
            "rng": ckpt.rng_state(), "tracker": self.trackers.state() if self.trackers else {},
            "config": self.cfg.to_dict(), "dtype": self.dtype, "data_id": self.data_id})

    def prune(self) -> None:
        if self.write:
            self.policy.prune(self.out / CKPT_DIR)

    def finish(self, status: str, step: int, *, device: str, world_size: int, data: dict[str, Any],
               floor: float | None, **extra: Any) -> dict[str, Any]:
        """The run's summary.json (DESIGN.md's run directory), written by the writing rank."""
        c, counts = self.cfg, self.counts
        self.summary = {
            "status": status, "run_id": c.run_id(),
            "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
            "params_embedding": counts["embedding"], "flops_per_token": self.fpt,
            "flop_convention": c.run.flop_convention,
            "final_train_loss": self.last_train, "final_val_loss": self.last_val, "loss_floor": floor,
            "tokens": step * c.train.batch_tokens, "steps": step, "total_steps": self.total,
            "wall_time_s": round(self.now(), 3),
            "tokens_per_s": round(self.train_tokens / max(self.train_s, 1e-9), 1),
            "device": device, "world_size": world_size, "dtype": self.dtype, "data": data,
            **provenance(), **extra}
        if counts.get("vocab_padding"):
            self.summary["params_vocab_padding"] = counts["vocab_padding"]
        if self.write:
            atomic_write_json(self.out / SUMMARY, self.summary)
        return self.summary

    def fail(self, finish: Callable[..., Any], error: BaseException) -> None:
        """`finish(self, FAILED, step, error=...)`: the summary of a run stopped by `error`. On a
        full disk the summary cannot be written either; the error itself then says what happened."""
        try:
            finish(self, FAILED, self.step, error=f"{type(error).__name__}: {error}")
        except OSError as e:
            if not is_no_space(e):
                raise

    def close(self) -> None:
        if self.trackers:
            self.trackers.close()
            self.trackers = None


def find_resume(books: Sequence[RunBook]) -> tuple[int, list[dict[str, Any] | None]]:
    """The newest step at which every book holds an intact checkpoint, and those checkpoints.

    A checkpoint that cannot be read (truncated by a full disk, damaged) is moved aside as
    `<name>.corrupt`, named in a warning, and the previous one is tried. (0, [None...]): none.
    """
    while True:
        common: set[int] | None = None
        for b in books:
            steps = {s for s, _ in ckpt.list_checkpoints(b.out / CKPT_DIR)}
            common = steps if common is None else common & steps
        if not common:
            return 0, [None] * len(books)
        step = max(common)
        states: list[dict[str, Any] | None] = []
        for b in books:
            path = ckpt.ckpt_path(b.out / CKPT_DIR, step)
            try:
                states.append(ckpt.load_checkpoint(path))
            except ckpt.CheckpointError as e:
                bad = ckpt.quarantine(path)
                warn(f"{e}; moved it to {bad.name}, resuming from an earlier checkpoint")
                break
        else:
            return step, states


def load_branch(cfg: RunConfig) -> tuple[int, dict[str, Any]]:
    """The `train.init_from` checkpoint of a branch, after checking it is compatible."""
    path = Path(cfg.train.init_from)
    state = ckpt.load_checkpoint(path)
    step = state["step"]
    check_branch_compatible(cfg, state["config"], step)
    return step, state


def check_branch_compatible(cfg: RunConfig, parent: dict[str, Any], step: int) -> None:
    """A branch must share everything that shaped the parent's first `step` updates."""
    mine = cfg.to_dict()
    for section in ("model", "data", "optim"):
        for k, v in mine[section].items():
            if parent[section].get(k) != v:
                raise ConfigError(
                    f"train.init_from: {section}.{k} differs from the parent run ({parent[section].get(k)!r} there, {v!r} here)")
    for key in (("run", "seed"), ("train", "batch_tokens")):
        if parent[key[0]][key[1]] != mine[key[0]][key[1]]:
            raise ConfigError(f"train.init_from: {'.'.join(key)} differs from the parent run")
    parent_cfg = RunConfig.from_dict(parent)
    if step > cfg.steps:
        raise ConfigError(f"train.init_from: the checkpoint is at step {step}, past this run's {cfg.steps} steps")
    ours = lr_curve(cfg.steps, cfg.optim.lr, cfg.schedule)[:step]
    theirs = lr_curve(parent_cfg.steps, parent_cfg.optim.lr, parent_cfg.schedule)[:step]
    if not np.array_equal(ours, theirs):
        first = int(np.argmax(ours != theirs)) + 1
        raise ConfigError(
            f"train.init_from: schedule differs from the parent run's at step {first} "
            f"(lr {theirs[first - 1]:.6g} there, {ours[first - 1]:.6g} here); a WSD cooldown must branch "
            f"inside the stable phase of both runs")
