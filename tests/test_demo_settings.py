"""The README's `cpu` demo settings, fitted and forecast with the demo's own code on a prepared ladder.

Nothing trains: the cpu preset's ladder is written as run directories (its own configs, eval steps
and FLOP counts) whose losses follow a known kaplan-schedule law, with an early plateau before
`fit.min_tokens` that the law does not describe. The demo's fit (`testbed.demo.fit_ladder`: the
preset's law, rows and intervals) and forecast (`analysis.checked.forecast_record` of the preset's
target) must then read the law back and forecast the target at the truth.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from analysis.laws import kaplan_schedule_as_kaplan, kaplan_schedule_params
from analysis.schedule import run_schedule_features
from models.counting import flops_per_token, param_counts
from testbed.demo import fit_ladder, fitted_rows
from testbed.preset import ladder_runs, load_preset, target_config
from train.contract import ckpt_name, eval_steps

# Sc sets where the S1 term matters: at 3e6 it moves the loss over the ladder's 150k-820k tokens, so this
# ladder can tell the law's terms apart (at 3e4 the S1 term is flat here and alpha_S sits at a bound).
# C is the size of the cooldown gain the recipe's real ladders fit (7.5e-7 on the synthetic seed 30): at
# 2e-8 the gain is under the points' noise and a fit can put C at its bound, which auto then passes over
TRUTH = kaplan_schedule_params(Nc=2e9, Sc=3e6, alpha_N=0.12, alpha_S=0.25, C=5e-7)
PLATEAU = 1.15        # eval points before fit.min_tokens sit this far above the law (the early plateau)


def truth_loss(config, steps):
    from analysis.laws import get_law

    S1, S2 = run_schedule_features(config, steps)
    N = np.full(len(steps), float(param_counts(config.model)["non_embedding"]))
    return get_law("kaplan-schedule").predict(TRUTH, N=N, S1=S1, S2=S2)


def write_ladder(root, preset, noise=0.002, seed=0):
    rng = np.random.default_rng(seed)
    for r in ladder_runs(preset):
        cfg = r.config
        if r.parent:     # as the sweep writes a branch's config: it starts from its parent's checkpoint
            cfg = cfg.with_overrides({"train.init_from": str(root / r.parent / "ckpt" / ckpt_name(r.branch_step))})
        d = root / r.run_id
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(cfg.to_dict()))
        steps = np.asarray(eval_steps(cfg.steps, cfg.eval.points))
        tokens = steps * cfg.train.batch_tokens
        loss = truth_loss(cfg, steps) * np.exp(noise * rng.standard_normal(len(steps)))
        loss = np.where(tokens < preset.fit.min_tokens, loss * PLATEAU, loss)
        fpt = flops_per_token(cfg.model, cfg.run.flop_convention)
        (d / "metrics.jsonl").write_text("".join(json.dumps(
            {"kind": "eval", "step": int(s), "tokens": int(t), "flops": fpt * t, "lr": cfg.optim.lr, "time_s": 1.0,
             "val_loss": float(v)}) + "\n" for s, t, v in zip(steps, tokens, loss)))
        counts = param_counts(cfg.model)
        (d / "summary.json").write_text(json.dumps({
            "status": "completed", "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
            "params_embedding": counts["embedding"], "flops_per_token": fpt, "flop_convention": cfg.run.flop_convention,
            "final_val_loss": float(loss[-1]), "tokens": int(tokens[-1]), "steps": int(steps[-1])}))
    return root


@pytest.fixture(scope="module")
def cpu_demo(tmp_path_factory):
    from analysis.checked import forecast_record
    from analysis.load import load_runs

    preset = load_preset("cpu")
    # the preset's fit, fewer bootstrap refits (the interval's width, not its rule, depends on them)
    small = dataclasses.replace(preset, fit=dataclasses.replace(preset.fit, bootstrap=40))
    table = load_runs(write_ladder(tmp_path_factory.mktemp("cpu-ladder"), preset))
    result = fit_ladder(table, small)
    target = target_config(preset)
    record = forecast_record(result, table, target, level=preset.fit.level, fitted=fitted_rows(table, small))
    return preset, table, result, target, record


RULE = "0.0094 * (N / 24736) ** 0.12"


def test_the_cpu_target_follows_the_ladders_lr_rule():
    """Mutation demo_target_ignores_lr_rule: the target's lr is the ladder's rule 0.0094 * (N / 24736) ** 0.12 at
    the target's non-embedding N, not the base lr 0.0094."""
    preset = load_preset("cpu")
    assert preset.ladder["rules"] == {"optim.lr": RULE}
    target = target_config(preset)
    n = param_counts(target.model)["non_embedding"]
    assert (target.model.width, target.model.depth) == (96, 2)
    assert target.optim.lr == pytest.approx(0.0094 * (n / 24736) ** 0.12, rel=1e-12)     # RULE, by hand
    assert target.optim.lr > 1.2 * 0.0094         # N is ~9x the rule's reference size
    # every ladder run, cooldown branches included, follows the same rule
    runs = ladder_runs(preset)
    assert len(runs) == 24 and sum(bool(r.parent) for r in runs) == 16      # 2 inits x 4 sizes x 3 budgets
    for r in runs:
        assert r.config.optim.lr == pytest.approx(0.0094 * (r.n_params / 24736) ** 0.12, rel=1e-12)


