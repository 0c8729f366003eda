"""The checked forecast end to end, at the miniature scale (seconds on a CPU)."""
from __future__ import annotations

import json
import math
import shutil
from collections import namedtuple

import pytest

import yaml

from models.counting import flops_per_token, param_counts
from testbed import demo
from sweeps.expand import expand
from testbed.preset import PRESETS, _spec, ladder_runs, load_preset, preset_from_dict, target_config, targets_spec


def train_ladder_in_process(out, preset):
    """Train the preset's ladder in its sweep directory here, one run after another, each from the
    config file the sweep wrote, with one thread as a worker of a two-job sweep on two cores has.
    A worker subprocess spends seconds importing torch for a run that trains in a fraction of one;
    the demo's own `run_sweep` then finds every run finished. The subprocess executor has its own
    tests (tests/test_sweeps_run.py)."""
    import torch

    from sweeps import run_sweep
    from sweeps.sweepdir import SweepDir
    from train.api import train_run
    from train.config import load_config

    demo.prepare_dir(out, preset)
    planned = run_sweep(preset.ladder, out / "ladder", dry_run=True, quiet=True, log=None)
    sd = SweepDir(out / "ladder")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for r in planned.runs:
            assert train_run(load_config(sd.config_file(r.run_id)), sd.run_dir(r.run_id))["status"] == "completed"
    finally:
        torch.set_num_threads(threads)


