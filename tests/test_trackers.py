"""Trackers: JSONL always; wandb offline records the run's history; a missing wandb is named."""
import json
import sys

import pytest

from train.api import train_run
from train.config import load_config
from train.rundir import read_metrics
from train.trackers import JsonlTracker, open_trackers

TINY = ["model.width=32", "model.depth=1", "model.context=32", "data.vocab_size=64", "train.batch_tokens=512",
        "train.tokens=2048", "eval.tokens=512", "eval.points=2", "train.threads=1", "run.log_every=1"]


def test_jsonl_tracker_appends_one_row_per_line(tmp_path):
    t = JsonlTracker(tmp_path / "m.jsonl")
    t.log({"kind": "train", "step": 1, "loss": 3.0})
    # flushed per row: readable before close
    assert read_metrics(tmp_path / "m.jsonl") == [{"kind": "train", "step": 1, "loss": 3.0}]
    t.log({"kind": "eval", "step": 1, "val_loss": 3.5})
    t.close()
    assert [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()][1]["val_loss"] == 3.5


def test_missing_wandb_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail as if not installed
    run = load_config(None, ["run.tracker=wandb"]).run
    with pytest.raises(ImportError, match=r"scaling-testbed\[wandb\]"):
        open_trackers(tmp_path / "m.jsonl", run, "x", {})


@pytest.mark.slow
def test_wandb_offline_writes_the_logged_history(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    cfg = load_config(None, TINY + ["run.tracker=wandb", "run.sweep=ladder"])
    summary = train_run(cfg, tmp_path / "run")
    assert summary["status"] == "completed"

    # JSONL is written as well
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]

    wandb.teardown()  # the wandb service writes the run log in the background; wait for it
    run_dirs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    history, config = read_wandb_log(next(run_dirs[0].glob("*.wandb")))
    by_step = {}
    for item in history:
        by_step.setdefault(item.pop("_step"), {}).update(item)
    assert by_step, "no history in the offline run"
    assert sorted(by_step) == [1, 2, 3, 4]
    train_losses = {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}
    assert {s: v["train/loss"] for s, v in by_step.items()} == pytest.approx(train_losses)
    assert by_step[4]["val/loss"] == pytest.approx(summary["final_val_loss"])
    assert by_step[4]["tokens"] == 2048
    assert config["model"]["width"] == 32 and config["run"]["sweep"] == "ladder"


def _wandb_records(path):
    """Payloads of a .wandb transaction log.

    wandb 0.31 ships no Python reader for it; the file is a 7-byte header (":W&B", magic, version)
    followed by the LevelDB log format: 32 KiB blocks of records, each with a 7-byte header
    (crc32, little-endian length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4).
    """
    import struct
    buf, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert buf[:4] == b":W&B"
    while pos + 7 <= len(buf):
        left = block - pos % block
        if left < 7:          # block trailer too short for a header: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", buf[pos:pos + 7])
        if kind == 0:         # zero padding up to the block end
            pos += left
            continue
        data, pos = buf[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield data
        elif kind == 2:
            pending = data
        elif kind == 3:
            pending += data
        elif kind == 4:
            yield pending + data


def read_wandb_run(path):
    """History rows, config, summary, tags, exit code and name of an offline wandb run, from its
    transaction log."""
    from wandb.proto import wandb_internal_pb2
    run = {"history": [], "config": {}, "summary": {}, "tags": [], "exit_code": None, "name": None}
    for data in _wandb_records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            run["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.history.item})
        elif kind == "summary":
            run["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.summary.update})
        elif kind == "exit":
            run["exit_code"] = rec.exit.exit_code
        if kind in ("config", "run"):
            updates = rec.config.update if kind == "config" else rec.run.config.update
            run["config"].update({i.key: json.loads(i.value_json) for i in updates})
        if kind == "run":
            run["tags"], run["name"] = list(rec.run.tags), rec.run.display_name
    return run


def read_wandb_log(path):
    """History rows and config of an offline wandb run."""
    run = read_wandb_run(path)
    return run["history"], run["config"]


@pytest.mark.slow
def test_wandb_with_packed_runs_records_each_run_its_summary_tags_and_exit_code(tmp_path):
    """Two runs packed in one process, one of them diverging: each is its own W&B run."""
    import subprocess

    import yaml
    pytest.importorskip("wandb")
    base = {"model": {"width": 32, "depth": 1, "context": 32, "head_dim": 16}, "data": {"vocab_size": 64},
            "train": {"batch_tokens": 512, "tokens": 4096, "device": "cpu", "threads": 1},
            "eval": {"tokens": 512, "points": 2}, "run": {"tracker": "wandb", "log_every": 1}}
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "wbpack", "base": base, "family": "grid",
                                    "axes": {"optim.lr": [3e-3, 1e3]}}))
    env = {**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"),
           "WANDB_SILENT": "true"}
    (tmp_path / "wb").mkdir()
    r = subprocess.run([sys.executable, "-m", "sweeps", "run", str(spec), "--out", str(tmp_path / "sweep"),
                        "--pack", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1, r.stdout + r.stderr                    # one diverged
    assert "1 completed" in r.stdout and "1 diverged" in r.stdout, r.stdout
    summaries = {json.loads(p.read_text())["run_id"]: json.loads(p.read_text())
                 for p in (tmp_path / "sweep").glob("*/summary.json")}
    assert {s["packed_with"] for s in summaries.values()} == {2}
    runs = {}
    for d in (tmp_path / "wb" / "wandb").glob("offline-run-*"):
        got = read_wandb_run(next(d.glob("*.wandb")))
        runs[got["name"]] = got
    assert set(runs) == set(summaries)
    for run_id, s in summaries.items():
        w = runs[run_id]
        assert w["summary"]["status"] == s["status"]
        assert w["summary"]["params_total"] == s["params_total"] > 0
        assert w["summary"]["flops_per_token"] == pytest.approx(s["flops_per_token"])
        assert w["summary"]["loss_floor"] == pytest.approx(s["loss_floor"])
        assert w["exit_code"] == (0 if s["status"] == "completed" else 1)
        assert w["tags"] == ["sweep:wbpack", "shape:gpt-w32-d1", "tokens:4.1e+03"]


def test_a_missing_wandb_is_a_config_error_before_a_sweep_or_run_starts(tmp_path, monkeypatch, capsys):
    import yaml

    from sweeps.cli import main as sweep_main
    from train.cli import main as train_main
    monkeypatch.setitem(sys.modules, "wandb", None)   # as if not installed
    assert train_main(["--out", str(tmp_path / "run"), *TINY, "run.tracker=wandb"]) == 2
    assert "pip install 'scaling-testbed[wandb]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "wb", "base": {"run": {"tracker": "wandb"}}, "family": "grid",
                                    "axes": {"run.seed": [0, 1]}}))
    assert sweep_main(["run", str(spec), "--out", str(tmp_path / "sweep")]) == 2
    assert "scaling-testbed[wandb]" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()
