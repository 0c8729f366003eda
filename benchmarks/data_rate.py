"""Data throughput: synthetic batches per second, the exact floor's cost, text-shard sampling.

Prints one table. Rates use process CPU time (one core: numpy here is single-threaded),
so a busy machine does not understate them; wall time is shown beside.

  python benchmarks/data_rate.py
  python benchmarks/data_rate.py --topics 64,256,1024 --batch 64,256
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from train.data import build_data
from train.data.config import DataConfig, SyntheticConfig

SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tiny_shakespeare" / "input.txt"


def timed(fn, repeats: int) -> tuple[float, float]:
    fn(0)  # warm caches and lazy imports
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(1, repeats + 1):
        fn(i)
    return (time.process_time() - c0) / repeats, (time.perf_counter() - w0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--topics", default="64,256,1024")
    ap.add_argument("--batch", default="64,256")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--val-tokens", type=int, default=65536)
    args = ap.parse_args()
    L = args.context + 1
    print("| source | topics | batch | train Mtok/s (cpu) | train Mtok/s (wall) | floor s (cpu) for val tokens |")
    print("|---|---|---|---|---|---|")
    for k in (int(x) for x in args.topics.split(",")):
        cfg = DataConfig(vocab_size=args.vocab, synthetic=SyntheticConfig(topics=k))
        src = build_data(cfg, args.context)
        val = src.val_batch(args.val_tokens)
        c0 = time.process_time()
        src.loss_floor(val)
        floor_s = time.process_time() - c0
        for b in (int(x) for x in args.batch.split(",")):
            cpu, wall = timed(lambda i, src=src, b=b: src.train_batch(i, b), repeats=max(5, 20000 // b))
            print(f"| synthetic V={args.vocab} T={args.context} | {k} | {b} | {b * L / cpu / 1e6:.1f} | "
                  f"{b * L / wall / 1e6:.1f} | {floor_s:.2f} ({args.val_tokens} tok) |", flush=True)
    if SHAKESPEARE.exists():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = DataConfig(source=str(SHAKESPEARE), tokenizer="bpe", vocab_size=512, val_frac=0.05, cache_dir=tmp)
            c0, w0 = time.process_time(), time.perf_counter()
            src = build_data(cfg, args.context)
            build = f"build (BPE train + tokenize) {time.process_time() - c0:.1f}s cpu, {time.perf_counter() - w0:.1f}s wall"
            for b in (int(x) for x in args.batch.split(",")):
                cpu, wall = timed(lambda i, src=src, b=b: src.train_batch(i, b), repeats=max(5, 20000 // b))
                print(f"| tiny-shakespeare BPE-512 memmap | - | {b} | {b * L / cpu / 1e6:.1f} | "
                      f"{b * L / wall / 1e6:.1f} | - |")
            print(f"\ntiny-shakespeare: {build}; {src.meta['train_tokens']:,} train tokens")


if __name__ == "__main__":
    main()
