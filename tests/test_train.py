"""The training path end to end on tiny models: run directory contract, eval spacing,
divergence, WSD branching via train.init_from, batch splitting, the metrics reader."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from train.api import train_run
from train.config import RunConfig
from train.contract import eval_steps
from train.rundir import read_metrics, read_run, write_metrics

TINY = {
    "model.width": 32, "model.depth": 1, "model.context": 32, "data.vocab_size": 64,
    "train.batch_tokens": 512, "train.tokens": 1024, "eval.tokens": 1024, "eval.points": 4,
    # one thread: tiny matmuls gain nothing from more, and tests share the cores with other work
    "train.threads": 1,
    # exact-equality tests compare fp32 CPU runs: pinned, so a GPU host does not move them to bf16 CUDA
    "train.device": "cpu",
}
SUMMARY_KEYS = {"status", "params_total", "params_non_embedding", "params_embedding", "flops_per_token",
                "flop_convention", "final_train_loss", "final_val_loss", "loss_floor", "tokens", "steps",
                "wall_time_s", "tokens_per_s", "device", "versions", "git_rev", "data"}


def tiny(**kw) -> RunConfig:
    return RunConfig().with_overrides({**TINY, **kw})


def test_two_step_smoke_run_writes_the_whole_contract(tmp_path):
    cfg = tiny()
    summary = train_run(cfg, tmp_path / "run")
    config, rows, stored = read_run(tmp_path / "run")

    assert config == cfg.resolved().to_dict()
    assert stored == summary
    assert SUMMARY_KEYS <= set(summary)
    assert summary["status"] == "completed"
    assert summary["steps"] == 2 and summary["tokens"] == 1024
    from models.counting import flops_per_token, param_counts
    counts = param_counts(cfg.resolved().model)
    assert summary["params_total"] == counts["total"]
    assert summary["params_non_embedding"] == counts["non_embedding"]
    assert summary["params_embedding"] == counts["embedding"]
    assert summary["flops_per_token"] == flops_per_token(cfg.resolved().model, "exact")
    assert summary["loss_floor"] is not None and 0 < summary["loss_floor"] < math.log(64)
    assert summary["data"]["source"] == "synthetic"
    assert summary["versions"]["torch"]

    for r in rows:
        assert {"kind", "step", "tokens", "flops", "lr", "time_s"} <= set(r)
        assert r["tokens"] == 512 * r["step"]
        assert r["flops"] == pytest.approx(r["tokens"] * summary["flops_per_token"])
        assert ("loss" in r) == (r["kind"] == "train") and ("val_loss" in r) == (r["kind"] == "eval")
    train_rows = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert [r["step"] for r in evals] == [1, 2]
    # initial loss of a fresh model is close to ln V
    assert train_rows[0]["loss"] == pytest.approx(math.log(64), abs=0.3)
    assert summary["final_val_loss"] == evals[-1]["val_loss"]
    assert summary["final_train_loss"] == train_rows[-1]["loss"]
    assert (tmp_path / "run" / "ckpt" / "step_00000002.pt").exists()


def test_completed_directory_returns_its_summary_without_training(tmp_path):
    first = train_run(tiny(), tmp_path / "run")
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = train_run(tiny(**{"train.device": "cpu"}), tmp_path / "run")  # where it runs is not the config
    assert again == first
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics


def test_eval_steps_are_log_spaced_with_the_final_step():
    steps = eval_steps(1000, 32)
    assert steps[0] == 1 and steps[-1] == 1000
    assert steps == sorted(set(steps))
    ratios = [b / a for a, b in zip(steps[10:], steps[11:])]
    assert max(ratios) / min(ratios) < 1.2  # roughly constant spacing in log(step)
    assert eval_steps(7, 32) == [1, 2, 3, 4, 5, 6, 7]
    assert eval_steps(100, 1) == [1, 100]


def test_run_logs_eval_rows_at_log_spaced_steps(tmp_path):
    cfg = tiny(**{"train.tokens": 512 * 40, "eval.points": 6, "eval.tokens": 256, "run.log_every": 10,
                  "optim.lr": 1e-2})
    train_run(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "eval"] == eval_steps(40, 6)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 10, 20, 30, 40]
    # the fixed val set makes val loss fall as training proceeds
    vals = [r["val_loss"] for r in rows if r["kind"] == "eval"]
    assert vals[-1] < vals[0] - 0.2


def test_lstm_trains_through_the_same_path(tmp_path):
    s = train_run(tiny(**{"model.kind": "lstm", "train.tokens": 512 * 6}), tmp_path / "run")
    assert s["status"] == "completed" and s["final_val_loss"] < math.log(64)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    whole = train_run(tiny(**{"train.tokens": 2048}), tmp_path / "a")
    split = train_run(tiny(**{"train.tokens": 2048, "train.micro_batch_tokens": 128}), tmp_path / "b")
    assert split["final_val_loss"] == pytest.approx(whole["final_val_loss"], rel=1e-5)


def test_divergence_stops_with_status_diverged_and_keeps_metrics(tmp_path, capsys):
    from train.cli import main
    out = tmp_path / "run"
    argv = ["--out", str(out), *(f"{k}={v}" for k, v in TINY.items()), "train.tokens=10240", "optim.lr=1e3",
            "train.grad_clip=0", "schedule.kind=constant", "run.log_every=5"]
    assert main(argv) == 3
    assert "diverged" in capsys.readouterr().err
    _, rows, summary = read_run(out)
    assert summary["status"] == "diverged"
    assert "diverge_factor" in summary["error"]
    assert 1 < summary["steps"] < 20
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert train_rows[0]["step"] == 1 and train_rows[-1]["step"] == summary["steps"]
    # relaunching a diverged directory does not train it again
    assert main(argv) == 3
    assert read_metrics(out / "metrics.jsonl") == rows


def test_wsd_cooldown_branch_equals_a_from_scratch_run(tmp_path):
    wsd = {"schedule.kind": "wsd", "schedule.decay_frac": 0.25, "schedule.warmup_steps": 2,
           "eval.points": 3, "run.log_every": 1}
    # parent: 24 steps, stable through step 18; branch point 12 is pinned as a checkpoint
    parent = tiny(**wsd, **{"train.tokens": 512 * 24, "run.ckpt_steps": "[12]", "run.ckpt_every": 100})
    train_run(parent, tmp_path / "parent")
    ckpt = tmp_path / "parent" / "ckpt" / "step_00000012.pt"
    assert ckpt.exists()
    # a 16-step run decays over steps 13..16: its first 12 steps are the parent's
    scratch = train_run(tiny(**wsd, **{"train.tokens": 512 * 16}), tmp_path / "scratch")
    branch = train_run(tiny(**wsd, **{"train.tokens": 512 * 16, "train.init_from": str(ckpt)}), tmp_path / "branch")
    assert branch["final_val_loss"] == scratch["final_val_loss"]
    assert branch["final_train_loss"] == scratch["final_train_loss"]

    def train_curve(name):
        return [(r["step"], r["loss"], r["lr"]) for r in read_metrics(tmp_path / name / "metrics.jsonl")
                if r["kind"] == "train"]
    assert train_curve("branch") == train_curve("scratch")
    # the branch's rows up to the branch point are the parent's
    parent_rows = [r for r in read_metrics(tmp_path / "parent" / "metrics.jsonl") if r["step"] <= 12]
    assert read_metrics(tmp_path / "branch" / "metrics.jsonl")[:len(parent_rows)] == parent_rows


def test_branch_refuses_an_incompatible_parent(tmp_path):
    from train.config import ConfigError
    parent = tiny(**{"schedule.kind": "wsd", "train.tokens": 512 * 8, "run.ckpt_every": 4})
    train_run(parent, tmp_path / "parent")
    ckpt = str(tmp_path / "parent" / "ckpt" / "step_00000004.pt")
    with pytest.raises(ConfigError, match="model.width"):
        train_run(tiny(**{"schedule.kind": "wsd", "train.tokens": 512 * 6, "train.init_from": ckpt,
                          "model.width": 64}), tmp_path / "b1")
    # a cosine child has a different lr at steps 1..4 than the WSD parent
    with pytest.raises(ConfigError, match="schedule"):
        train_run(tiny(**{"train.tokens": 512 * 6, "train.init_from": ckpt}), tmp_path / "b2")
    with pytest.raises(ConfigError, match="train.init_from"):
        train_run(tiny(**{"train.init_from": str(tmp_path / "nope.pt")}), tmp_path / "b3")


def test_read_metrics_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"kind": "train", "step": 1, "loss": 4.0}, {"kind": "eval", "step": 1, "val_loss": 4.1}]
    write_metrics(path, rows)
    with open(path, "a") as f:
        f.write('{"kind": "train", "step": 2, "lo')
    assert read_metrics(path) == rows
    # damage in the middle is not a torn write: it is reported with the line number
    path.write_text(json.dumps(rows[0]) + "\n{broken\n" + json.dumps(rows[1]) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(path)
    assert read_metrics(tmp_path / "absent.jsonl") == []


def test_read_run_names_a_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        read_run(tmp_path)


@pytest.mark.slow
def test_testbed_train_dispatches_to_the_same_cli(tmp_path):
    out = tmp_path / "run"
    # the console script installed beside this interpreter (the venv need not be on PATH)
    script = Path(sys.executable).with_name("testbed")
    assert script.exists(), f"the testbed console script is not installed beside {sys.executable}"
    proc = subprocess.run([str(script), "train", "--out", str(out), *(f"{k}={v}" for k, v in TINY.items())],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert Path(out / "config.json").exists()


def test_cuda_device_is_refused_without_cuda(tmp_path):
    import torch
    from train.config import ConfigError
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="train.device"):
        train_run(tiny(**{"train.device": "cuda"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
def test_cuda_bf16_run_tracks_the_cpu_run(tmp_path):
    import torch
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    over = {"train.tokens": 512 * 20, "optim.lr": 1e-2, "optim.fused": True}
    gpu = train_run(tiny(**over, **{"train.device": "cuda"}), tmp_path / "gpu")
    cpu = train_run(tiny(**over, **{"train.device": "cpu"}), tmp_path / "cpu")
    assert gpu["status"] == "completed" and gpu["device"].startswith("cuda")
    # bf16 autocast on the GPU, fp32 on the CPU: the same curve within bf16 noise
    assert gpu["final_val_loss"] == pytest.approx(cpu["final_val_loss"], abs=0.05)


@pytest.mark.slow
def test_train_never_imports_sweeps():
    # layering: models <- train <- sweeps; the packed trainer's pack rules live in train.packable
    code = ("import sys, train.api, train.cli, train.loop, train.packed, train.coordcheck; "
            "assert not [m for m in sys.modules if m == 'sweeps' or m.startswith('sweeps.')]")
    subprocess.run([sys.executable, "-c", code], check=True)
