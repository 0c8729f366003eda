"""Training throughput and MFU of the testbed's trainer, next to a plain-PyTorch reference GPT.

    python benchmarks/throughput.py                 # CPU sizes (GPT 0.87M / 3.3M at V=512, T=128, LSTM)
    python benchmarks/throughput.py --sizes gpt:384x6,gpt:768x12 --batch-tokens 65536   # a GPU

"ours" is the real training path: `train.api.train_run` on the synthetic data (data generation,
lr schedule, forward, backward, clipping, AdamW), timed from its own metrics rows in steady
state (after `--warmup` steps, evals excluded). "reference" is a minimal nanoGPT-style GPT and
loop written below, same shape, same batches, same optimizer settings: the bar ours must meet.

MFU = FLOPs/token ("exact" convention: every matmul incl. attention and the output head, x3 for
training) x tokens/s, divided by (a) the matmul rate measured on this device in the same run
(fp32 on CPU, bf16 on CUDA) and (b) the datasheet dense bf16 peak for known GPUs.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.counting import flops_per_token, param_counts
from train.api import train_run
from train.config import RunConfig
from train.data import build_data
from train.rundir import read_metrics

# Dense (not 2:4 sparse) bf16 tensor-core peaks from NVIDIA datasheets, FLOP/s.
DATASHEET_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),      # H100 SXM5
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
]


def datasheet_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key, peak in DATASHEET_BF16:
        if all(part in name for part in key.split()):
            return name, peak
    return name, None


def measured_matmul_rate(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of an n x n x n matmul (2 n^3 FLOPs): fp32 on CPU, bf16 on CUDA."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


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


def reference_tokens_per_s(cfg: RunConfig, device: torch.device, steps: int, warmup: int) -> float:
    m = cfg.model
    torch.manual_seed(0)
    model = RefGPT(m.vocab_size, m.context, m.width, m.depth, m.n_heads).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.optim.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.optim.lr,
                            betas=(cfg.optim.beta1, cfg.optim.beta2), fused=device.type == "cuda")
    data = build_data(cfg.data, m.context)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else None
    t0 = 0.0
    for step in range(steps):
        if step == warmup:
            sync(device)
            t0 = time.perf_counter()
        batch = data.train_batch(step, cfg.batch_size).to(device, non_blocking=True)
        if amp:
            with amp():
                logits = model(batch[:, :-1])
        else:
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return (steps - warmup) * cfg.train.batch_tokens / (time.perf_counter() - t0)


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="gpt:128x4,gpt:256x4,lstm:128x2,lstm:256x2",
                   help="kind:WIDTHxDEPTH, comma separated")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch-tokens", type=int, default=8192)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="alternate ours/reference this many times; best is kept")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    name, peak = datasheet_peak(device)
    rate = measured_matmul_rate(device)
    print(f"device: {name} ({torch.get_num_threads()} CPU threads), torch {torch.__version__}; "
          f"measured matmul rate {rate / 1e9:.1f} GFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'})"
          + (f"; datasheet dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else ""))
    print(f"V={args.vocab} T={args.context} batch={args.batch_tokens} tokens/step, {args.steps} steps "
          f"({args.warmup} warm-up steps not timed), best of {args.repeats}\n")

    head = "| model | params | FLOPs/token | ours tok/s | reference tok/s | ours / ref | MFU (measured) |"
    head += " MFU (datasheet) |" if peak else ""
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for kind, width, depth in parse_sizes(args.sizes):
        cfg = RunConfig().with_overrides({
            "model.kind": kind, "model.width": width, "model.depth": depth, "model.context": args.context,
            "data.vocab_size": args.vocab, "train.batch_tokens": args.batch_tokens,
            "train.tokens": args.batch_tokens * args.steps, "train.device": str(device),
            "train.threads": args.threads, "run.name": "bench"}).resolved()
        fpt = flops_per_token(cfg.model, "exact")
        ours, ref = [], []
        for _ in range(args.repeats):
            ours.append(ours_tokens_per_s(cfg, args.steps, args.warmup))
            if kind == "gpt":
                ref.append(reference_tokens_per_s(cfg, device, args.steps, args.warmup))
        best_ours = max(ours)
        best_ref = max(ref) if ref else None
        n = param_counts(cfg.model)["total"]
        cells = [f"{kind} {width}x{depth}", f"{n / 1e6:.2f}M", f"{fpt / 1e6:.2f}M", f"{best_ours:,.0f}",
                 f"{best_ref:,.0f}" if best_ref else "-",
                 f"{best_ours / best_ref:.2f}" if best_ref else "-",
                 f"{100 * best_ours * fpt / rate:.1f}%"]
        if peak:
            cells.append(f"{100 * best_ours * fpt / peak:.1f}%")
        print("| " + " | ".join(cells) + " |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
