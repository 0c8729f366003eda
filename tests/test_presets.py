"""Every sweep preset expands into valid runs and plans without training."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.counting import flops_per_token, param_counts
from sweeps.cli import main
from sweeps.expand import expand
from sweeps.spec import load_spec

PRESETS = sorted((Path(__file__).resolve().parents[1] / "sweeps" / "presets").glob("*.yaml"))
REQUIRED = {"cpu_demo_ladder", "isoflop", "lr_sweep", "gpt_vs_lstm", "wikipedia_gpu_ladder", "wsd_branches"}


def test_the_required_presets_exist():
    assert REQUIRED <= {p.stem for p in PRESETS}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_expands_and_validates(path):
    spec = load_spec(path)
    runs = expand(spec)
    assert runs and len({r.run_id for r in runs}) == len(runs)
    for r in runs:
        r.config.validate()
        assert r.config.run.sweep == spec.name
        assert r.run_id == r.config.resolved().run_id()


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_plan_runs_on_preset(path, capsys):
    """The plan's numbers for each run, recomputed here from the run's resolved config."""
    assert main(["plan", str(path), "--json", "--throughput", "none"]) == 0
    plan = json.loads(capsys.readouterr().out)
    spec = load_spec(path)
    runs = expand(spec)
    assert plan["totals"]["runs"] == len(plan["runs"]) == len(runs) > 0
    for row, r in zip(plan["runs"], runs, strict=True):
        cfg = r.config
        n = param_counts(cfg.model)[spec.n_params]
        assert (row["run_id"], row["N"], row["D"]) == (r.run_id, n, cfg.train.tokens)
        assert row["C"] == pytest.approx(flops_per_token(cfg.model, cfg.run.flop_convention) * cfg.train.tokens,
                                         rel=1e-12)
        assert row["steps"] == math.ceil(cfg.train.tokens / cfg.train.batch_tokens)
        assert row["tokens_per_param"] == pytest.approx(cfg.train.tokens / n, rel=1e-12)
        assert (row["lr"], row["seed"], row["parent"]) == (cfg.optim.lr, cfg.run.seed, r.parent)
        # what the sweep spends on the run: a WSD branch trains only the steps after its parent's checkpoint
        trained_steps = row["steps"] - (r.branch_step if r.parent else 0)
        assert row["C_trained"] == pytest.approx(
            flops_per_token(cfg.model, cfg.run.flop_convention) * trained_steps * cfg.train.batch_tokens, rel=1e-12)
    assert plan["totals"]["C"] == pytest.approx(sum(row["C_trained"] for row in plan["runs"]), rel=1e-12)


def test_a_preset_by_name_is_its_file():
    by_name, by_path = load_spec("cpu_demo_ladder"), load_spec(PRESETS[0].parent / "cpu_demo_ladder.yaml")
    assert by_name.name == "cpu_demo_ladder"
    assert [r.run_id for r in expand(by_name)] == [r.run_id for r in expand(by_path)]


def test_cpu_demo_ladder_shape_of_the_design():
    spec = load_spec("cpu_demo_ladder")
    runs = expand(spec)
    sizes = {r.n_params for r in runs}
    tokens_per_param = {r.tags["tokens_per_param"] for r in runs}
    assert 4 <= len(sizes) <= 5 and len(tokens_per_param) == 3
    assert all(r.config.model.kind == "gpt" and r.config.data.source == "synthetic" for r in runs)
    # small enough for a few minutes on 2 CPU cores (~30k tokens/s per worker measured here)
    assert sum(r.tokens for r in runs) < 8e6


def test_gpt_vs_lstm_matches_compute():
    runs = expand(load_spec("gpt_vs_lstm"))
    for kind in ("gpt", "lstm"):
        budgets = {r.tags["budget"] for r in runs if r.config.model.kind == kind}
        assert budgets == {r.tags["budget"] for r in runs}
    for r in runs:
        assert abs(r.flops / r.tags["budget"] - 1) <= 0.01


def test_planning_does_not_import_torch():
    import subprocess
    import sys
    code = ("import sys; from sweeps.cli import main; "
            "assert main(['plan', 'isoflop', '--json', '--throughput', 'none']) == 0; "
            "import sweeps.local, sweeps.status, sweeps.slurm; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
