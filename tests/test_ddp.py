"""DDP on CPU: two gloo ranks under torchrun train the same curve as one process."""
import json
import subprocess
import sys

import pytest

from train.api import train_run
from train.config import load_config
from train.rundir import read_metrics, read_run

# 8 sequences per step: 4 per rank, split further into micro-batches of 2 (accumulation under DDP)
TINY = ["model.width=32", "model.depth=1", "model.context=32", "data.vocab_size=64", "train.batch_tokens=256",
        "train.tokens=2560", "eval.tokens=320", "eval.points=4", "run.log_every=1", "run.ckpt_every=5",
        "train.threads=1", "optim.lr=1e-2", "train.device=cpu"]


@pytest.mark.slow
def test_two_gloo_ranks_match_a_single_process(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train", "--out", str(out), "--quiet", *TINY, "train.micro_batch_tokens=64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    train_run(load_config(None, TINY), tmp_path / "single")
    ddp_rows, one_rows = read_metrics(out / "metrics.jsonl"), read_metrics(tmp_path / "single" / "metrics.jsonl")
    assert [(r["kind"], r["step"], r["tokens"], r["flops"], r["lr"]) for r in ddp_rows] == \
           [(r["kind"], r["step"], r["tokens"], r["flops"], r["lr"]) for r in one_rows]
    for a, b in zip(ddp_rows, one_rows):
        key = "loss" if a["kind"] == "train" else "val_loss"
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a, b)
    # the curve actually moved, so matching it means the ranks trained together
    vals = [r["val_loss"] for r in one_rows if r["kind"] == "eval"]
    assert vals[-1] < vals[0] - 0.02

    _, _, summary = read_run(out)
    assert summary["status"] == "completed"
    assert summary["world_size"] == 2 and summary["tokens"] == 2560
    assert json.loads((out / "config.json").read_text()) == load_config(None, TINY + ["train.micro_batch_tokens=64"]).resolved().to_dict()
    assert (out / "ckpt" / "step_00000010.pt").exists()
