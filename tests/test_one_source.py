"""One source for the eval steps and the schedule features: a fit and a forecast read the same numbers.

A real run trains once (30 steps, in-process, a WSD schedule that anneals), and the test checks
that the table a law is fitted on (`analysis.load.load_runs`) and the forecast of the same
run's config (`analysis.predict.forecast`) agree at every eval step, and that both agree with
numbers computed here by hand from what the trainer logged.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.fitresult import FitResult
from analysis.laws import LAWS, kaplan_schedule_params

BATCH = 128
STEPS = 30
POINTS = 8
# np.geomspace(1, 30, 8) = 1, 1.63, 2.64, 4.30, 6.98, 11.35, 18.45, 30, rounded; the last step always
HAND_EVAL_STEPS = [1, 2, 3, 4, 7, 11, 18, 30]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 30-step WSD run (warmup 3, decay over the last 30%), every train step logged."""
    pytest.importorskip("torch")
    from train.api import train_run
    from train.config import RunConfig

    cfg = RunConfig().with_overrides({
        "model.width": 16, "model.depth": 1, "model.context": 16, "model.head_dim": 8, "data.vocab_size": 32,
        "train.batch_tokens": BATCH, "train.tokens": BATCH * STEPS, "eval.tokens": 256, "eval.points": POINTS,
        "train.threads": 1, "run.log_every": 1,
        "schedule.kind": "wsd", "schedule.warmup_steps": 3, "schedule.decay_frac": 0.3})
    run = tmp_path_factory.mktemp("one-source") / "run"
    train_run(cfg, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return run, rows


def _kaplan_schedule_fit(n_samples: int = 16) -> FitResult:
    """A kaplan-schedule fit (made by hand, no fitting) whose annealing term C*S2 moves the loss by ~2%."""
    law = LAWS["kaplan-schedule"]
    params = kaplan_schedule_params(Nc=1e8, Sc=1e3, alpha_N=0.1, alpha_S=0.3, C=1e-4)
    rng = np.random.default_rng(0)
    nat = np.array([params[p] for p in law.param_names])
    samples = nat * np.exp(0.01 * rng.standard_normal((n_samples, len(nat))))
    return FitResult(law="kaplan-schedule", law_version=law.version, params=params, intervals={},
                     interval_level=0.9, samples=samples, objective=0.0, converged=True, message="", residuals={},
                     warnings=[], settings={}, convention={"N": "non_embedding"}, inputs={"ranges": {"D": [BATCH, 1e9]}},
                     n_points=0, param_names=law.param_names)


def test_the_trainer_evaluates_at_the_contract_steps_computed_by_hand(trained_run):
    """Mutations eval_steps_linear, eval_steps_drop_last: the eval rule is log-spaced and keeps the last step."""
    _, rows = trained_run
    steps = [r["step"] for r in rows if r["kind"] == "eval" and r["step"] > 0]
    assert steps == HAND_EVAL_STEPS


def test_a_forecast_of_the_runs_config_is_the_fitted_tables_law_at_every_eval_step(trained_run):
    """Mutations forecast_curve_steps, schedule_decay_fit_side, schedule_s1_in_steps_forecast_side: the
    forecast curve has the trainer's eval steps and, at every one of them (not only the last), the law read
    at the N, S1 and S2 the fitted table holds for that step."""
    from analysis.load import load_runs
    from analysis.predict import forecast, run_covariates

    run, _ = trained_run
    table = load_runs(run, n_convention="non_embedding").sort_values("step")
    assert table["S2"].iloc[-1] > 0                       # the run annealed: S2 is not trivially zero
    result = _kaplan_schedule_fit()
    config = json.loads((run / "config.json").read_text())
    fc = forecast(result, config)
    assert fc.steps.tolist() == table["step"].tolist() == HAND_EVAL_STEPS
    assert fc.tokens.tolist() == table["D"].tolist()
    want = result.predict(N=table["N"].to_numpy(float), S1=table["S1"].to_numpy(float), S2=table["S2"].to_numpy(float))
    np.testing.assert_allclose(fc.loss, want, rtol=1e-12)
    cov, steps, _, _, _ = run_covariates(result, config)
    np.testing.assert_array_equal(steps, table["step"].to_numpy())
    np.testing.assert_allclose(cov["S1"], table["S1"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(cov["S2"], table["S2"].to_numpy(), rtol=1e-12)
    # the annealing term is big enough that a wrong S2 shows in the loss, not only in S2
    assert result.params["C"] * table["S2"].iloc[-1] > 1e-3 * fc.loss[-1]


def test_the_fitted_tables_schedule_features_are_those_of_the_lr_the_trainer_used(trained_run):
    """Mutations schedule_s1_in_steps, schedule_decay_constant, schedule_decay_fit_side: S1 and S2 by hand
    (Tissue et al. 2024 Eqs. 1-3, decay 0.999, in tokens, no annealing credit during warmup) from the lr each
    step really used, as metrics.jsonl logs it."""
    from analysis.load import load_runs

    run, rows = trained_run
    lr = {r["step"]: r["lr"] for r in rows if r["kind"] == "train"}
    assert sorted(lr) == list(range(1, STEPS + 1))
    peak = max(lr.values())
    eta = [lr[s] / peak for s in range(1, STEPS + 1)]
    top = eta.index(max(eta))                              # the step (0-based) the warmup reaches the peak
    S1, S2, m, a1, a2 = {}, {}, 0.0, 0.0, 0.0
    for i in range(STEPS):
        drop = eta[i - 1] - eta[i] if i > top else 0.0
        m = 0.999 * m + drop
        a1 += eta[i]
        a2 += m
        S1[i + 1], S2[i + 1] = a1 * BATCH, a2 * BATCH
    table = load_runs(run).sort_values("step")
    np.testing.assert_allclose(table["S1"], [S1[s] for s in table["step"]], rtol=1e-9)
    np.testing.assert_allclose(table["S2"], [S2[s] for s in table["step"]], rtol=1e-9)
    # lr / peak: 1/3, 2/3 (warmup), 1 for steps 3-21, then 0.9, 0.8, ..., 0.1 (decay): 24.5 peak-lr steps
    assert S1[STEPS] == pytest.approx(24.5 * BATCH, rel=1e-12)
