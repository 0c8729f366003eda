"""The analysis command lines: fit -> predict round trip, backtest, errors, and no torch import."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as analysis_main
from analysis.fitresult import FitResult
from testbed.cli import main as run_testbed
from tests.fake_runs import chinchilla_loss, write_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("cli") / "sweep", sizes=(1e5, 3e5, 1e6, 3e6),
                       token_mults=(5, 20, 80), noise=0.003)


@pytest.fixture(scope="module")
def fitted(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "fit.json"
    assert run_testbed(["fit", str(sweep), "--law", "chinchilla", "--out", str(out), "--bootstrap", "32",
                        "--starts", "2"]) == 0
    return out


def test_fit_writes_json_and_prints_the_parameter_table(fitted, capsys, sweep, tmp_path):
    result = FitResult.from_json(fitted)
    assert result.law == "chinchilla" and result.samples.shape == (32, 5)
    assert set(result.intervals) == {"E", "A", "B", "alpha", "beta"}
    assert result.inputs["n_runs"] == 12
    # the printed table (run again to capture it) shows each parameter's estimate, interval and bootstrap SE
    # as the written fit has them, and the fit's objective
    again = tmp_path / "f.json"
    assert run_testbed(["fit", str(sweep), "--out", str(again), "--bootstrap", "16", "--starts", "1"]) == 0
    printed = capsys.readouterr().out
    shown = FitResult.from_json(again)
    se = shown.standard_errors()
    for name, value in shown.params.items():
        lo, hi = shown.intervals[name]
        row = rf"│ {name}\s+│\s+{re.escape(f'{value:.6g}')} │\s+{re.escape(f'[{lo:.4g}, {hi:.4g}]')} │\s+{re.escape(f'{se[name]:.3g}')} │"
        assert re.search(row, printed), (name, printed)
    assert f"objective {shown.objective:.6g} (" in printed
    assert f"wrote {again}" in printed


def test_predict_json_round_trip(fitted, capsys):
    assert run_testbed(["predict", str(fitted), "--N", "1e7", "--D", "2e8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"loss", "lower", "upper", "interval"} and out["interval"] == "bootstrap"
    assert out["lower"] <= out["loss"] <= out["upper"]
    assert out["loss"] == pytest.approx(float(chinchilla_loss(1e7, 2e8)), rel=0.03)
    # at the same N and D the command prints exactly what the fit predicts
    assert out["loss"] == pytest.approx(float(FitResult.from_json(fitted).predict(N=1e7, D=2e8)[0]))


def test_predict_at_compute_derives_the_allocation(fitted, capsys):
    assert run_testbed(["predict", str(fitted), "--C", "1e18", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"loss", "lower", "upper", "interval", "N", "D"}
    assert out["lower"] <= out["loss"] <= out["upper"]
    assert out["N"] * out["D"] * 6 == pytest.approx(1e18)
    # the allocation is optimal: moving N either way at the same compute raises the predicted loss
    fit = FitResult.from_json(fitted)
    for f in (0.7, 1.4):
        n = out["N"] * f
        assert float(fit.predict(N=n, D=1e18 / (6 * n))[0]) > out["loss"]


def test_predict_needs_N_and_D_or_C(fitted, capsys):
    assert run_testbed(["predict", str(fitted), "--N", "1e7", "--json"]) == 2
    assert "give --N and --D" in capsys.readouterr().err
    assert run_testbed(["predict", str(fitted), "--N", "-1", "--D", "1e9"]) == 2
    assert "--N must be a positive number" in capsys.readouterr().err
    assert run_testbed(["predict", str(fitted.parent / "missing.json"), "--N", "1", "--D", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fit_on_a_mapped_csv_and_backtest_json(tmp_path, capsys):
    n = [1e6, 1e6, 3e6, 3e6, 1e7, 1e7, 3e7, 3e7]
    d = [2e7, 8e7, 6e7, 2.4e8, 2e8, 8e8, 6e8, 2.4e9]
    csv = tmp_path / "pub.csv"
    pd.DataFrame({"Model Size": n, "Training FLOP": [6 * a * b for a, b in zip(n, d)],
                  "loss": chinchilla_loss(n, d)}).to_csv(csv, index=False)
    cols = 'N="Model Size",C="Training FLOP",loss=loss'
    assert run_testbed(["fit", str(csv), "--columns", cols, "--out", str(tmp_path / "f.json"), "--starts", "2"]) == 0
    assert FitResult.from_json(tmp_path / "f.json").params["alpha"] == pytest.approx(0.32, abs=0.03)
    capsys.readouterr()
    assert analysis_main(["backtest", str(csv), "--columns", cols, "--bootstrap", "0", "--starts", "1",
                         "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["law"] == "chinchilla" and res["summary"]["n_holdout_runs"] == 2
    assert res["summary"]["max_abs_rel_err"] < 0.01  # noiseless data from the law itself


@pytest.mark.parametrize("argv, message", [
    (["fit", "{sweep}", "--law", "nope"], "unknown law 'nope'"),
    (["fit", "{csv}", "--columns", "N=params,C=flops,loss=loss"], "['params', 'flops'] not found"),
    (["fit", "{missing}"], "does not exist"),
    (["backtest", "{sweep}", "--laws", "chinchilla,nope"], "unknown law 'nope'"),
    (["report", "{sweep}", "--laws", "nope"], "unknown law 'nope'"),
    (["fit", "{sweep}", "--min-tokens", "1e30"], "leave no rows"),
    (["fit", "{sweep}", "--min-tokens-per-param", "-1"], "non-negative"),
])
def test_errors_exit_2_with_one_line(argv, message, sweep, tmp_path, capsys):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"Model Size": [1e6], "loss": [3.0]}).to_csv(csv, index=False)
    args = [a.format(sweep=sweep, csv=csv, missing=tmp_path / "missing") for a in argv]
    assert run_testbed(args + ["--out", str(tmp_path / "never.json")] if argv[0] == "fit" else args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "never.json").exists()


def test_python_dash_m_analysis_runs_and_imports_no_torch(fitted):
    # one fresh interpreter: import every analysis module, check torch stayed out, then run
    # `python -m analysis predict ...` through runpy (what -m does) in the same process
    code = ("import analysis.load, analysis.fitting, analysis.backtest, analysis.plots, analysis.report, "
            "analysis.cli, runpy, sys\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            f"sys.argv = ['analysis', 'predict', {str(fitted)!r}, '--N', '1e6', '--D', '1e8', '--json']\n"
            "runpy.run_module('analysis', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == {"loss", "lower", "upper", "interval"}


def test_row_filters_keep_what_they_say():
    from analysis.load import filter_rows
    t = pd.DataFrame({"N": [1e6, 1e6, 2e6, 2e6], "D": [1e6, 4e7, 4e6, 8e7], "loss": [4.0, 3.0, 3.5, 2.8]})
    assert filter_rows(t) is t
    assert filter_rows(t, min_tokens=4e6)["D"].tolist() == [4e7, 4e6, 8e7]
    assert filter_rows(t, min_tokens_per_param=10)["D"].tolist() == [4e7, 8e7]
    with pytest.raises(ValueError, match="--min-tokens-per-param needs column"):
        filter_rows(t.drop(columns="N"), min_tokens_per_param=1)


def test_calibrated_fit_widens_the_interval_with_extrapolation(sweep, fitted, tmp_path, capsys):
    out = tmp_path / "cal.json"
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--bootstrap", "32", "--starts", "2",
                        "--calibrate"]) == 0
    printed = capsys.readouterr().out
    assert "extrapolation error from" in printed
    err = FitResult.from_json(out).extrapolation
    # the user is told which quantile spans the interval: the sweep's sizes less one degrees of freedom
    assert f"interval quantile Student-t, {err.dof:g} degrees of freedom" in printed
    assert err.n_forecasts >= 1 and err.C_fit == pytest.approx(6 * 3e6 * 3e6 * 80, rel=1e-4)
    widths = []
    for n in (3e6, 3e7, 3e8):                      # 80 tokens per parameter: 1x, 100x, 10,000x C_fit
        assert run_testbed(["predict", str(out), "--N", repr(n), "--D", repr(80 * n), "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["interval"] == "calibrated" and got["lower"] < got["loss"] < got["upper"]
        assert got["extrapolation"] == pytest.approx(max(1.0, (n / 3e6) ** 2), rel=1e-4)
        widths.append(np.log(got["upper"] / got["lower"]))
        # the point forecast is the fit's own; only the interval changes
        assert run_testbed(["predict", str(fitted), "--N", repr(n), "--D", repr(80 * n), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(got["loss"], rel=1e-9)
    assert widths[0] <= widths[1] <= widths[2]


def test_predict_a_planned_run_from_its_config(sweep, tmp_path, capsys):
    from models.counting import param_counts
    from train.config import RunConfig

    fit_path = tmp_path / "cal.json"
    assert run_testbed(["fit", str(sweep), "--out", str(fit_path), "--bootstrap", "32", "--starts", "2",
                        "--calibrate"]) == 0
    capsys.readouterr()
    cfg_path = tmp_path / "target.json"
    cfg_path.write_text(json.dumps(RunConfig().to_dict()))
    argv = ["predict", str(fit_path), "--run", str(cfg_path), "model.width=512", "model.depth=8",
            "train.tokens=4096000000", "train.batch_tokens=4096000", "--json"]
    assert run_testbed(argv) == 0
    out = json.loads(capsys.readouterr().out)
    cfg = RunConfig().with_overrides({"model.width": 512, "model.depth": 8, "train.tokens": 4096000000,
                                      "train.batch_tokens": 4096000}).resolved()
    fit = FitResult.from_json(fit_path)
    n = param_counts(cfg.model)["total"]            # chinchilla's N convention
    assert out["N"] == n and out["D"] == 4096000000
    assert out["loss"] == pytest.approx(float(fit.predict(N=n, D=4096000000)[0]), rel=1e-12)
    assert out["interval"] == "calibrated" and out["lower"] < out["loss"] < out["upper"]
    curve = out["curve"]
    assert curve["steps"][-1] == cfg.steps and curve["loss"][-1] == out["loss"]
    d_min = fit.inputs["ranges"]["D"][0]
    for t, p, lo, hi in zip(curve["tokens"], curve["loss"], curve["lower"], curve["upper"]):
        assert (p is None) == (t < d_min)               # no forecast before the fewest tokens fitted
        assert p is None or lo <= p <= hi
    # the JSON keeps what the interval is made of; they compose its sigma
    assert np.sqrt(sum(v ** 2 for v in out["sigma_parts"].values())) == pytest.approx(out["sigma"], rel=1e-12)
    # the table form prints the final loss and those parts; a run forecast with --N is refused
    assert run_testbed(argv[:-1]) == 0
    printed = capsys.readouterr().out
    assert "final loss" in printed and f"interval sigma {out['sigma']:.2%} of the loss: " in printed
    assert run_testbed(["predict", str(fit_path), "--run", str(cfg_path), "--N", "1e9"]) == 2
    assert "without --N/--D/--C" in capsys.readouterr().err
    assert run_testbed(["predict", str(fit_path), "model.width=512"]) == 2
    assert "need --run CONFIG" in capsys.readouterr().err


def test_predict_with_a_schedule_law_asks_for_the_run(sweep, tmp_path, capsys):
    fit_path = tmp_path / "ks.json"
    assert run_testbed(["fit", str(sweep), "--law", "kaplan-schedule", "--select", "all", "--out", str(fit_path),
                        "--starts", "1"]) == 0
    capsys.readouterr()
    assert run_testbed(["predict", str(fit_path), "--N", "1e7", "--D", "2e8"]) == 2
    err = capsys.readouterr().err
    assert "use --run CONFIG" in err and len(err.strip().splitlines()) == 1
