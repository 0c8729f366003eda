"""Exact resume: a run killed mid-training and restarted equals an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import pytest

from train.api import train_run
from train.checkpoint import list_checkpoints
from train.cli import main as train_main
from train.config import load_config
from train.rundir import read_metrics, read_run

TINY = ["model.width=32", "model.depth=1", "model.context=32", "data.vocab_size=64", "train.batch_tokens=512",
        "eval.tokens=512", "train.threads=1", "train.device=cpu", "schedule.warmup_steps=5", "run.log_every=1"]


def curve(run_dir):
    """Every metrics row without its wall-clock time."""
    return [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(run_dir / "metrics.jsonl")]


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_curve(tmp_path):
    # 120 steps: the kill lands just after the first checkpoint (step 10), 110 steps (about a second) before the end
    overrides = TINY + ["train.tokens=61440", "run.ckpt_every=10", "eval.points=12"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "train", "--out", str(killed), "--quiet", *overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(killed / "ckpt"):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        time.sleep(0.02)  # let it run past the checkpoint, so rows after it must be dropped
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    rows_at_kill = read_metrics(killed / "metrics.jsonl")
    assert 0 < rows_at_kill[-1]["step"] < 120

    # the same command again, here (a second process would only add seconds of imports)
    assert train_main(cmd[3:]) == 0

    train_run(load_config(None, overrides), tmp_path / "straight")
    assert curve(killed) == curve(tmp_path / "straight")
    _, _, s_killed = read_run(killed)
    _, _, s_straight = read_run(tmp_path / "straight")
    assert s_killed["final_val_loss"] == s_straight["final_val_loss"]
    assert s_killed["steps"] == 120


class Interrupt(Exception):
    pass


def interrupt_at_step_15(cfg, run_dir):
    """Train `cfg` into `run_dir` and stop it by an exception at step 15 (its summary then says failed)."""
    def stop_at_15(row):
        if row["step"] == 15:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_run(cfg, run_dir, progress=stop_at_15)


def test_interrupted_run_drops_rows_past_the_checkpoint_and_resumes(tmp_path):
    overrides = TINY + ["train.tokens=10240", "run.ckpt_every=6", "eval.points=20"]  # 20 steps
    cfg = load_config(None, overrides)
    interrupt_at_step_15(cfg, tmp_path / "a")
    assert read_run(tmp_path / "a")[2]["status"] == "failed"
    assert max(r["step"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")) == 15
    summary = train_run(cfg, tmp_path / "a")  # resumes from step 12, dropping the rows of steps 13-15
    assert summary["status"] == "completed"
    train_run(cfg, tmp_path / "b")
    assert curve(tmp_path / "a") == curve(tmp_path / "b")


def test_checkpoint_retention_keeps_pinned_final_and_latest(tmp_path):
    cfg = load_config(None, TINY + ["train.tokens=6144", "run.ckpt_every=3", "run.ckpt_keep=2",
                                    "run.ckpt_steps=[4]", "eval.points=2"])  # 12 steps
    train_run(cfg, tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "ckpt")] == [4, 6, 9, 12]


def test_a_run_is_not_resumed_on_other_tokens_than_its_checkpoint_saw(tmp_path, capsys):
    """The corpus behind data.source changes under an interrupted run (as when a token cache is rebuilt by a
    newer tokenizer): resuming is refused with a message naming the data, not continued on tokens the model
    never saw; on the same corpus it resumes. Fingerprints agree for equal data and differ for other data."""
    from tests.test_data_text import corpus, write_txt
    from train.data import build_data, fingerprint
    from train.data.documents import DataError

    src = write_txt(tmp_path / "corpus.txt", corpus(200, seed=0))
    text = TINY + ["train.tokens=10240", "run.ckpt_every=6", "eval.points=20", f"data.source={src}",
                   "data.tokenizer=byte", "data.vocab_size=256", "model.vocab_size=256",
                   f"data.cache_dir={tmp_path / 'cache'}", "data.val_frac=0.1"]
    cfg = load_config(None, text)
    interrupt_at_step_15(cfg, tmp_path / "a")
    first = fingerprint(build_data(cfg.data, cfg.model.context), cfg.model.context)
    assert first == fingerprint(build_data(cfg.data, cfg.model.context), cfg.model.context)
    write_txt(src, corpus(200, seed=1))            # same path and config, other text
    assert fingerprint(build_data(cfg.data, cfg.model.context), cfg.model.context) != first
    with pytest.raises(DataError, match=r"other tokens than data.source=.*corpus.txt"):
        train_run(cfg, tmp_path / "a")
    assert train_main(["--out", str(tmp_path / "a"), "--quiet", *text]) == 2     # the command line: one line, exit 2
    assert "config error: the checkpoint of" in capsys.readouterr().err
    assert max(r["step"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")) == 15   # nothing trained
    write_txt(src, corpus(200, seed=0))            # the run's own data back: it resumes and completes
    assert train_run(cfg, tmp_path / "a")["status"] == "completed"
