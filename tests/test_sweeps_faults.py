"""Fault injection on the sweep side: damaged run files, dead and live runs, a full disk, and
what the sweep driver says about the data before any worker starts."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeps.cli import main
from sweeps.expand import expand
from sweeps.spec import load_spec
from sweeps.status import sweep_status
from train.contract import EXIT_NO_SPACE

TINY = {
    "model": {"kind": "gpt", "width": 32, "depth": 1, "context": 32, "head_dim": 16},
    "data": {"vocab_size": 64},
    "train": {"batch_tokens": 512, "tokens": 2048, "device": "cpu", "threads": 1},
    "eval": {"tokens": 1024, "points": 4},
}


def write_spec(path: Path, base: dict = TINY, seeds=(0, 1, 2)) -> Path:
    path.write_text(yaml.safe_dump({"name": "faults", "base": base, "family": "grid",
                                    "axes": {"run.seed": list(seeds)}}))
    return path


def planned(tmp_path: Path) -> tuple[Path, Path, list]:
    spec = write_spec(tmp_path / "s.yaml")
    out = tmp_path / "sweep"
    assert main(["run", str(spec), "--out", str(out), "--dry-run"]) == 0
    return spec, out, expand(load_spec(spec))


def metrics_rows(n: int) -> list[str]:
    return [json.dumps({"kind": "eval", "step": i, "tokens": 512 * i, "flops": 1.0, "lr": 1e-3, "time_s": 0.1 * i,
                        "val_loss": 4.0 - 0.1 * i}) for i in range(1, n + 1)]


def test_status_survives_a_damaged_metrics_line_and_an_unreadable_summary(tmp_path, capsys):
    _, out, runs = planned(tmp_path)
    a, b, c = (out / r.run_id for r in runs)
    for d in (a, b, c):
        d.mkdir()
    rows = metrics_rows(4)
    (a / "metrics.jsonl").write_text("\n".join(rows[:2] + ['{"kind": "eval", "st'] + rows[2:]) + "\n")
    (b / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    (b / "summary.json").write_text('{"status": "compl')
    (c / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    (c / "summary.json").write_text(json.dumps({"status": "completed", "tokens_per_s": 123.0}))
    st = {r["run_id"]: r for r in sweep_status(out)["runs"]}
    ra, rb, rc = (st[r.run_id] for r in runs)
    assert "metrics.jsonl line 3 damaged" in ra["problem"] and ra["val_loss"] == pytest.approx(3.6)
    assert ra["status"] == "interrupted" and ra["tokens_done"] == 2048
    assert "summary.json unreadable" in rb["problem"] and rb["status"] == "interrupted"
    assert rc["status"] == "completed" and rc["problem"] is None and rc["tokens_per_s"] == 123.0
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert all(r.run_id[:20] in text for r in runs) and "damaged" in text


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = ("import sys, time; from train.rundir import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_status_tells_a_live_run_from_a_dead_one_by_its_lock_not_file_age(tmp_path):
    _, out, runs = planned(tmp_path)
    dead, live = out / runs[0].run_id, out / runs[1].run_id
    for d in (dead, live):
        d.mkdir()
        (d / "metrics.jsonl").write_text("\n".join(metrics_rows(2)) + "\n")   # written just now
    holder = _hold_lock(live)
    try:
        st = {r["run_id"]: r for r in sweep_status(out)["runs"]}
        assert st[runs[0].run_id]["status"] == "interrupted"
        assert st[runs[1].run_id]["status"] == "running" and st[runs[1].run_id]["pid"] == holder.pid
        assert st[runs[2].run_id]["status"] == "pending"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the lock with the process: dead at once, though its files are seconds old
    assert {r["run_id"]: r["status"] for r in sweep_status(out)["runs"]}[runs[1].run_id] == "interrupted"


def test_a_stale_worker_pid_of_another_process_is_not_a_live_run(tmp_path):
    _, out, runs = planned(tmp_path)
    d = out / runs[0].run_id
    d.mkdir()
    (d / "metrics.jsonl").write_text("\n".join(metrics_rows(2)) + "\n")
    (out / "logs" / f"{runs[0].run_id}.pid").write_text(str(os.getpid()))   # alive, but not training it
    assert sweep_status(out)["runs"][0]["status"] == "interrupted"


@pytest.mark.slow
@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_full_disk_while_preparing_gives_one_message_and_a_rerun_works(tmp_path, capsys, monkeypatch, fail_at):
    import sweeps.sweepdir as sweepdir
    spec = write_spec(tmp_path / "s.yaml", seeds=(0,))
    out = tmp_path / "sweep"
    real = sweepdir.atomic_write_json
    calls = {"n": 0}

    def full_disk(path, obj):
        calls["n"] += 1
        if calls["n"] >= fail_at:   # 1: sweep.json itself, 2: the first run config
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, obj)

    monkeypatch.setattr(sweepdir, "atomic_write_json", full_disk)
    assert main(["run", str(spec), "--out", str(out)]) == EXIT_NO_SPACE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no space left on device" in err and str(out) in err, err
    assert "Traceback" not in err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]       # nothing half-written
    monkeypatch.setattr(sweepdir, "atomic_write_json", real)                # space freed
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert sweep_status(out)["counts"] == {"completed": 1}


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()


def small_corpus(path: Path, n_docs: int = 40) -> Path:
    import numpy as np
    rng = np.random.default_rng(0)
    path.write_text("\n\n".join(" ".join(rng.choice(WORDS, 40)) + "." for _ in range(n_docs)) + "\n")
    return path


@pytest.mark.slow
def test_the_driver_tokenizes_once_before_workers_and_warns_about_the_data(tmp_path):
    corpus = small_corpus(tmp_path / "c.txt")
    base = {**TINY, "data": {"source": str(corpus), "tokenizer": "bpe", "vocab_size": 2048, "val_frac": 0.1,
                             "cache_dir": str(tmp_path / "cache")},
            "model": {**TINY["model"], "context": 16}, "eval": {"tokens": 64, "points": 4},
            "train": {**TINY["train"], "batch_tokens": 256, "tokens": 40960}}
    spec = write_spec(tmp_path / "s.yaml", base=base, seeds=(0, 1))
    out = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-m", "sweeps", "run", str(spec), "--out", str(out), "--jobs", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count("first use: tokenizing") == 1, r.stderr
    assert "tokens/s" in r.stderr                                 # a stated rate
    assert "data.vocab_size=2,048 but the BPE" in r.stderr          # far above what the corpus yields
    assert "epochs over the" in r.stderr                            # many epochs over a small corpus
    for log in (out / "logs").glob("*.log"):
        assert "tokenizing" not in log.read_text()                  # no worker tokenized


def test_concurrent_builders_of_one_cache_tokenize_once(tmp_path):
    import numpy as np
    rng = np.random.default_rng(1)
    corpus = tmp_path / "big.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(WORDS, 200)) + "." for _ in range(3000)) + "\n")
    code = ("import sys; from train.data import build_data; from train.data.config import DataConfig; "
            "s = build_data(DataConfig(source=sys.argv[1], vocab_size=300, cache_dir=sys.argv[2]), 16); "
            "print('TOKENIZED' if s.tokenized else 'REUSED', flush=True)")
    cmd = [sys.executable, "-c", code, str(corpus), str(tmp_path / "cache")]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cache" / "text").glob("*.tmp*")):   # the first one is building
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.01)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out1, err1 = first.communicate(timeout=300)
    assert out1.strip() == "TOKENIZED", err1
    assert second.stdout.strip() == "REUSED", second.stderr
    assert "waiting for it" in second.stderr


@pytest.mark.slow
def test_run_sweep_returns_each_runs_state(tmp_path):
    from sweeps import run_sweep
    spec = write_spec(tmp_path / "s.yaml", seeds=(0, 1))
    o = run_sweep(str(spec), tmp_path / "sweep", jobs=2, quiet=True)
    assert o.exit_code == 0 and not o.interrupted
    assert o.state == {r.run_id: "completed" for r in o.runs} and o.counts == {"completed": 2}
    again = run_sweep(str(spec), tmp_path / "sweep", dry_run=True)
    assert len(again.commands) == 2 and again.state == o.state


def test_a_corpus_that_cannot_be_read_stops_the_sweep_before_any_worker(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text\n\nmore \xc3\x28 broken")
    base = {**TINY, "data": {"source": str(bad), "tokenizer": "byte", "cache_dir": str(tmp_path / "cache")}}
    spec = write_spec(tmp_path / "s.yaml", base=base, seeds=(0, 1))
    assert main(["run", str(spec), "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt: not valid UTF-8" in err and "Traceback" not in err
    assert not list((tmp_path / "sweep" / "logs").glob("*.log"))   # no worker started


def _can_mount_tmpfs() -> bool:
    import shutil
    return bool(shutil.which("unshare")) and subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True).returncode == 0


SWEEP_DISK_FULL = """
set -u
mount -t tmpfs -o size=8k tmpfs "$MNT"
"$PY" -m sweeps run "$SPEC" --out "$MNT/sweep" --quiet 2> "$RESULTS/first.err"; echo $? > "$RESULTS/first.rc"
ls -aR "$MNT/sweep" > "$RESULTS/first.ls" 2>&1
mount -o remount,size=64m "$MNT"          # space freed
"$PY" -m sweeps run "$SPEC" --out "$MNT/sweep" --quiet 2> "$RESULTS/second.err"; echo $? > "$RESULTS/second.rc"
"$PY" -m sweeps status "$MNT/sweep" --json > "$RESULTS/status.json"
"""


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and a user namespace to mount a small tmpfs")
def test_a_real_full_disk_under_the_sweep_directory(tmp_path):
    spec = write_spec(tmp_path / "s.yaml")
    mnt, results = tmp_path / "mnt", tmp_path / "results"
    mnt.mkdir()
    results.mkdir()
    env = {**os.environ, "MNT": str(mnt), "RESULTS": str(results), "PY": sys.executable, "SPEC": str(spec)}
    subprocess.run(["unshare", "-rm", "bash", "-c", SWEEP_DISK_FULL], env=env, check=True, timeout=600)
    err = (results / "first.err").read_text()
    assert int((results / "first.rc").read_text()) == EXIT_NO_SPACE, err
    assert len(err.strip().splitlines()) == 1 and "no space left on device" in err and "Traceback" not in err, err
    listing = (results / "first.ls").read_text()
    assert "sweep.json" in listing and ".tmp" not in listing, listing          # this sweep's, nothing half-written
    assert int((results / "second.rc").read_text()) == 0, (results / "second.err").read_text()
    assert json.loads((results / "status.json").read_text())["counts"] == {"completed": 3}


CACHE_DISK_FULL = """
set -u
mount -t tmpfs -o size=16k tmpfs "$MNT"
"$PY" -m sweeps run "$SPEC" --out "$OUT" --quiet 2> "$RESULTS/err"; echo $? > "$RESULTS/rc"
ls -aR "$MNT" > "$RESULTS/ls" 2>&1
"""


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and a user namespace to mount a small tmpfs")
def test_a_full_disk_under_the_token_cache_stops_the_sweep_with_one_line(tmp_path):
    corpus = small_corpus(tmp_path / "c.txt", n_docs=400)
    mnt, results = tmp_path / "mnt", tmp_path / "results"
    mnt.mkdir()
    results.mkdir()
    base = {**TINY, "data": {"source": str(corpus), "tokenizer": "byte", "cache_dir": str(mnt / "cache")}}
    spec = write_spec(tmp_path / "s.yaml", base=base, seeds=(0,))
    env = {**os.environ, "MNT": str(mnt), "RESULTS": str(results), "PY": sys.executable, "SPEC": str(spec),
           "OUT": str(tmp_path / "sweep")}
    subprocess.run(["unshare", "-rm", "bash", "-c", CACHE_DISK_FULL], env=env, check=True, timeout=600)
    err = (results / "err").read_text()
    assert int((results / "rc").read_text()) == EXIT_NO_SPACE, err
    assert len(err.strip().splitlines()) == 1 and "no space left on device" in err and "token cache" in err, err
    assert ".tmp" not in (results / "ls").read_text()                 # the half-built cache is gone
    assert not list((tmp_path / "sweep" / "logs").glob("*.log"))       # no worker started


def test_a_second_driver_is_refused_naming_the_first_and_a_dead_one_frees_the_directory(tmp_path, capsys):
    spec, out, runs = planned(tmp_path)
    hold = ("from train.rundir import RunLock; import sys, time; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    first = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["run", str(spec), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"another driver (process {first.pid})" in err and str(out) in err, err
        assert not any((out / r.run_id).exists() for r in runs)   # the refused driver trained nothing
    finally:
        first.kill()
        first.wait()
    assert main(["run", str(spec), "--out", str(out), "--dry-run"]) == 0   # a killed driver leaves no lock
