"""Training throughput and MFU of the testbed's trainer, next to a plain-PyTorch reference GPT.

    python benchmarks/throughput.py                 # CPU sizes (GPT 0.87M / 3.3M at V=512, T=128, LSTM)
    python benchmarks/throughput.py --sizes gpt:384x6,gpt:768x12 --batch-tokens 65536   # a GPU

Two measurements per size:
- "ours step" vs "reference step": the testbed's own training step (`train.loop.train_step` with
  its model, AdamW groups, lr setting and clipping) and a minimal nanoGPT-style GPT and loop
  written below (same shape, same batches, same optimizer settings), run in alternating blocks
  so that load from other processes hits both alike; the median block time is reported.
- "train_run": the whole trainer end to end (`train.api.train_run` on the synthetic data,
  metrics rows and checkpoint writing included), in steady state from its own per-step rows.

MFU = useful FLOPs/token x tokens/s, divided by (a) the sustained matmul rate measured on this
device in the same run (fp32 on CPU, bf16 on CUDA; many matmuls between two syncs, so launch
latency is not counted as slowness) and (b) the datasheet dense bf16 peak for known GPUs (H100
SXM, PCIe and NVL differ). Useful FLOPs (`models.counting.useful_flops_per_token`) are the
"exact" convention's matmuls (attention and the output head included, x3 for training) with
causal attention counted over the lower triangle only: the masked half is work a causal kernel
skips, and counting it would inflate MFU.

    python benchmarks/throughput.py --sizes gpt:768x12 --context 1024 --vocab 50257 --vocab-pad 64 \
        --batch-tokens 524288 --micro-batch-tokens 16384 --compile --dtype bfloat16   # GPT-2 124M on a GPU
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models import build_model
from models.counting import param_counts, useful_flops_per_token
from train.api import train_run
from train.config import RunConfig
from train.data import build_data
from train.loop import autocast, precision, train_step
from train.optim import build_optimizer, plan_batches, set_lr
from train.rundir import read_metrics
from train.schedules import lr_curve

# Dense (not 2:4 sparse) bf16 tensor-core peaks from NVIDIA datasheets, FLOP/s; the first key
# whose words all appear in the device name wins, so the specific variants come first.
DATASHEET_BF16 = [
    ("H100 NVL", 835e12),    # two-card PCIe part, lower clocks than SXM
    ("H100 PCIe", 756e12),
    ("H200 NVL", 835e12),
    ("GH200", 989e12),
    ("H100", 989e12),        # H100 SXM5 (the name says "H100 80GB HBM3")
    ("H200", 989e12),        # H200 SXM
    ("A100", 312e12),
]


def peak_for_name(name: str) -> float | None:
    for key, peak in DATASHEET_BF16:
        if all(part in name for part in key.split()):
            return peak
    return None


def datasheet_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, peak_for_name(name)


def sustained_rate(fn, flops: float, reps: int, sync, repeats: int = 3) -> float:
    """FLOP/s of `fn` (`flops` each) run `reps` times between two syncs, best of `repeats` blocks.
    One call between syncs would time launch latency and the sync, not the device."""
    best = math.inf
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return flops * reps / best


def measured_matmul_rate(device: torch.device, n: int = 4096, reps: int = 50) -> float:
    """Sustained FLOP/s of n x n x n matmuls (2 n^3 FLOPs each): fp32 on CPU, bf16 on CUDA."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu":
        n, reps = 1024, 5
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    sustained_rate(lambda: torch.matmul(a, b, out=out), 2 * n ** 3, 2, lambda: sync(device), repeats=1)   # warm-up
    return sustained_rate(lambda: torch.matmul(a, b, out=out), 2 * n ** 3, reps, lambda: sync(device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------
# the plain reference: a minimal GPT-2 layout in plain PyTorch

class RefBlock(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x_BxTxC: torch.Tensor) -> torch.Tensor:
        B, T, C = x_BxTxC.shape
        q, k, v = self.qkv(self.ln1(x_BxTxC)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x_BxTxC = x_BxTxC + self.proj(y)
        return x_BxTxC + self.out(F.gelu(self.fc(self.ln2(x_BxTxC))))


class RefGPT(nn.Module):
    def __init__(self, vocab: int, context: int, d: int, depth: int, n_head: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(RefBlock(d, n_head) for _ in range(depth))
        self.ln_f = nn.LayerNorm(d, bias=False)
        for p in self.parameters():
            if p.ndim == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx_BxT: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx_BxT) + self.wpe(torch.arange(idx_BxT.shape[1], device=idx_BxT.device))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied head


class RefTrainer:
    """The reference training step: nanoGPT's loop (AdamW with 2-D weights decayed, clip, step)."""

    def __init__(self, cfg: RunConfig, device: torch.device):
        m = cfg.model
        torch.manual_seed(0)
        self.model = RefGPT(m.vocab_size, m.context, m.width, m.depth, m.n_heads).to(device)
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        rest = [p for p in self.model.parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.optim.weight_decay},
                                      {"params": rest, "weight_decay": 0.0}], lr=cfg.optim.lr,
                                     betas=(cfg.optim.beta1, cfg.optim.beta2), fused=device.type == "cuda")
        self.device, self.clip = device, cfg.train.grad_clip
        self.bf16 = precision(cfg.train.dtype, device) == "bfloat16"
        self.fwd = torch.compile(self.model) if cfg.train.compile else self.model

    def step(self, batch_BxT1: torch.Tensor) -> torch.Tensor:
        batch_BxT1 = batch_BxT1.to(self.device, non_blocking=True)
        with (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()):
            logits = self.fwd(batch_BxT1[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch_BxT1[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


class OurTrainer:
    """The testbed's own step, exactly as `train.loop.train` runs it: lr, micro-batches, clip, AdamW."""

    def __init__(self, cfg: RunConfig, device: torch.device):
        torch.manual_seed(0)
        self.model = build_model(cfg.model).to(device)
        self.opt = build_optimizer(self.model, cfg.optim, device)
        self.plan = plan_batches(cfg)
        self.lrs = lr_curve(cfg.steps, cfg.optim.lr, cfg.schedule)
        dtype = precision(cfg.train.dtype, device)
        self.amp = lambda: autocast(device, dtype)
        if cfg.train.compile:
            self.model = torch.compile(self.model)
        self.device, self.clip, self.n = device, cfg.train.grad_clip, 0

    def step(self, batch_BxT1: torch.Tensor) -> torch.Tensor:
        self.n += 1
        set_lr(self.opt, float(self.lrs[(self.n - 1) % len(self.lrs)]))
        return train_step(self.model, self.opt, batch_BxT1.to(self.device, non_blocking=True), self.plan,
                          self.amp, self.clip, False)


def interleaved_tokens_per_s(cfg: RunConfig, device: torch.device, steps: int, warmup: int,
                             trainers: dict[str, object]) -> dict[str, float]:
    """Median tokens/s of each trainer's step, alternating blocks of steps on the same batches so
    that load from other processes hits every trainer alike. A block ends with a host sync (the
    loop's own per-step divergence check on CPU; on CUDA blocks of 20 steps, so the host runs ahead
    of the device as the trainer's loop does between its log steps)."""
    data = build_data(cfg.data, cfg.model.context)
    block = 20 if device.type == "cuda" else 1
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for b in range(steps):
        batches = [data.train_batch(b * block + i, cfg.batch_size) for i in range(block)]
        order = list(trainers.items()) if b % 2 == 0 else list(trainers.items())[::-1]
        for name, trainer in order:
            sync(device)
            t0 = time.perf_counter()
            for batch in batches:
                loss = trainer.step(batch)
            loss.item()
            times[name].append(time.perf_counter() - t0)
    return {name: block * cfg.train.batch_tokens / statistics.median(t[warmup:]) for name, t in times.items()}


# ---------------------------------------------------------------------------
# ours: the real trainer

def ours_tokens_per_s(cfg: RunConfig, steps: int, warmup: int) -> float:
    """Steady-state tokens/s of train_run, from the time stamps of its per-step train rows."""
    run_cfg = cfg.with_overrides({"train.tokens": steps * cfg.train.batch_tokens, "run.log_every": 1,
                                  "eval.points": 1, "eval.tokens": cfg.model.context,
                                  "run.ckpt_every": steps, "schedule.kind": "constant"})
    with tempfile.TemporaryDirectory() as d:
        train_run(run_cfg, Path(d) / "run")
        times = {r["step"]: r["time_s"] for r in read_metrics(Path(d) / "run" / "metrics.jsonl") if r["kind"] == "train"}
    return (steps - warmup) * cfg.train.batch_tokens / (times[steps] - times[warmup])


def parse_sizes(text: str) -> list[tuple[str, int, int]]:
    out = []
    for item in text.split(","):
        kind, shape = item.split(":")
        width, depth = shape.split("x")
        out.append((kind, int(width), int(depth)))
    return out


ARCH = {"rmsnorm": {"model.norm": "rmsnorm"}, "rope": {"model.pos": "rope"}, "swiglu": {"model.mlp": "swiglu"},
        "untied": {"model.tie_embeddings": False}, "bias": {"model.bias": True}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="gpt:128x4,gpt:256x4,lstm:128x2,lstm:256x2",
                   help="kind:WIDTHxDEPTH, comma separated")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--vocab-pad", type=int, default=1, help="model.vocab_pad_multiple (64 on GPUs)")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--head-dim", type=int, default=64, help="head size (heads = width / head size)")
    p.add_argument("--arch", default="", help=f"comma-separated GPT variants: {', '.join(ARCH)} (default: GPT-2 layout)")
    p.add_argument("--batch-tokens", type=int, default=8192)
    p.add_argument("--micro-batch-tokens", type=int, default=0, help="train.micro_batch_tokens (0: the whole batch)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="train.dtype")
    p.add_argument("--compile", action="store_true", help="torch.compile the models (ours and the reference)")
    p.add_argument("--steps", type=int, default=30, help="timed blocks per trainer in the interleaved comparison")
    p.add_argument("--run-steps", type=int, default=20, help="steps of the end-to-end train_run")
    p.add_argument("--warmup", type=int, default=3, help="blocks / steps not timed")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    unknown = [a for a in args.arch.split(",") if a and a not in ARCH]
    if unknown:
        p.error(f"--arch: unknown variant {unknown[0]!r} (known: {', '.join(ARCH)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    name, peak = datasheet_peak(device)
    rate = measured_matmul_rate(device)
    dtype = precision(args.dtype, device)
    print(f"device: {name} ({torch.get_num_threads()} CPU threads), torch {torch.__version__}; "
          f"sustained matmul rate {rate / 1e12:.3g} TFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'})"
          + (f"; datasheet dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else ""))
    print(f"V={args.vocab} (padded to a multiple of {args.vocab_pad}) T={args.context} batch={args.batch_tokens} "
          f"tokens/step, micro-batch {args.micro_batch_tokens or args.batch_tokens}; dtype {dtype}; "
          f"compile={args.compile}; arch {args.arch or 'gpt2'}; step rates: median of {args.steps} interleaved "
          f"blocks ({args.warmup} warm-up blocks dropped); train_run: steady state of {args.run_steps} steps; "
          f"MFU counts causal attention once (models.counting.useful_flops_per_token)\n")

    head = ("| model | params | useful FLOPs/token | ours step tok/s | reference step tok/s | ours / ref "
            "| train_run tok/s | MFU (measured rate) |" + (" MFU (datasheet) |" if peak else ""))
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for kind, width, depth in parse_sizes(args.sizes):
        over = {"model.kind": kind, "model.width": width, "model.depth": depth, "model.context": args.context,
                "model.vocab_pad_multiple": args.vocab_pad, "data.vocab_size": args.vocab,
                "train.batch_tokens": args.batch_tokens, "train.micro_batch_tokens": args.micro_batch_tokens,
                "train.tokens": args.batch_tokens * args.steps, "train.device": str(device),
                "train.dtype": args.dtype, "train.compile": args.compile,
                "train.threads": args.threads, "run.name": "bench"}
        if kind == "gpt":
            over["model.head_dim"] = min(args.head_dim, width)
            for variant in filter(None, args.arch.split(",")):
                over.update(ARCH[variant])
        cfg = RunConfig().with_overrides(over).resolved()
        fpt = useful_flops_per_token(cfg.model)
        trainers = {"ours": OurTrainer(cfg, device)}
        if kind == "gpt" and not args.arch:
            trainers["ref"] = RefTrainer(cfg, device)
        rates = interleaved_tokens_per_s(cfg, device, args.steps, args.warmup, trainers)
        del trainers
        end_to_end = ours_tokens_per_s(cfg, args.run_steps, args.warmup)
        ours, ref = rates["ours"], rates.get("ref")
        n = param_counts(cfg.model)["total"]
        cells = [f"{kind} {width}x{depth}", f"{n / 1e6:.2f}M", f"{fpt / 1e6:.2f}M", f"{ours:,.0f}",
                 f"{ref:,.0f}" if ref else "-", f"{ours / ref:.2f}" if ref else "-", f"{end_to_end:,.0f}",
                 f"{100 * ours * fpt / rate:.1f}%"]
        if peak:
            cells.append(f"{100 * ours * fpt / peak:.1f}%")
        print("| " + " | ".join(cells) + " |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