def _rows_by_hand(preset, select: str) -> int:
    """Eval points at >= fit.min_tokens (every point for a law of curves) or final points only, counted from the
    ladder's configs: each run keeps its own eval steps of 512-token batches, and a cooldown branch only those
    after its branch step (before it, its points are its parent's, counted once)."""
    n = 0
    for r in ladder_runs(preset):
        steps = eval_steps(r.config.steps, r.config.eval.points)
        own = [s for s in steps if s > (r.branch_step or 0)]
        n += 1 if select == "final" else sum(1 for s in own if s * 512 >= preset.fit.min_tokens or s == steps[-1])
    return n


@pytest.mark.slow
def test_the_cpu_fit_picks_its_law_by_backtests_and_never_one_at_a_bound(cpu_demo):
    """The preset's law is auto: every candidate is fitted and backtested inside the ladder, and the chosen law
    leaves no parameter at a bound (that a law at a bound is passed over, saying why, is
    tests/test_select.py::test_a_law_with_a_parameter_at_its_bound_is_passed_over_and_the_reason_given)."""
    from analysis.laws import get_law
    from analysis.select import params_at_bound

    preset, _, result, _, record = cpu_demo
    assert (preset.fit.law, preset.fit.select, preset.fit.min_tokens) == ("auto", None, 153600)
    selection = result.settings["selection"]
    assert set(selection["candidates"]) == {"kaplan-schedule", "schedule", "kaplan", "chinchilla"}
    assert params_at_bound(result) == [] and selection["at_bound"][result.law] == []
    assert selection["reasons"][-1] == f"chosen: {result.law}"
    assert result.n_points == _rows_by_hand(preset, get_law(result.law).fitted_on)
    assert record["fit"]["min_tokens"] >= 153600


@pytest.mark.slow
def test_a_named_law_is_fitted_on_the_rows_the_preset_selects(tmp_path):
    """Mutations demo_ignores_fit_law, demo_ignores_fit_select, demo_ignores_fit_min_tokens: a preset naming
    kaplan-schedule on every eval point gets that law, on every eval point from fit.min_tokens (counted by hand),
    not Kaplan's final-loss law, not final losses only, not the early plateau."""
    from analysis.load import load_runs

    preset = load_preset("cpu")
    named = dataclasses.replace(preset, fit=dataclasses.replace(preset.fit, law="kaplan-schedule", select="all",
                                                                bootstrap=0))
    table = load_runs(write_ladder(tmp_path, named))
    result = fit_ladder(table, named)
    assert result.law == "kaplan-schedule"
    want = _rows_by_hand(named, "all")
    assert 12 < want < len(table)
    assert result.n_points == want
    assert kaplan_schedule_as_kaplan(result.params)["alpha_N"] == pytest.approx(0.12, rel=0.1)


