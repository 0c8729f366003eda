"""Fault injection: every fault a user can cause ends in an exact resume, or in one clear error
that names the file or key and leaves what was written intact (docs/faults.md lists them)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from train.api import train_run
from train.cli import main
from train.config import ConfigError, load_config
from train.contract import EXIT_BAD_INPUT, EXIT_NO_SPACE
from train.rundir import RunDirBusy, RunLock, read_metrics, read_run

TINY = ["model.width=32", "model.depth=1", "model.context=32", "data.vocab_size=64", "train.batch_tokens=512",
        "eval.tokens=512", "train.threads=1", "train.device=cpu", "schedule.warmup_steps=2", "run.log_every=1"]
TWENTY = TINY + ["train.tokens=10240", "run.ckpt_every=6", "eval.points=20"]   # 20 steps, checkpoints at 6, 12, 18, 20


def curve(run_dir):
    """Every metrics row without its wall-clock time."""
    return [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(run_dir / "metrics.jsonl")]


class Interrupt(Exception):
    pass


def interrupted(run_dir, at_step=15, overrides=TWENTY):
    """A run stopped mid-way (after its step-12 checkpoint), as a crash would leave it."""
    def stop(row):
        if row["step"] == at_step:
            raise Interrupt
    with pytest.raises(Interrupt):
        train_run(load_config(None, overrides), run_dir, progress=stop)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 20-step run every repaired run must reproduce."""
    d = tmp_path_factory.mktemp("straight") / "run"
    train_run(load_config(None, TWENTY), d)
    return d


# ---- one writer per run directory -------------------------------------------

HOLD = ("from train.rundir import RunLock; import sys, time; RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(60)")


@pytest.fixture
def holder(tmp_path):
    """Another live process holding tmp_path/run's lock."""
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    yield run, p.pid
    p.kill()
    p.wait()


def test_a_second_writer_is_refused_naming_the_holder(holder, capsys):
    run, pid = holder
    assert main(["--out", str(run), *TINY, "train.tokens=2048"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"process {pid}" in err and str(run) in err
    assert [p.name for p in run.iterdir()] == [".lock"]   # nothing written by the refused writer


def test_a_pack_with_one_busy_directory_trains_none_of_its_runs(holder, tmp_path):
    from train.packed import train_packed
    run, pid = holder
    other = tmp_path / "other"
    cfgs = [load_config(None, TINY + ["train.tokens=2048", f"run.seed={s}"]) for s in (0, 1)]
    with pytest.raises(RunDirBusy, match=f"process {pid}"):
        train_packed(cfgs, [other, run])
    assert not (other / "config.json").exists() and not (run / "config.json").exists()


def test_the_lock_is_released_so_the_next_launch_resumes(tmp_path):
    cfg = load_config(None, TINY + ["train.tokens=2048"])
    assert train_run(cfg, tmp_path / "run")["status"] == "completed"
    with RunLock(tmp_path / "run"):   # free again: nobody holds it after the run
        pass
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".lock").write_text("12345\n")   # a lock file left by a dead process means nothing
    assert train_run(cfg, tmp_path / "other")["status"] == "completed"


# ---- damaged checkpoints, metrics and summaries ------------------------------

def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, straight, capsys):
    run = tmp_path / "run"
    interrupted(run)
    latest = run / "ckpt" / "step_00000012.pt"
    latest.write_bytes(latest.read_bytes()[:1000])   # a write cut short
    assert train_run(load_config(None, TWENTY), run)["status"] == "completed"
    err = capsys.readouterr().err
    assert "step_00000012.pt" in err and "cannot be read" in err
    assert curve(run) == curve(straight)
    assert (run / "ckpt" / "step_00000012.pt.corrupt").exists()   # kept for inspection, never tried again


