"""How long a sweep's runs will take here: `testbed sweep plan`'s time column.

A run's time is its fixed start-up, its training steps and its evaluations:

    seconds = startup + train_tokens * fpt / train_rate + eval_tokens * (fpt / 3) / eval_rate

(FLOPs per token `fpt` by the run's convention, training = 3 x forward; rates in FLOP/s).
Each part is measured the way a sweep worker will run it, because each can dominate:
- with the CPU threads a worker gets (`sweeps.local.worker_threads`: cores / jobs unless
  train.threads is set): torch's default thread count on a shared 2-core machine made an
  estimate 13x too optimistic;
- on the run's real batch, not a small probe batch: a GPU step of a few thousand
  tokens is bound by kernel launches and looks ~10x slower per token than the real one;
  the data source's time to make that batch is added;
- the start-up by timing a one-step run through the worker's own command (interpreter,
  imports, data and validation set, loss floor, model, checkpoint, summary), which is
  seconds per run for tiny models;
- evaluations by timing forward passes of the eval batch (32 eval points of 64k tokens
  cost more than the training of the smallest ladder runs).

Rates are measured on the sweep's smallest and largest model of each kind (GPT, LSTM) and
interpolated log-log in FLOPs/token between them (constant outside).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweeps.expand import PlannedRun
from sweeps.local import worker_threads
from train.contract import eval_steps


def eval_tokens(run: PlannedRun) -> int:
    """Validation tokens a run evaluates in all (after its branch step, for a WSD branch)."""
    cfg = run.config
    per_eval = (cfg.eval.tokens // cfg.model.context) * cfg.model.context
    points = [s for s in eval_steps(cfg.steps, cfg.eval.points) if s > run.branch_step]
    return per_eval * len(points)


def train_tokens(run: PlannedRun) -> int:
    cfg = run.config
    return (cfg.steps - run.branch_step) * cfg.train.batch_tokens


@dataclass(frozen=True)
class RateModel:
    """Training and evaluation FLOP/s as functions of FLOPs/token, per model kind (a GPT and an LSTM
    of one FLOP count run at different rates), plus a fixed start-up per run."""
    fpt: tuple[float, ...]
    train_flops_per_s: tuple[float, ...]
    eval_flops_per_s: tuple[float, ...]
    startup_s: float
    how: str
    kinds: tuple[str, ...] = ()     # model kind of each measurement; () or a kind not here: all of them

    def _rate(self, run: PlannedRun, rates: tuple[float, ...]) -> float:
        mine = [i for i, k in enumerate(self.kinds) if k == run.config.model.kind] or list(range(len(self.fpt)))
        order = sorted(mine, key=lambda i: self.fpt[i])
        xs, ys = np.log([self.fpt[i] for i in order]), np.log([rates[i] for i in order])
        return math.exp(np.interp(math.log(run.flops_per_token), xs, ys))

    def parts(self, run: PlannedRun) -> dict[str, float]:
        fpt = run.flops_per_token
        return {"startup": self.startup_s,
                "train": train_tokens(run) * fpt / self._rate(run, self.train_flops_per_s),
                "eval": eval_tokens(run) * fpt / 3.0 / self._rate(run, self.eval_flops_per_s)}

    def seconds(self, run: PlannedRun) -> float:
        return sum(self.parts(run).values())


def fixed_rate(flops_per_s: float) -> RateModel:
    return RateModel((1.0,), (float(flops_per_s),), (float(flops_per_s),), 0.0,
                     f"assumed {flops_per_s:.3g} FLOP/s, no start-up")


def _time_steps(step, min_steps: int, max_steps: int, budget_s: float, sync) -> float:
    """Median seconds of `step()` after one warm-up call."""
    times: list[float] = []
    for i in range(max_steps + 1):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if i:   # the first call warms up allocators and kernels
            times.append(time.perf_counter() - t0)
        if len(times) >= min_steps and sum(times) > budget_s:
            break
    # the median resists hiccups from other processes sharing the machine
    return float(np.median(times))


def _measure_model(run: PlannedRun, min_steps: int, max_steps: int, budget_s: float) -> tuple[float, float]:
    """(training FLOP/s, forward FLOP/s) of one run's model, with the trainer's own step and eval."""
    import torch

    from models import build_model
    from train.ddp import DistInfo
    from train.loop import autocast, lm_loss, resolve_device, train_step
    from train.optim import build_optimizer, plan_batches

    cfg = run.config
    device = resolve_device(cfg.train.device, DistInfo())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    opt = build_optimizer(model, cfg.optim, device)
    plan = plan_batches(cfg, 1)
    amp = lambda: autocast(device, cfg.train.dtype)  # noqa: E731
    batch = torch.randint(0, cfg.model.vocab_size, (plan.global_rows, cfg.model.context + 1), device=device)
    step_s = _time_steps(lambda: train_step(model, opt, batch, plan, amp, cfg.train.grad_clip, False),
                         min_steps, max_steps, budget_s, sync) + _batch_seconds(cfg, plan.global_rows, min_steps)
    eval_rows = cfg.eval.batch_size or plan.micro_rows
    val = batch[:eval_rows] if eval_rows <= plan.global_rows else \
        torch.randint(0, cfg.model.vocab_size, (eval_rows, cfg.model.context + 1), device=device)

    def forward():
        with torch.no_grad():
            lm_loss(model, val, amp())

    model.eval()
    fwd_s = _time_steps(forward, min_steps, max_steps, budget_s / 2, sync)
    fpt = run.flops_per_token
    return (plan.global_rows * cfg.model.context * fpt / step_s,
            len(val) * cfg.model.context * fpt / 3.0 / fwd_s)


def _one_step_command(run: PlannedRun, tmp: Path, i: int) -> list[str]:
    cfg = run.config.with_overrides({"train.tokens": run.config.train.batch_tokens, "eval.points": 1,
                                     "schedule.warmup_steps": 0, "train.init_from": "", "run.ckpt_steps": []})
    cfg_file = tmp / f"config{i}.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    return [sys.executable, "-m", "train", str(cfg_file), "--out", str(tmp / f"run{i}"), "--quiet"]


def _batch_seconds(cfg, rows: int, n: int) -> float:
    """Seconds the run's data source takes to make one training batch (several % of a tiny model's
    step for the synthetic language); 0 for a corpus not tokenized yet."""
    from train.data import build_data
    if cfg.data.source != "synthetic":
        from train.data.text import cache_ready
        if not cache_ready(cfg.data):
            return 0.0
    data = build_data(cfg.data, cfg.model.context)
    index = iter(range(1_000_000))
    return _time_steps(lambda: data.train_batch(next(index), rows), max(n, 3), 50, 0.2, lambda: None)


def measure_startup(run: PlannedRun, threads: int, jobs: int = 1) -> float:
    """Seconds of a worker's fixed cost: `jobs` one-step, one-eval versions of `run` started at once
    through `python -m train`, as the pool starts its workers (median wall time). Their one step and
    eval are negligible next to imports, data and model set-up, checkpoint and summary."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="plan-startup-") as tmp:
        t0 = time.perf_counter()
        procs = [subprocess.Popen(_one_step_command(run, Path(tmp), i), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, env=env) for i in range(max(1, jobs))]
        walls, errors = [], []
        for p in procs:
            _, err = p.communicate(timeout=600)
            walls.append(time.perf_counter() - t0)
            if p.returncode != 0:
                errors.append((err.strip().splitlines() or ["?"])[-1])
    if errors:
        raise RuntimeError(f"timing a one-step run of {run.run_id} failed: {errors[0]}")
    return float(np.median(walls))