def before_sizes(out) -> int:
    """The model sizes among the rows the demo fitted its law on."""
    from analysis.load import load_runs

    return int(demo.fitted_rows(load_runs(out / "ladder"), load_preset("mini"))["N"].nunique())


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory):
    """A mini demo interrupted as the target starts, then rerun to the end (its ladder trained in-process)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    import train.api

    train_ladder_in_process(out, load_preset("mini"))

    real = train.api.train_run

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    train.api.train_run = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            demo.run_demo(out, "mini", quiet=True)
    finally:
        train.api.train_run = real
    before = json.loads((out / demo.FORECAST_FILE).read_text())
    ladder_mtimes = {p: p.stat().st_mtime_ns for p in (out / "ladder").glob("*/summary.json")}
    result = demo.run_demo(out, "mini", quiet=True)
    return out, before, ladder_mtimes, result


@pytest.mark.slow
def test_forecast_is_written_before_the_target_trains(finished_demo):
    out, before, _, _ = finished_demo
    assert before["actual"] is None and before["inside_interval"] is None
    assert before["lower"] <= before["predicted"] <= before["upper"]


@pytest.mark.slow
def test_forecast_json_is_complete_and_consistent(finished_demo):
    out, before, _, result = finished_demo
    fc = json.loads((out / demo.FORECAST_FILE).read_text())
    assert fc == json.loads(json.dumps(result))
    for key in ("predicted", "lower", "upper", "actual", "compute_ratio", "law"):
        assert fc[key] is not None, key
    assert fc["lower"] <= fc["predicted"] <= fc["upper"]
    assert fc["bootstrap_lower"] <= fc["bootstrap_upper"]
    assert fc["compute_ratio"] >= 10
    # the headline interval is the calibrated one: predicted * exp(-/+ q sigma), sigma from the ladder's backtests
    # and q the Student-t quantile with the ladder's model sizes less one degrees of freedom
    from scipy.stats import t as student_t

    iv = fc["interval"]
    assert iv["kind"] == "calibrated" and iv["extrapolation_error"]["n_forecasts"] >= 1
    sizes = before_sizes(out)
    assert iv["extrapolation_error"]["dof"] == sizes - 1
    q = float(student_t.ppf(0.95, sizes - 1))
    assert fc["lower"] == pytest.approx(fc["predicted"] * math.exp(-q * iv["sigma"]), rel=1e-9)
    assert fc["upper"] == pytest.approx(fc["predicted"] * math.exp(q * iv["sigma"]), rel=1e-9)
    e = iv["extrapolation_error"]
    assert iv["sigma"] ** 2 >= e["s0"] ** 2 + (e["k"] * math.log(fc["compute_ratio"])) ** 2 - 1e-12
    # the forecast made before the target trained is the one checked afterwards
    assert fc["predicted"] == before["predicted"] and fc["lower"] == before["lower"]
    summary = json.loads((out / "target" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert fc["actual"] == summary["final_val_loss"]
    assert fc["abs_rel_error"] == pytest.approx(abs(fc["predicted"] - fc["actual"]) / fc["actual"])
    assert fc["inside_interval"] == (fc["lower"] <= fc["actual"] <= fc["upper"])
    # the target's compute really is compute_ratio x the largest ladder run
    ladder = [json.loads(p.read_text()) for p in (out / "ladder").glob("*/summary.json")]
    c_max = max(s["flops_per_token"] * s["tokens"] for s in ladder)
    assert fc["compute_ratio"] == pytest.approx(summary["flops_per_token"] * summary["tokens"] / c_max, rel=1e-9)
    curve = fc["curve"]
    assert len(curve["predicted"]) == len(curve["steps"]) == len(curve["actual"])
    assert curve["actual"][-1] == pytest.approx(fc["actual"])
    # forecast points exist exactly where the target has seen at least the ladder's smallest budget
    d_min = min(s["tokens"] for s in ladder)
    for t, p, lo, hi in zip(curve["tokens"], curve["predicted"], curve["lower"], curve["upper"]):
        assert (p is not None) == (t >= d_min)
        if p is not None:
            assert lo <= hi
    assert curve["predicted"][-1] == pytest.approx(fc["predicted"])


@pytest.mark.slow
def test_outputs_exist(finished_demo):
    from analysis.fitresult import FitResult

    out, *_ = finished_demo
    fit = FitResult.from_json(out / demo.FIT_FILE)
    assert fit.law == load_preset("mini").fit.law and fit.samples is not None
    report = (out / "report.md").read_text()
    for png in ("ladder_curves.png", "fit.png", "target_curve.png"):
        assert (out / "report_files" / png).stat().st_size > 0
        assert png in report


@pytest.mark.slow
def test_fit_json_forecasts_the_target_from_the_command_line(finished_demo, capsys):
    # fit.json carries the measured extrapolation error; `testbed predict --run` on the target's
    # config gives the forecast the demo made, with a calibrated interval
    from analysis.cli import predict_main

    out, *_ = finished_demo
    fc = json.loads((out / demo.FORECAST_FILE).read_text())
    assert predict_main([str(out / demo.FIT_FILE), "--run", str(out / "target" / "config.json"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["loss"] == pytest.approx(fc["predicted"], rel=1e-12)
    assert got["interval"] == "calibrated" and got["lower"] < got["loss"] < got["upper"]
    # the same interval: the distance is measured in the runs' own FLOP convention, as the demo does
    assert got["lower"] == pytest.approx(fc["lower"], rel=1e-9) and got["upper"] == pytest.approx(fc["upper"], rel=1e-9)
    assert got["curve"]["steps"] == fc["curve"]["steps"]
    # and leaves out the same early points the demo does (before the fewest tokens fitted)
    assert [p is None for p in got["curve"]["loss"]] == [p is None for p in fc["curve"]["predicted"]]


@pytest.mark.slow
def test_rerun_trains_nothing_again(finished_demo):
    out, _, ladder_mtimes, result = finished_demo
    target_summary = out / "target" / "summary.json"
    t0 = target_summary.stat().st_mtime_ns
    again = demo.run_demo(out, "mini", quiet=True)
    assert again["actual"] == result["actual"] and again["predicted"] == result["predicted"]
    assert target_summary.stat().st_mtime_ns == t0
    assert ladder_mtimes and all(p.stat().st_mtime_ns == m for p, m in ladder_mtimes.items())


@pytest.mark.slow
def test_the_ladder_trained_is_the_presets_sweep_spec(finished_demo):
    out, *_ = finished_demo
    from analysis.load import load_runs

    preset = load_preset("mini")
    finals = load_runs(out / "ladder")
    finals = finals[finals["final"]]
    trained = sorted(zip(finals["width"], finals["depth"], finals["D"], strict=True))
    planned = sorted((r.config.model.width, r.config.model.depth, r.tokens) for r in ladder_runs(preset))
    assert trained == planned
    assert (16, 1, 20480) in trained and len(trained) == 7


@pytest.mark.slow
def test_the_forecast_names_where_the_target_lies_outside_the_ladder(finished_demo):
    # the mini target is two layers deep, every ladder run one: the law never saw depth change
    out, before, _, result = finished_demo
    assert any(w.startswith("depth 2 (ladder: 1-1") for w in result["outside_ladder"]), result["outside_ladder"]
    assert before["outside_ladder"] == result["outside_ladder"]
    assert "outside the ladder in: depth 2" in (out / "report.md").read_text()


def test_the_target_follows_the_presets_rules_and_compute_ratio():
    d = yaml.safe_load((PRESETS / "mini.yaml").read_text())
    d["ladder"]["rules"] = {"optim.lr": "0.02 * (N / 10000) ** -0.5"}
    preset = preset_from_dict(d)
    target = target_config(preset)
    n = param_counts(target.model)["non_embedding"]
    assert target.optim.lr == pytest.approx(0.02 * (n / 10000) ** -0.5)
    c_max = max(r.flops for r in ladder_runs(preset))
    c_target = flops_per_token(target.model, target.run.flop_convention) * target.train.tokens
    batch = flops_per_token(target.model, target.run.flop_convention) * target.train.batch_tokens
    assert 10 * c_max <= c_target < 10 * c_max + batch   # whole batches, at least the ratio
    assert (target.model.width, target.model.depth) == (64, 2)


def test_one_shape_at_two_compute_ratios_gives_two_targets():
    # the forecast matrix asks for the same shape 10x and 30x out: two runs, named apart, each its own budget
    preset = preset_from_dict(yaml.safe_load((PRESETS / "mini.yaml").read_text()))
    runs = expand(_spec(targets_spec(preset, [{"compute_ratio": 10}, {"compute_ratio": 30}, {"width": 48}])))
    names = [r.config.run.name for r in runs]
    assert names == ["target-w64-d2-10x", "target-w64-d2-30x", "target-w48-d2"]
    c_max = max(r.flops for r in ladder_runs(preset))
    for r, ratio in zip(runs[:2], (10, 30)):
        c, batch = (r.flops_per_token * t for t in (r.config.train.tokens, r.config.train.batch_tokens))
        assert ratio * c_max <= c < ratio * c_max + batch   # whole batches, at least each one's ratio
    # a lone shape keeps its name, as the demo's target always had
    assert target_config(preset).run.name == "target-w64-d2"
    # the same shape at the same ratio twice is one run asked for twice: refused, naming it
    with pytest.raises(demo.DemoError, match="w64 d2 at 30x is given twice"):
        targets_spec(preset, [{"compute_ratio": 30}, {"compute_ratio": 10}, {"compute_ratio": 30}])


def test_a_preset_with_a_repeated_ladder_run_is_refused(tmp_path):
    d = yaml.safe_load((PRESETS / "mini.yaml").read_text())
    z = d["ladder"]["zip"][0]
    for key in z:
        z[key] = z[key] + [z[key][0]]
    with pytest.raises(demo.DemoError, match="duplicate run"):
        preset_from_dict(d)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(targte=d.pop("target")), "unknown key 'targte'.*did you mean 'target'"),
    (lambda d: d["target"].pop("compute_ratio"), "target.compute_ratio is missing"),
    (lambda d: d["target"].update(compute_ratio=0.5), "compute_ratio must be a number > 1"),
    (lambda d: d["fit"].update(law="kaplin"), "fit.law: unknown law 'kaplin'"),
    (lambda d: d["fit"].update(select="some"), "fit.select must be final or all"),
    (lambda d: d["fit"].update(law="auto", candidates=["kaplan", "shedule"]), "fit.candidates: unknown law 'shedule'"),
    (lambda d: d["fit"].update(candidates="kaplan"), "fit.candidates must be a list of laws"),
    (lambda d: d["fit"].update(curves_only="yes"), "fit.curves_only must be true or false"),
    (lambda d: d["ladder"].update(family="pyramid"), "ladder: .*family"),
])
def test_a_bad_preset_fails_naming_the_key(edit, message):
    d = yaml.safe_load((PRESETS / "mini.yaml").read_text())
    edit(d)
    with pytest.raises(demo.DemoError, match=message):
        preset_from_dict(d, source="bad.yaml")


@pytest.mark.slow
def test_a_directory_holding_another_demo_is_refused(finished_demo):
    out, *_ = finished_demo
    d = yaml.safe_load((PRESETS / "mini.yaml").read_text())
    d["fit"]["bootstrap"] = 7
    with pytest.raises(demo.DemoError, match="different demo"):
        demo.run_demo(out, preset_from_dict(d), quiet=True)
    # how many ladder runs train at once does not make it another demo
    assert load_preset("mini").with_jobs(1).settings() == load_preset("mini").settings()


def test_the_data_option_runs_the_recipe_on_another_corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    preset = load_preset("mini").with_data(str(corpus))
    assert preset.ladder["base"]["data"]["source"] == str(corpus)
    assert load_preset("mini").ladder["base"]["data"]["source"] == "synthetic"   # the built-in preset is untouched
    assert preset.settings() != load_preset("mini").settings()


def test_bad_directories_and_settings_fail_before_training(tmp_path, monkeypatch):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(demo.DemoError, match="not empty"):
        demo.run_demo(busy, "mini", quiet=True)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    with pytest.raises(demo.DemoError, match="unknown demo preset 'huge'"):
        demo.run_demo(tmp_path / "x", "huge", quiet=True)
    with pytest.raises(demo.DemoError, match="--jobs"):
        load_preset("mini").with_jobs(0)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(demo.DemoError, match="MB free"):
        demo.run_demo(tmp_path / "full", "mini", quiet=True)
    assert not (tmp_path / "full" / "ladder").exists()


def test_cli_exit_code_names_the_problem(tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "f").write_text("x")
    assert demo.main(["--out", str(busy), "--scale", "mini", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow
def test_history_adds_its_interval_to_the_checked_forecast(finished_demo, tmp_path):
    """`run_demo(history=...)`: nine earlier checked forecasts of the preset's method give q (their largest
    score at 90%); the record carries predicted * ratio^(-/+q), scored against the actual; a rerun without
    history drops it; a history too small is refused before anything trains."""
    out, _, _, result = finished_demo
    method = load_preset("mini").fit.law
    past = [{"method": method, "law": "any", "predicted": 1.0, "actual": math.exp(0.002 * i * math.log(10.0)),
             "compute_ratio": 10.0} for i in range(1, 10)]
    (tmp_path / "h.json").write_text(json.dumps(past))
    # its own forecast.json (a glob over demo directories would name it) is left out of its history
    got = demo.run_demo(out, "mini", quiet=True, history=[tmp_path / "h.json", out / demo.FORECAST_FILE])
    h, q = got["history"], 0.018
    assert h["n"] == 9 and h["q"] == pytest.approx(q)
    assert h["lower"] == pytest.approx(got["predicted"] * got["compute_ratio"] ** -q)
    assert h["upper"] == pytest.approx(got["predicted"] * got["compute_ratio"] ** q)
    assert h["inside"] == (h["lower"] <= got["actual"] <= h["upper"])
    assert json.loads((out / demo.FORECAST_FILE).read_text())["history"] == h
    assert got["predicted"] == result["predicted"] and got["lower"] == result["lower"]   # the ladder's own is kept
    assert "history" not in demo.run_demo(out, "mini", quiet=True)
    assert "history" not in json.loads((out / demo.FORECAST_FILE).read_text())
    (tmp_path / "few.json").write_text(json.dumps(past[:5]))
    fresh = tmp_path / "fresh"
    with pytest.raises(demo.DemoError, match="--history: a 90% conformal interval needs at least 9"):
        demo.run_demo(fresh, "mini", quiet=True, history=[tmp_path / "few.json"])
    assert not fresh.exists()


def test_a_preset_finds_the_history_shipped_for_its_recipe_only():
    """The cpu preset's shipped history applies to the cpu recipe whatever its jobs, not to the same recipe on
    other data or with other budgets, and never with the running seed's own forecasts; mini has none."""
    import copy

    from analysis.history import calibrate_records, conformal_quantile, history_scores
    from testbed.preset import HISTORIES, shipped_history

    cpu = load_preset("cpu")
    path, rows = shipped_history(cpu)
    assert path == HISTORIES / "cpu.json"
    assert len(rows) == len(json.loads(path.read_text())["records"]) >= 9 and 0 not in {r["seed"] for r in rows}
    assert calibrate_records(rows).q == conformal_quantile(history_scores(rows), 0.9)
    assert shipped_history(cpu.with_jobs(1))[1] == rows
    assert shipped_history(cpu.with_data("corpus.txt")) is None
    longer = copy.deepcopy(cpu.ladder)
    longer["tokens"] = [2 * t for t in longer["tokens"]]
    assert shipped_history(preset_from_dict({**cpu.settings(), "ladder": longer})) is None
    seeded = copy.deepcopy(cpu.ladder)
    seeded["base"]["data"]["seed"] = rows[0]["seed"]
    own = shipped_history(preset_from_dict({**cpu.settings(), "ladder": seeded}))[1]
    assert rows[0]["seed"] not in {r["seed"] for r in own} and 0 < len(own) < len(rows)
    assert shipped_history(load_preset("mini")) is None


