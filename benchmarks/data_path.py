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
    """(JSON the child printed or None, wall seconds, peak RSS of the child in MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    r = subprocess.run([python, *args], capture_output=True, text=True, env=env, cwd="/")
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss   # max over children so far (KB)
    if r.returncode != 0:
        raise SystemExit(f"{args[:2]} failed:\n{r.stderr[-2000:]}")
    out = None
    for line in reversed(r.stdout.strip().splitlines()):
        if line.startswith("{"):
            out = json.loads(line)
            break
    return out, wall, (peak if peak > before else float("nan")) / 1024


def one_step_run(python: str, out: Path, extra: list[str]) -> float:
    args = ["-m", "train", "--out", str(out), "--quiet", "model.context=256", "train.batch_tokens=8192",
            "train.tokens=8192", "eval.points=1", "eval.tokens=65536", "train.threads=1", *extra]
    return child(python, args)[1]


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
        print(f"source {ns.source}, BPE {ns.vocab}, {os.cpu_count()} cores, {ns.python}\n")
        print("| step | wall | peak RSS | tokens | documents | rate |\n|---|---|---|---|---|---|")
        print(f"| first use: read, train BPE, tokenize, write | {wall:.1f}s | {rss:,.0f} MB | {got['tokens']:,} | "
              f"{got['docs']:,} | {got['tokens'] / wall / 1e3:,.0f}k tokens/s |")
        starts = []
        for _ in range(ns.repeats):
            got, wall, _ = child(ns.python, ["-c", BUILD, ns.source, str(ns.vocab), cache])
            assert got and not got["tokenized"], got
            starts.append((got["seconds"], wall))
        lib = sorted(s for s, _ in starts)[len(starts) // 2]
        proc = sorted(w for _, w in starts)[len(starts) // 2]
        print(f"| cached: build_data + first batch + val set (median of {ns.repeats}) | {lib:.2f}s "
              f"(process {proc:.1f}s) | | | | |")
        text_run = one_step_run(ns.python, Path(tmp) / "r1", [f"data.source={ns.source}", "data.tokenizer=bpe",
                                                              f"data.vocab_size={ns.vocab}", f"data.cache_dir={cache}"])
        synth_run = one_step_run(ns.python, Path(tmp) / "r2", ["data.vocab_size=512"])
        print(f"| a one-step `python -m train` run, cached corpus | {text_run:.1f}s | | | | |")
        print(f"| the same run on synthetic data | {synth_run:.1f}s | | | | |")


if __name__ == "__main__":
    main()