def test_a_damaged_metrics_line_mid_file_is_dropped_and_the_run_resumes(tmp_path, straight, capsys):
    run = tmp_path / "run"
    interrupted(run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[3] = lines[3][:10] + "\x00garbage"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert train_run(load_config(None, TWENTY), run)["status"] == "completed"
    assert "line(s) 4" in capsys.readouterr().err
    expected = curve(straight)
    assert curve(run) == expected[:3] + expected[4:]   # only the damaged row is missing
    assert (run / "metrics.jsonl.damaged").exists()


def test_a_corrupt_summary_is_rebuilt_from_the_final_checkpoint(tmp_path, straight):
    run = tmp_path / "run"
    first = train_run(load_config(None, TWENTY), run)
    (run / "summary.json").write_text('{"status": "compl')
    again = train_run(load_config(None, TWENTY), run)
    assert again["status"] == "completed" and again["steps"] == 20
    assert again["final_val_loss"] == first["final_val_loss"] and again["final_train_loss"] == first["final_train_loss"]
    assert read_run(run)[2]["status"] == "completed"
    assert curve(run) == curve(straight)


def test_orphan_temporary_checkpoints_are_removed_on_the_next_start(tmp_path, straight):
    run = tmp_path / "run"
    interrupted(run)
    orphan = run / "ckpt" / ".step_00000018.pt.abc123.tmp"   # a kill during a checkpoint write
    orphan.write_bytes(b"partial")
    train_run(load_config(None, TWENTY), run)
    assert not orphan.exists()
    assert curve(run) == curve(straight)


# A trainer that SIGKILLs itself at one write of its start-up: what a kill at that instant leaves.
KILL_AT = """
import os, signal, sys
from pathlib import Path
where = sys.argv.pop(1)
real_replace, real_unlink = os.replace, os.unlink
def replace(src, dst, *a, **k):
    if where == "config" and Path(dst).name == "config.json":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **k)
def unlink(path, *a, **k):
    if where == "probe" and Path(path).name.startswith(".write-test-"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_unlink(path, *a, **k)
os.replace, os.unlink = replace, unlink
from train.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("where", ["config", "probe"])
def test_a_kill_during_the_first_writes_of_a_new_run_is_resumed_not_refused(tmp_path, straight, where):
    # a sweep worker killed while writing config.json (or probing the directory) leaves a
    # temporary file and no config; the relaunch must train the run, not refuse a "foreign"
    # directory (a refusal is exit 2, which a sweep does not retry)
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILL_AT, where, "--out", str(run), *TWENTY],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert not (run / "config.json").exists() and any(p.name.endswith(".tmp") for p in run.iterdir())
    assert main(["--out", str(run), *TWENTY]) == 0
    assert read_run(run)[2]["status"] == "completed"
    assert curve(run) == curve(straight)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_directory_with_other_hidden_files_and_no_config_is_still_refused(tmp_path):
    (tmp_path / ".notes.txt").write_text("mine")
    (tmp_path / "data.tmp").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        train_run(load_config(None, TWENTY), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.txt", "data.tmp"]


# ---- a full disk ----------------------------------------------------------------

def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


DISK_FULL = textwrap.dedent("""
    set -u
    mount -t tmpfs -o size=$SIZE tmpfs "$MNT"
    "$PY" -m train --out "$MNT/run" --quiet $OVERRIDES 2> "$RESULTS/first.err"
    echo $? > "$RESULTS/first.rc"
    ls -a "$MNT/run" "$MNT/run/ckpt" > "$RESULTS/first.ls" 2>&1
    cp -a "$MNT/run" "$RESULTS/after_first"
    mount -o remount,size=64m "$MNT"          # space freed
    "$PY" -m train --out "$MNT/run" --quiet $OVERRIDES 2> "$RESULTS/second.err"
    echo $? > "$RESULTS/second.rc"
    cp -a "$MNT/run" "$RESULTS/after_second"
""")


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and a user namespace to mount a small tmpfs")
def test_a_full_disk_is_one_clear_error_and_a_rerun_after_freeing_space_resumes(tmp_path, straight):
    mnt, results = tmp_path / "mnt", tmp_path / "results"
    mnt.mkdir()
    results.mkdir()
    env = {**os.environ, "SIZE": "160k", "MNT": str(mnt), "RESULTS": str(results), "PY": sys.executable,
           "OVERRIDES": " ".join(TWENTY)}
    subprocess.run(["unshare", "-rm", "bash", "-c", DISK_FULL], env=env, check=True, timeout=300)
    err = (results / "first.err").read_text()
    assert int((results / "first.rc").read_text()) == EXIT_NO_SPACE, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "no space left on device" in lines[0] and "needed" in lines[0], err
    assert ".tmp" not in (results / "first.ls").read_text()             # nothing half-written
    for r in (results / "after_first" / "metrics.jsonl").read_text().splitlines()[:-1]:
        json.loads(r)                                                      # every complete row is intact
    assert int((results / "second.rc").read_text()) == 0, (results / "second.err").read_text()
    assert curve(results / "after_second") == curve(straight)


# ---- bad input ------------------------------------------------------------------

def test_malformed_yaml_is_a_config_error_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  width: [32\n")
    with pytest.raises(ConfigError, match="bad.yaml.*line"):
        load_config(bad)
    assert main([str(bad), "--out", str(tmp_path / "run")]) == EXIT_BAD_INPUT
    assert "bad.yaml" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_negative_seed_fails_before_the_run_directory_is_created(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "run"), *TINY, "train.tokens=2048", "run.seed=-1"]) == EXIT_BAD_INPUT
    assert "run.seed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_print_config_into_a_closed_pipe_is_not_an_error():
    p = subprocess.Popen([sys.executable, "-m", "train", "--print-config"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()   # the reader (e.g. `| head`) is gone before the config is printed
    err = p.stderr.read().decode()
    assert p.wait() == 0 and "BrokenPipeError" not in err, err


def test_help_names_testbed_train_and_how_to_list_config_keys(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: testbed train") and "--print-config" in out.split("Config keys")[1]
