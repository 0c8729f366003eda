"""Throughput of K packed models vs the same K models trained one after another.

    python benchmarks/packing.py                      # CPU defaults: ~1M and ~10M params, K in 4 8
    python benchmarks/packing.py --ks 4 16 32 --batch 32 --compile   # on a GPU (bf16 autocast there)

Each timed step is one optimizer update as the trainers do it: forward, loss,
backward, gradient clipping, AdamW. "sequential" is one ordinary GPT stepped as
`train.loop` steps it (torch AdamW, `clip_grad_norm_`); K such runs one after
another take K times as long, so their total throughput is this one's.
"packed" runs K models as one `PackedGPT` with `train.packed`'s per-model AdamW
and clipping; its throughput counts the tokens of all K models.
Optionally ("--procs") the K models also run as K processes sharing the device;
those always run eager (K processes would each pay their own compile), and the
driver waits for them at most --timeout seconds.

With --compile, the sequential model compiles once per shape and each pack once
per K (a pack of another size is another shape).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import time

import torch

from models import build_model
from models.config import ModelConfig
from models.counting import param_counts
from models.packed import PackedGPT
from train.config import OptimConfig
from train.loop import autocast, lm_loss
from train.optim import build_optimizer, clip_grads, set_lr
from train.packed import packed_lm_loss
from train.packed_adamw import PackedAdamW, clip_per_model, model_hparams

SHAPES = {"1M": dict(width=128, depth=4), "10M": dict(width=320, depth=8)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _block_s(step, n_steps: int, device: torch.device) -> float:
    """Mean seconds per call of `step` over one block of calls."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / n_steps