_CHILD = """
import json, sys
from sweeps.estimate import measure_in_child
print(json.dumps(measure_in_child(sys.argv[1])))
"""


def measure_in_child(spec_file: str) -> list[list[float]]:
    """A measuring worker (see `measure_rates`): [train FLOP/s, forward FLOP/s] of each model in the file."""
    from train.config import RunConfig, from_dict
    d = json.loads(Path(spec_file).read_text())
    out = []
    for cfg, fpt in zip(d["configs"], d["fpt"], strict=True):
        run = PlannedRun("probe", from_dict(RunConfig, cfg), 1, {}, fpt)
        out.append(list(_measure_model(run, d["min_steps"], d["max_steps"], d["budget_s"])))
    return out


def _measure_concurrently(picks: list[PlannedRun], jobs: int, threads: int, min_steps: int, max_steps: int,
                          budget_s: float) -> list[tuple[float, float]]:
    """Each model measured by `jobs` processes at once, as the sweep's workers will share the machine."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="plan-rates-") as tmp:
        spec_file = Path(tmp) / "probe.json"
        spec_file.write_text(json.dumps({"configs": [r.config.to_dict() for r in picks],
                                         "fpt": [r.flops_per_token for r in picks], "min_steps": min_steps,
                                         "max_steps": max_steps, "budget_s": budget_s}))
        procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(spec_file)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for _ in range(jobs)]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"measuring step times failed: {(err.strip().splitlines() or ['?'])[-1]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    return [(float(np.median([res[i][0] for res in results])), float(np.median([res[i][1] for res in results])))
            for i in range(len(picks))]


def measure_rates(runs: list[PlannedRun], jobs: int = 1, min_steps: int = 3, max_steps: int = 30,
                  budget_s: float = 1.0, startup: bool = True) -> RateModel:
    """Time the sweep's smallest and largest model here as `jobs` workers would run them: with the
    threads each gets and, for jobs > 1, in `jobs` processes at once (sharing cores, caches and memory
    bandwidth as the workers will)."""
    import torch

    by_fpt = sorted(runs, key=lambda r: r.flops_per_token)
    picks: list[PlannedRun] = []
    for kind in dict.fromkeys(r.config.model.kind for r in by_fpt):   # smallest and largest of each kind
        of_kind = [r for r in by_fpt if r.config.model.kind == kind]
        picks += [of_kind[0]] if of_kind[0].flops_per_token == of_kind[-1].flops_per_token else \
            [of_kind[0], of_kind[-1]]
    threads = worker_threads(jobs, by_fpt[0].config.train.threads)
    if jobs > 1:
        measured = _measure_concurrently(picks, jobs, threads, min_steps, max_steps, budget_s)
    else:
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            measured = [_measure_model(r, min_steps, max_steps, budget_s) for r in picks]
        finally:
            torch.set_num_threads(saved)
    data = by_fpt[0].config.data
    if startup and data.source != "synthetic":
        from train.data.text import cache_ready
        startup = cache_ready(data)   # else the one-step run would tokenize the corpus (minutes, once)
        start_note = "" if startup else ", start-up not measured: the corpus is not tokenized yet"
    else:
        start_note = ""
    start_s = measure_startup(by_fpt[0], threads, jobs) if startup else 0.0
    device = picks[0].config.train.device
    how = (f"measured here ({device}, {jobs} worker{'s' if jobs > 1 else ''} of {threads} "
           f"thread{'s' if threads > 1 else ''} at once, {start_s:.1f}s start-up per run{start_note})")
    return RateModel(tuple(r.flops_per_token for r in picks), tuple(m[0] for m in measured),
                     tuple(m[1] for m in measured), start_s, how, kinds=tuple(r.config.model.kind for r in picks))


def schedule(seconds: list[float], jobs: int) -> float:
    """Wall time of runs started in this order, each on the first free of `jobs` workers (the local pool)."""
    free = [0.0] * max(1, jobs)
    for s in seconds:
        i = int(np.argmin(free))
        free[i] += s
    return max(free) if seconds else 0.0
