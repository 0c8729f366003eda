"""Every sweep preset expands into valid runs and plans without training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    assert main(["plan", str(path), "--json", "--throughput", "none"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["totals"]["runs"] == len(plan["runs"]) > 0
    assert all(r["C"] > 0 and r["D"] > 0 for r in plan["runs"])


def test_preset_by_name():
    assert load_spec("cpu_demo_ladder").name == "cpu_demo_ladder"


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
