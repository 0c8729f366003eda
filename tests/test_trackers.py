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


def read_wandb_log(path):
    """History rows and config of an offline wandb run, read from its transaction log."""
    from wandb.proto import wandb_internal_pb2
    history, config = [], {}
    for data in _wandb_records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        elif kind in ("config", "run"):
            updates = rec.config.update if kind == "config" else rec.run.config.update
            config.update({i.key: json.loads(i.value_json) for i in updates})
    return history, config
