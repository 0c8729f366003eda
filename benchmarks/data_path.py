"""The real-text data path: first-use tokenization of a corpus, and start-up on the cached corpus.

Each measurement runs in a fresh process (as a run or a sweep worker would), with the token
cache in a temporary directory. Prints one table: wall time, peak resident memory (of that
process), tokens and the rate; then the start-up of `build_data` on the cached corpus
(data source ready plus the first training batch and the validation set), and a whole
one-step `python -m train` run on it beside the same run on synthetic data.

  python benchmarks/data_path.py
  python benchmarks/data_path.py --source 'corpus/*.txt.zst' --vocab 8192 --python other/.venv/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "wikipedia_en_2015" / \
    "wiki_en_2015.train.00.txt.zst"

BUILD = """
import json, sys, time
import torch  # imported by every run anyway; not the data path's cost
t0 = time.perf_counter()
from train.data import build_data
from train.data.config import DataConfig
src = build_data(DataConfig(source=sys.argv[1], vocab_size=int(sys.argv[2]), cache_dir=sys.argv[3]), 256)
src.train_batch(0, 32); src.val_batch(65536)
d = src.describe()
print(json.dumps({"seconds": time.perf_counter() - t0, "tokenized": bool(src.tokenized),
                  "tokens": d["train_tokens"] + d["val_tokens"], "docs": d["train_docs"] + d["val_docs"]}))
"""


def child(python: str, args: list[str], env: dict | None = None) -> tuple[dict | None, float, float]:
    """(JSON the child printed or None, wall seconds, peak RSS of the child in MB); the child's CPU
    seconds are added to CPU["last"]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([python, *args], capture_output=True, text=True, env=env, cwd="/")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    before, peak = before.ru_maxrss, after.ru_maxrss   # max over children so far (KB)
    if r.returncode != 0:
        raise SystemExit(f"{args[:2]} failed:\n{r.stderr[-2000:]}")
    out = None
    for line in reversed(r.stdout.strip().splitlines()):
        if line.startswith("{"):
            out = json.loads(line)
            break
    return out, wall, (peak if peak > before else float("nan")) / 1024


CPU = {"last": 0.0}


def one_step_run(python: str, out: Path, extra: list[str]) -> tuple[float, float]:
    """(process wall seconds, seconds from the trainer's start to its first step's row)."""
    args = ["-m", "train", "--out", str(out), "--quiet", "model.context=256", "model.vocab_size=8192",
            "train.batch_tokens=8192", "train.tokens=8192", "eval.points=1", "eval.tokens=65536",
            "train.threads=1", *extra]
    wall = child(python, args)[1]
    first = next(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["kind"] == "train")
    return wall, first["time_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(SHARD))
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the install to measure")
    ap.add_argument("--repeats", type=int, default=3)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="data-path-") as tmp:
        cache = str(Path(tmp) / "cache")
        got, wall, rss = child(ns.python, ["-c", BUILD, ns.source, str(ns.vocab), cache])
        assert got and got["tokenized"], got
        load = os.getloadavg()[0]
        print(f"source {ns.source}, BPE {ns.vocab}, {os.cpu_count()} cores (load average {load:.1f} before), "
              f"{ns.python}\n")
        print("| step | wall | CPU time | peak RSS | tokens | documents | rate |\n|---|---|---|---|---|---|---|")
        print(f"| first use: read, train BPE, tokenize, write | {wall:.1f}s | {CPU['last']:.1f}s | {rss:,.0f} MB | "
              f"{got['tokens']:,} | {got['docs']:,} | {got['tokens'] / wall / 1e3:,.0f}k tokens/s |")
        starts = []
        for _ in range(ns.repeats):
            got, wall, _ = child(ns.python, ["-c", BUILD, ns.source, str(ns.vocab), cache])
            assert got and not got["tokenized"], got
            starts.append((got["seconds"], wall))
        lib = sorted(s for s, _ in starts)[len(starts) // 2]
        proc = sorted(w for _, w in starts)[len(starts) // 2]
        print(f"| cached: build_data + first batch + val set (median of {ns.repeats}; torch already imported) | "
              f"{lib:.2f}s (process {proc:.1f}s) | | | | | |")
        text_run = one_step_run(ns.python, Path(tmp) / "r1", [f"data.source={ns.source}", "data.tokenizer=bpe",
                                                              f"data.vocab_size={ns.vocab}", f"data.cache_dir={cache}"])
        synth_run = one_step_run(ns.python, Path(tmp) / "r2", ["data.vocab_size=512"])
        for what, (wall, first) in (("cached corpus", text_run), ("synthetic data, same model", synth_run)):
            print(f"| a one-step `python -m train` run, {what}: trainer start to first step (process) | "
                  f"{first:.2f}s ({wall:.1f}s) | | | | | |")
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