@pytest.mark.slow
def test_the_demo_uses_the_shipped_history_unless_told_not_to(finished_demo, tmp_path, monkeypatch, capsys):
    """With a history shipped for the mini recipe, a plain rerun of the demo carries its interval and says where
    it came from; history=[] (--no-history) drops it; --history and --no-history together are refused."""
    import testbed.preset as preset_mod

    out, _, _, result = finished_demo
    mini = load_preset("mini")
    records = [{"seed": 100 + i, "method": mini.fit.law, "predicted": 1.0, "compute_ratio": 10.0,
                "actual": math.exp(0.002 * i * math.log(10.0))} for i in range(1, 10)]
    (tmp_path / "mini.json").write_text(json.dumps({"recipe": preset_mod.recipe_key(mini), "records": records}))
    monkeypatch.setattr(preset_mod, "HISTORIES", tmp_path)
    got = demo.run_demo(out, "mini", quiet=True)
    h = got["history"]
    assert h["n"] == 9 and h["q"] == pytest.approx(0.018) and h["source"].endswith(f"{tmp_path.name}/mini.json")
    assert h["inside"] == (h["lower"] <= got["actual"] <= h["upper"])
    assert got["predicted"] == result["predicted"]
    assert "history" not in demo.run_demo(out, "mini", quiet=True, history=[])
    assert demo.main(["--out", str(out), "--scale", "mini", "--quiet", "--no-history"]) == 0
    assert "history" not in json.loads((out / demo.FORECAST_FILE).read_text())
    with pytest.raises(SystemExit):
        demo.main(["--out", str(out), "--scale", "mini", "--no-history", "--history", str(tmp_path / "mini.json")])
    assert "exclude each other" in capsys.readouterr().err
