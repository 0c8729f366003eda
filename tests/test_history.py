"""Intervals calibrated on past checked forecasts (analysis.history): the conformal quantile, its coverage
guarantee, reading the product's forecast records, and `testbed predict --history`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.history import (HistoryInterval, calibrate_on_history, conformal_quantile, history_scores,
                              load_history)
from testbed.cli import main as run_testbed
from tests.fake_runs import write_sweep


def test_conformal_quantile_is_the_ceil_n_plus_one_level_th_smallest():
    assert conformal_quantile(np.arange(9.0, 0.0, -1.0), 0.9) == 9.0       # ceil(10 x 0.9) = 9th of 9
    assert conformal_quantile(np.arange(1.0, 20.0), 0.9) == 18.0            # ceil(20 x 0.9) = 18th of 19
    assert conformal_quantile(np.arange(1.0, 11.0), 0.9) == 10.0            # ceil(11 x 0.9) = 10th of 10
    assert conformal_quantile(np.arange(1.0, 11.0), 0.5) == 6.0             # ceil(5.5) = 6th
    with pytest.raises(ValueError, match="at least 9 checked forecasts, the history has 8"):
        conformal_quantile(np.arange(8.0), 0.9)
    with pytest.raises(ValueError, match="level"):
        conformal_quantile(np.arange(20.0), 1.0)


def test_conformal_interval_covers_at_least_its_level_and_not_much_more():
    """Exchangeable scores: the next one falls at or below q with probability ceil((n + 1) L) / (n + 1), here
    10/11 = 0.909 for n = 10 at 90% (the n-th smallest without the +1 would give 9/11 = 0.818)."""
    rng = np.random.default_rng(0)
    trials, n = 6000, 10
    hits = 0
    for _ in range(trials):
        s = np.abs(rng.standard_t(3, size=n + 1))          # heavy-tailed: no distribution is assumed
        hits += s[-1] <= conformal_quantile(s[:-1], 0.9)
    assert abs(hits / trials - 10 / 11) < 0.015


def _rows(tmp_path):
    """A benchmarks/forecast.py cases.json: auto's and schedule's rows, one not trained, one failed."""
    rows = [{"law": "auto", "data": "synthetic", "predicted": 3.0, "actual": 3.0 * np.exp(0.02), "compute_ratio": 10.0},
            {"law": "auto", "data": "synthetic", "predicted": 3.0, "actual": 3.0 * np.exp(-0.034), "compute_ratio": 30.0},
            {"law": "auto", "data": "synthetic", "predicted": 3.1, "actual": None, "compute_ratio": 10.0},
            {"law": "auto", "data": "synthetic", "predicted": 3.1, "error": "the target did not complete",
             "compute_ratio": 10.0},
            {"law": "schedule", "data": "synthetic", "predicted": 2.9, "actual": 3.0, "compute_ratio": 10.0}]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(rows))
    return path


def test_history_reads_checked_records_and_keeps_one_method(tmp_path):
    path = _rows(tmp_path)
    with pytest.raises(ValueError, match=r"several laws \(auto, schedule\).*--history-law"):
        load_history([path])
    got = load_history([path], law="auto")
    assert [r["compute_ratio"] for r in got] == [10.0, 30.0]           # untrained and failed rows left out
    np.testing.assert_allclose(history_scores(got), [0.02 / np.log(10.0), 0.034 / np.log(30.0)], rtol=1e-12)
    with pytest.raises(ValueError, match="no history record has law 'kaplan'"):
        load_history([path], law="kaplan")
    # the demo's forecast.json: one checked record
    one = tmp_path / "forecast.json"
    one.write_text(json.dumps({"law": "mix:a=0.5,b=0.5", "predicted": 3.5, "actual": 3.4, "compute_ratio": 10.0}))
    assert len(load_history([one])) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"loss": 3.0}]))
    with pytest.raises(ValueError, match="without predicted, compute_ratio"):
        load_history([bad])
    with pytest.raises(ValueError, match="history file"):
        load_history([tmp_path / "missing.json"])


def test_history_interval_scales_the_quantile_by_the_log_ratio(tmp_path):
    # nine misses of 1% .. 9% of ln 10 at 10x: q is the 9th smallest score, 0.09
    rows = [{"law": "auto", "predicted": 1.0, "actual": float(np.exp(0.01 * i * np.log(10.0))),
             "compute_ratio": 10.0} for i in range(1, 10)]
    path = tmp_path / "h.json"
    path.write_text(json.dumps(rows))
    hist = calibrate_on_history([path], level=0.9)
    assert isinstance(hist, HistoryInterval) and hist.n == 9 and hist.ratios == (10.0, 10.0)
    assert hist.q == pytest.approx(0.09)
    lo, hi = hist.bounds(3.0, 100.0)
    assert lo == pytest.approx(3.0 * np.exp(-0.09 * np.log(100.0))) and hi == pytest.approx(3.0 * 100.0 ** 0.09)
    assert "outside the history's ratios" in hist.note(100.0) and "outside" not in hist.note(12.0)
    with pytest.raises(ValueError, match="needs at least 19"):
        calibrate_on_history([path], level=0.95)


def test_predict_prints_the_history_interval(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6, 3e6), token_mults=(5, 20, 80), noise=0.003)
    fit, plain = tmp_path / "cal.json", tmp_path / "plain.json"
    assert run_testbed(["fit", str(sweep), "--out", str(fit), "--bootstrap", "16", "--starts", "2", "--calibrate"]) == 0
    assert run_testbed(["fit", str(sweep), "--out", str(plain), "--bootstrap", "16", "--starts", "2"]) == 0
    rows = [{"law": "auto", "predicted": 1.0, "actual": float(np.exp(0.004 * i)), "compute_ratio": 10.0}
            for i in range(1, 11)]
    hist = tmp_path / "cases.json"
    hist.write_text(json.dumps(rows))
    capsys.readouterr()
    n = 3e7                                             # 80 tokens per parameter: 100x the largest fitted C
    argv = ["predict", str(fit), "--N", repr(n), "--D", repr(80 * n), "--history", str(hist)]
    assert run_testbed([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    q = 0.004 * 10 / np.log(10.0)                      # the 10th smallest of 10 scores at 90%
    assert got["history"]["q"] == pytest.approx(q) and got["history"]["n"] == 10
    assert got["history"]["lower"] == pytest.approx(got["loss"] * got["extrapolation"] ** -q, rel=1e-9)
    assert got["history"]["upper"] == pytest.approx(got["loss"] * got["extrapolation"] ** q, rel=1e-9)
    assert run_testbed(argv) == 0
    assert "history-calibrated: [" in capsys.readouterr().out
    # refused with a message: an uncalibrated fit (no C_fit to measure the distance), a lone --history-law
    assert run_testbed(["predict", str(plain), "--N", repr(n), "--D", repr(80 * n), "--history", str(hist)]) != 0
    assert "testbed fit --calibrate" in capsys.readouterr().err
    assert run_testbed(["predict", str(fit), "--N", repr(n), "--D", repr(80 * n), "--history-law", "auto"]) != 0
    assert "give --history too" in capsys.readouterr().err