def best_of(steps: dict, args, device: torch.device) -> dict:
    """Warm every step function up, then time blocks alternating between them and keep each
    one's fastest block: on a shared, noisy machine the alternation exposes all of them to
    the same load and the minimum is the least disturbed measurement."""
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    best = {name: float("inf") for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            best[name] = min(best[name], _block_s(step, args.steps, device))
    return best


def _models(cfg: ModelConfig, k: int, device: torch.device) -> list[torch.nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build_model(cfg).to(device))
    return out


def sequential_step(cfg, batch_BxT1, device, args, compile: bool | None = None):
    """One optimizer step of one ordinary GPT, as `train.loop` takes it."""
    model = _models(cfg, 1, device)[0]
    opt = build_optimizer(model, OptimConfig(fused=device.type == "cuda"), device)
    fwd = torch.compile(model) if (args.compile if compile is None else compile) else model

    def step():
        set_lr(opt, 1e-3)
        lm_loss(fwd, batch_BxT1, autocast(device, "auto")).backward()
        clip_grads(model, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def packed_step(cfg, k, batch_BxT1, device, args):
    """One optimizer step of K models packed into one, as `train.packed` takes it."""
    singles = _models(cfg, k, device)
    opt_cfg = OptimConfig()
    model = PackedGPT.from_models(singles)
    params = dict(model.named_parameters())
    opt = PackedAdamW(params, [model_hparams(s, build_optimizer(s, opt_cfg, device), opt_cfg) for s in singles])
    fwd = torch.compile(model) if args.compile else model
    max_norm = torch.ones(k, device=device)
    lr = torch.full((k,), 1e-3, device=device)
    n = {"step": 0}

    def step():
        n["step"] += 1
        packed_lm_loss(fwd, batch_BxT1, autocast(device, "auto")).sum().backward()
        grad_KxP = opt.flat_grad()
        clip_per_model(grad_KxP, max_norm)
        opt.step(n["step"], lr, grad_KxP)
        opt.zero_grad()
    return step


def vmap_step(cfg, k, batch_BxT1, device, args):
    """The alternative to a hand-stacked model: `torch.func.stack_module_state` + `vmap` over the
    ordinary GPT (same per-model AdamW and clipping), for the comparison column."""
    singles = _models(cfg, k, device)
    params, buffers = torch.func.stack_module_state(singles)
    base = singles[0]
    opt_cfg = OptimConfig()
    opt = PackedAdamW(params, [model_hparams(s, build_optimizer(s, opt_cfg, device), opt_cfg) for s in singles])
    max_norm, lr = torch.ones(k, device=device), torch.full((k,), 1e-3, device=device)
    x_BxT, y_BxT = batch_BxT1[:, :-1], batch_BxT1[:, 1:]

    def logits(p, b, x):
        return torch.func.functional_call(base, (p, b), (x,))[0]
    forward = torch.func.vmap(logits, in_dims=(0, 0, None))
    n = {"step": 0}

    def step():
        n["step"] += 1
        with autocast(device, "auto"):
            logits_KxBxTxV = forward(params, buffers, x_BxT)
        nll = torch.nn.functional.cross_entropy(
            logits_KxBxTxV.float().flatten(0, 2), y_BxT.reshape(1, -1).expand(k, -1).flatten(), reduction="none")
        nll.view(k, -1).mean(dim=1).sum().backward()
        grad_KxP = opt.flat_grad()
        clip_per_model(grad_KxP, max_norm)
        opt.step(n["step"], lr, grad_KxP)
        opt.zero_grad()
    return step


def _proc_worker(cfg, batch, device_str, args, k, barrier, q) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads() // k))
    device = torch.device(device_str)
    step = sequential_step(cfg, batch.to(device), device, args, compile=False)
    for _ in range(args.warmup):
        step()
    barrier.wait()   # all K processes time the same stretch of wall clock
    q.put(_block_s(step, args.steps * args.repeats, device))


def collect(q, n: int, timeout: float, what: str) -> list:
    """n results from a queue, waiting at most `timeout` seconds in all (a worker that died
    never answers; without a limit the driver would wait forever)."""
    deadline = time.monotonic() + timeout
    out = []
    for _ in range(n):
        try:
            out.append(q.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise TimeoutError(f"{what}: {len(out)} of {n} results after {timeout:.0f} s") from None
    return out


def processes_step_s(cfg, k, batch_BxT1, device, args) -> float:
    """Seconds per step when K single-model processes share the device at once (the slowest one);
    waits at most args.timeout seconds for them."""
    ctx = mp.get_context("spawn")
    q, barrier = ctx.Queue(), ctx.Barrier(k, timeout=args.timeout)
    procs = [ctx.Process(target=_proc_worker, args=(cfg, batch_BxT1.cpu(), str(device), args, k, barrier, q))
             for _ in range(k)]
    for p in procs:
        p.start()
    try:
        times = collect(q, k, args.timeout, f"{k} worker processes")
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    return max(times)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--ks", nargs="+", type=int, default=[4, 8])
    ap.add_argument("--batch", type=int, default=16, help="sequences per model per step")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=3, help="timed blocks per variant (the fastest is kept)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="torch.compile the models (GPU)")
    ap.add_argument("--procs", action="store_true", help="also time K processes sharing the device")
    ap.add_argument("--vmap", action="store_true", help="also time stack_module_state + vmap over the GPT")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the --procs workers")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {args.batch} x {args.context} tokens per model per step; V={args.vocab}; "
          f"compile={args.compile}")
    header = f"{'shape':>5} {'params':>7} {'K':>3} {'seq tok/s':>10} {'packed tok/s':>12} {'speedup':>7}"
    header += f" {'vmap tok/s':>10}" if args.vmap else ""
    header += f" {'procs tok/s':>11} {'vs procs':>8}" if args.procs else ""
    print(header)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, args.vocab, (args.batch, args.context + 1), generator=gen).to(device)
    for shape in args.shapes:
        cfg = ModelConfig(context=args.context, vocab_size=args.vocab, vocab_pad_multiple=64, **SHAPES[shape])
        n = param_counts(cfg)["total"]
        single = sequential_step(cfg, batch, device, args)
        for k in args.ks:
            variants = {"seq": single, "packed": packed_step(cfg, k, batch, device, args)}
            if args.vmap:
                variants["vmap"] = vmap_step(cfg, k, batch, device, args)
            t = best_of(variants, args, device)
            tokens = k * args.batch * args.context
            seq = tokens / (k * t["seq"])   # K runs one after another take K times one run's step
            packed = tokens / t["packed"]
            line = f"{shape:>5} {n / 1e6:>6.2f}M {k:>3} {seq:>10.0f} {packed:>12.0f} {packed / seq:>6.2f}x"
            if args.vmap:
                line += f" {tokens / t['vmap']:>10.0f}"
            if args.procs:
                procs = tokens / processes_step_s(cfg, k, batch, device, args)
                line += f" {procs:>11.0f} {packed / procs:>7.2f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