@pytest.mark.slow
def test_the_cpu_forecast_of_the_target_lands_on_the_truth_with_a_calibrated_interval(cpu_demo):
    """Mutations demo_ignores_fit_min_tokens, demo_ignores_fit_law: fitted on the right rows, the forecast of the
    target (10x the ladder's compute) is the true law's loss there within 1%, and the curve is forecast at every
    one of the target's eval steps from the ladder's fewest fitted tokens on; its interval spans the normal
    quantile, every ladder run having two inits."""
    _, table, _, target, record = cpu_demo
    steps = np.asarray(eval_steps(target.steps, target.eval.points))
    true = truth_loss(target, steps)
    assert record["curve"]["steps"] == steps.tolist()
    assert record["predicted"] == pytest.approx(true[-1], rel=0.01)
    assert record["interval"]["kind"] == "calibrated"
    assert record["lower"] < true[-1] < record["upper"]
    # every ladder run is trained from two inits (replicates: 2), so the interval spans the normal quantile
    err = record["interval"]["extrapolation_error"]
    assert (err["dof"], err["inits"]) == (None, 2)
    assert np.log(record["upper"] / record["predicted"]) == pytest.approx(1.6448536269514722 * record["interval"]["sigma"],
                                                                          rel=1e-9)
    # forecast from the fewest tokens the law was fitted on (>= min_tokens), and at every step from there
    tokens = steps * target.train.batch_tokens
    assert [p is not None for p in record["curve"]["predicted"]] == (tokens >= record["fit"]["min_tokens"]).tolist()
    shown = [(p, t) for p, t in zip(record["curve"]["predicted"], true) if p is not None]
    assert len(shown) >= 5
    np.testing.assert_allclose([p for p, _ in shown], [t for _, t in shown], rtol=0.015)
    assert record["compute_ratio"] == pytest.approx(10.0, rel=0.02)


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_the_readme_presets_plan_a_target_their_fit_can_forecast(name):
    """The README's presets, beyond loading: the target costs compute_ratio x the largest ladder run (whole
    batches, in the runs' own FLOP convention), every ladder run keeps eval points from fit.min_tokens on (so each
    one shapes the curve fit), and the law reads a planned run's config."""
    from analysis.laws import get_law

    preset = load_preset(name)
    runs = ladder_runs(preset)
    target = target_config(preset)
    conv = target.run.flop_convention
    assert {r.config.run.flop_convention for r in runs} == {conv}
    c_max = max(flops_per_token(r.config.model, conv) * r.config.train.tokens for r in runs)
    fpt = flops_per_token(target.model, conv)
    ratio = preset.target["compute_ratio"]
    assert ratio >= 10
    assert ratio * c_max <= fpt * target.train.tokens < ratio * c_max + fpt * target.train.batch_tokens
    assert (target.model.width, target.model.depth) == (preset.target["width"], preset.target["depth"])
    for r in runs:
        batch = r.config.train.batch_tokens
        own = [s for s in eval_steps(r.config.steps, r.config.eval.points) if s > (r.branch_step or 0)]
        kept = [s for s in own if s * batch >= preset.fit.min_tokens]
        # a WSD cooldown branch adds its own final point; every other run a stretch of its curve
        assert len(kept) >= (1 if r.parent else 2), r.run_id
    if preset.fit.law != "auto":     # auto considers only such laws (testbed.demo.fit_ladder)
        assert set(get_law(preset.fit.law).covariates) <= {"N", "D", "S1", "S2"}
